"""Checkpoints of training runs: the guard of the shipped weights, the checkpoint card, loading weights before a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine

from scripts.checkpoint_card import card_path, check_card, file_sha256
from scripts.checkpoint_card import main as checkpoint_card_main
from scripts.checkpoint_card import read_card, write_card
from scripts.engine import (
    BestModelSaver,
    TrainingStateLoader,
    TrainingStateSaver,
    WeightsLoader,
    refuse_shipped_files,
    shipped_files,
)
from scripts.errors import CheckpointError, InvalidInputError, MissingInputError, OutputCollisionError
from scripts.inference.checkpoint import load_network_weights
from scripts.networks import bundle_network

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
GRID = {"spatial_size": [32, 32, 8], "pixdim": [1.8, 1.8, 10.0]}


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """A bundle folder with shipped weights and a large_files.yml that also lists ``models/extra_weights.bin``."""
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").write_bytes(b"shipped")
    (root / "large_files.yml").write_text(
        'large_files:\n  - path: "models/model.pt"\n    url: ""\n  - path: "models/extra_weights.bin"\n    url: ""\n'
    )
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state dict of a tiny MemWarp, saved as ``model.pt`` (no card)."""
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.manual_seed(0)
    torch.save(bundle_network("memwarp", "tiny").state_dict(), path)
    return path


def test_shipped_files_are_the_model_files_and_every_large_file(bundle: Path) -> None:
    names = {path.relative_to(bundle.resolve()).as_posix() for path in shipped_files(bundle)}
    assert names == {"models/model.pt", "models/model.ts", "models/model.json", "models/extra_weights.bin"}


def test_the_bundles_own_large_files_are_shipped() -> None:
    assert {BUNDLE_ROOT / "models" / "model.pt", BUNDLE_ROOT / "models" / "model.ts"} <= shipped_files(BUNDLE_ROOT)


def test_savers_refuse_a_shipped_file_when_they_are_built(bundle: Path) -> None:
    network = torch.nn.Linear(1, 1)
    with pytest.raises(OutputCollisionError, match=r"model.pt: refusing to overwrite a file shipped with the bundle"):
        BestModelSaver(bundle / "models", network, "val_mean_dice", bundle_root=bundle)
    with pytest.raises(OutputCollisionError, match=r"extra_weights.bin: refusing"):
        TrainingStateSaver(bundle / "models", {"model": network}, filename="extra_weights.bin", bundle_root=bundle)
    # the run's own folder, and the training state next to the shipped weights, are fine
    BestModelSaver(bundle / "runs" / "memwarp" / "models", network, "val_mean_dice", bundle_root=bundle)
    TrainingStateSaver(bundle / "models", {"model": network}, bundle_root=bundle)
    assert (bundle / "models" / "model.pt").read_bytes() == b"shipped"


@pytest.mark.parametrize("overwrite", [True, "true", "True", "1", "yes"])
def test_overwriting_the_shipped_weights_is_an_explicit_choice(bundle: Path, overwrite: object) -> None:
    refuse_shipped_files([bundle / "models" / "model.pt"], bundle, overwrite)
    BestModelSaver(
        bundle / "models",
        torch.nn.Linear(1, 1),
        "val_mean_dice",
        bundle_root=bundle,
        overwrite_shipped_weights=overwrite,
    )


def test_an_unclear_overwrite_flag_is_an_error(bundle: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"--overwrite_shipped_weights 'maybe': expected true or false"):
        refuse_shipped_files([bundle / "models" / "model.pt"], bundle, "maybe")


def test_best_model_saver_writes_the_card_beside_the_weights(tmp_path: Path) -> None:
    network = bundle_network("memwarp", "tiny")
    saver = BestModelSaver(
        tmp_path, network, "val_mean_dice", card={"architecture": "memwarp", "network_preset": "tiny", **GRID}
    )
    engine = SimpleNamespace(state=SimpleNamespace(metrics={"val_mean_dice": 0.75}, epoch=3))
    saver(engine)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["epoch"] == 3 and card["metric"] == 0.75 and card["metric_name"] == "val_mean_dice"
    assert (card["architecture"], card["network_preset"], card["spatial_size"]) == ("memwarp", "tiny", [32, 32, 8])
    assert read_card(tmp_path / "model.pt") == card
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.pt"]  # atomic: no temporaries


def test_a_card_of_other_weights_is_not_used(tiny_weights: Path, tmp_path: Path) -> None:
    weights = shutil.copy(tiny_weights, tmp_path / "model.pt")
    write_card(weights, "memwarp", "tiny", **GRID)
    torch.save({"other": torch.zeros(1)}, weights)  # replaced without its card
    assert read_card(weights) is None
    assert check_card(weights, {"architecture": "lapwarp", "network_preset": "paper"}) is None


def test_loader_names_both_presets_when_the_card_differs(tiny_weights: Path, tmp_path: Path) -> None:
    weights = shutil.copy(tiny_weights, tmp_path / "model.pt")
    write_card(weights, "memwarp", "tiny", **GRID)
    network = bundle_network("memwarp", "compact")
    with pytest.raises(CheckpointError) as caught:
        load_network_weights(network, weights, architecture="memwarp", network_preset="compact")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'model.json'}: the weights model.pt are memwarp/tiny")
    assert "the configuration builds memwarp/compact" in message and "\n" not in message
    record = load_network_weights(
        bundle_network("memwarp", "tiny"), weights, architecture="memwarp", network_preset="tiny"
    )
    assert record.path == str(weights)


def test_weights_loader_loads_the_weights_when_the_engine_starts(tiny_weights: Path) -> None:
    network = bundle_network("memwarp", "tiny")
    loader = WeightsLoader(tiny_weights, network, "memwarp", "tiny")
    engine = Engine(lambda engine, batch: None)
    loader.attach(engine)
    expected = torch.load(tiny_weights, weights_only=True)
    assert not all(torch.equal(value, expected[name]) for name, value in network.state_dict().items())
    engine.run([0], max_epochs=1)
    assert all(torch.equal(value, expected[name]) for name, value in network.state_dict().items())
    assert loader.record.sha256 == file_sha256(tiny_weights)


def test_resuming_without_a_training_state_names_the_file(tmp_path: Path) -> None:
    loader = TrainingStateLoader(tmp_path / "last.pt", {"model": torch.nn.Linear(1, 1)})
    engine = Engine(lambda engine, batch: None)
    loader.attach(engine)
    with pytest.raises(MissingInputError, match=rf"{tmp_path / 'last.pt'}: no training state to resume from"):
        engine.run([0], max_epochs=1)


def test_card_command_writes_the_card_of_existing_weights(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    weights = shutil.copy(tiny_weights, tmp_path / "model.pt")
    arguments = [str(weights), "--network_preset", "tiny", "--bundle_root", str(BUNDLE_ROOT), "--epoch", "28"]
    assert checkpoint_card_main(arguments + ["--spatial_size", "32", "32", "8"]) == 0
    card = json.loads(card_path(weights).read_text())
    assert card["network_preset"] == "tiny" and card["epoch"] == 28 and card["spatial_size"] == [32, 32, 8]
    assert card["bundle_version"] == json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())["version"]
    assert f"wrote {card_path(weights)}" in capsys.readouterr().out


def test_card_command_refuses_weights_of_another_network(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    weights = shutil.copy(tiny_weights, tmp_path / "model.pt")
    assert checkpoint_card_main([str(weights), "--network_preset", "compact"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ERROR: {weights}: weights do not fit the configured network") and error.count("\n") == 1
    assert not card_path(weights).exists()


def test_download_large_files_verifies_the_shipped_weights_offline(tmp_path: Path) -> None:
    # needs PyYAML (requirements.txt); the files are present, so nothing is downloaded, only their sha256 checked
    shutil.copytree(BUNDLE_ROOT / "models", tmp_path / "models", ignore=shutil.ignore_patterns("last.pt", "*.tmp"))
    shutil.copy(BUNDLE_ROOT / "large_files.yml", tmp_path)
    command = [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(tmp_path)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("Verified") == 2, result.stdout[-2000:]
