"""MONAI bundle tooling on this bundle: verify_metadata (offline), verify_net_in_out and a traced TorchScript export
that loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.networks import bundle_network

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = BUNDLE_ROOT / "tests" / "schemas" / "meta_schema_20240725.json"
# The bundle's inference network_def, built with the tiny preset so the tooling runs in seconds.
TINY_INFERENCE_NETWORK = (
    "--meta_file",
    "configs/metadata.json",
    "--config_file",
    "configs/inference.json",
    "--network_preset",
    "tiny",
)


def _bundle_command(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", *arguments]
    return subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=300)


def _verify_metadata_offline(meta_file: Path, folder: Path) -> subprocess.CompletedProcess:
    """verify_metadata downloads the schema to --filepath unless that file exists, so a local copy keeps it offline."""
    schema = shutil.copyfile(SCHEMA, folder / SCHEMA.name)
    return _bundle_command("verify_metadata", "--meta_file", str(meta_file), "--filepath", str(schema))


def test_verify_metadata_passes_offline_with_a_local_schema(tmp_path: Path) -> None:
    result = _verify_metadata_offline(BUNDLE_ROOT / "configs" / "metadata.json", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped downloading" in result.stdout + result.stderr
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_verify_metadata_fails_without_a_required_field(tmp_path: Path) -> None:
    metadata = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    del metadata["task"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(metadata, indent=4))
    result = _verify_metadata_offline(broken, tmp_path)
    assert result.returncode != 0
    assert "'task' is a required property" in result.stderr


def test_verify_net_in_out_accepts_the_network_def() -> None:
    result = _bundle_command(
        "verify_net_in_out",
        "network_def",
        *TINY_INFERENCE_NETWORK,
        "-n",
        "2",
        "--any",
        "4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ckpt_export_with_trace_produces_a_loadable_model_ts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = bundle_network("memwarp", "tiny").eval()
    checkpoint = tmp_path / "model.pt"
    torch.save(network.state_dict(), checkpoint)
    exported = tmp_path / "model.ts"
    result = _bundle_command(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(exported),
        "--ckpt_file",
        str(checkpoint),
        *TINY_INFERENCE_NETWORK,
        "--use_trace",
        "True",
        "--input_shape",
        "[1, 2, 32, 32, 4]",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = torch.jit.load(str(exported), map_location="cpu")
    pair = torch.rand(1, 2, 32, 32, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(pair), network(pair), atol=1e-5)
