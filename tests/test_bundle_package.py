"""The zip the model zoo distributes (``python -m scripts.package``): its contents, its bytes, and a bundle that
``python -m monai.bundle download --url`` can fetch and run inference from."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.inference.summary import OUTPUT_DESCRIPTIONS
from scripts.package import BUNDLE_NAME, REQUIRED_FILES, main, write_bundle_zip
from tests.inference_helpers import (
    BUNDLE_ROOT,
    SAMPLE_PAIR_DICE_AFTER_MIN,
    SAMPLE_PAIR_DICE_BEFORE,
    assert_succeeded,
    files_under,
    run_bundle,
)

SAMPLE_FILES = [
    f"sample_data/patient001/patient001_frame{frame}{suffix}.nii.gz" for frame in ("01", "05") for suffix in ("", "_gt")
]


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle_zip(BUNDLE_ROOT, tmp_path_factory.mktemp("dist") / f"{BUNDLE_NAME}.zip")


def _members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_every_member_sits_in_the_bundle_folder(bundle_zip: Path) -> None:
    members = _members(bundle_zip)
    assert members and all(name.startswith(f"{BUNDLE_NAME}/") for name in members)
    assert members == sorted(members)


def test_required_files_configs_and_sample_pair_are_packed(bundle_zip: Path) -> None:
    members = {name.removeprefix(f"{BUNDLE_NAME}/") for name in _members(bundle_zip)}
    configs = {path.relative_to(BUNDLE_ROOT).as_posix() for path in (BUNDLE_ROOT / "configs").rglob("*.json")}
    assert set(REQUIRED_FILES) | configs | set(SAMPLE_FILES) <= members
    assert "configs/variants/paper.json" in members and "scripts/package.py" in members


def test_tests_ci_caches_and_outputs_are_left_out(bundle_zip: Path) -> None:
    members = {name.removeprefix(f"{BUNDLE_NAME}/") for name in _members(bundle_zip)}
    top_level = {name.split("/")[0] for name in members}
    assert top_level == {"configs", "scripts", "models", "docs", "sample_data", "LICENSE", "large_files.yml"}
    unwanted = [name for name in members if name.endswith(".pyc") or "__pycache__" in name or "/." in f"/{name}"]
    assert not unwanted  # no caches, compiled Python or hidden files
    assert {name for name in members if name.startswith("models/")} == {
        "models/model.pt",
        "models/model.json",
        "models/model.ts",
    }


def test_building_twice_gives_identical_bytes(bundle_zip: Path, tmp_path: Path) -> None:
    again = write_bundle_zip(BUNDLE_ROOT, tmp_path / "again.zip")
    assert again.read_bytes() == bundle_zip.read_bytes()


def test_command_prints_path_size_and_sha256(tmp_path: Path) -> None:
    output = tmp_path / "bundle.zip"
    command = [sys.executable, "-m", "scripts.package", "--output", str(output)]
    result = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(output) in result.stdout
    assert f"{output.stat().st_size} bytes" in result.stdout
    assert hashlib.sha256(output.read_bytes()).hexdigest() in result.stdout


def test_missing_weights_fail_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bundle = tmp_path / BUNDLE_NAME
    for name in REQUIRED_FILES:
        if name != "models/model.pt":
            (bundle / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(BUNDLE_ROOT / name, bundle / name)
    output = tmp_path / "bundle.zip"
    with pytest.raises(SystemExit) as exit_info:
        main(["--bundle_root", str(bundle), "--output", str(output)])
    assert exit_info.value.code != 0
    assert "models/model.pt" in str(exit_info.value.code)
    assert not output.exists()


def test_output_inside_a_packed_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inside the bundle's configs"):
        write_bundle_zip(BUNDLE_ROOT, BUNDLE_ROOT / "configs" / "bundle.zip")
    assert not (BUNDLE_ROOT / "configs" / "bundle.zip").exists()


def test_monai_download_from_a_file_url_gives_a_bundle_that_runs_inference(bundle_zip: Path, tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundles"
    command = [sys.executable, "-m", "monai.bundle", "download", "--name", BUNDLE_NAME]
    command += ["--url", bundle_zip.as_uri(), "--bundle_dir", str(bundle_dir)]
    assert_succeeded(subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300))
    downloaded = bundle_dir / BUNDLE_NAME
    assert (downloaded / "configs" / "metadata.json").is_file()

    output = tmp_path / "out"
    assert_succeeded(run_bundle("--output_dir", str(output), cwd=downloaded))  # defaults: shipped weights, sample
    folder = output / "patient001_ED_to_ES"
    expected = {name for name in OUTPUT_DESCRIPTIONS if not name.endswith("/")} | {"summary.json"}
    assert {path.name for path in files_under(folder)} == expected
    summary = json.loads((folder / "summary.json").read_text())
    assert Path(summary["checkpoint"]["path"]).is_relative_to(downloaded)
    assert Path(summary["inputs"]["fixed"]).is_relative_to(downloaded / "sample_data")
    assert summary["metrics"]["initial_dice_mean"] == pytest.approx(SAMPLE_PAIR_DICE_BEFORE, abs=1e-3)
    assert summary["metrics"]["dice_mean"] >= SAMPLE_PAIR_DICE_AFTER_MIN
