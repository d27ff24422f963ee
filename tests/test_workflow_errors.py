"""Errors a user can cause in training and evaluation end the real command with one line naming the file.

Four cases run ``python -m monai.bundle run training|evaluating`` in a subprocess, as a user would, and check the exit
status, the single ``ERROR:`` line on stderr and that no traceback was printed anywhere; the others run the workflow in
this process (a subprocess costs about 10 s of MONAI imports) and check the user error its exception chain carries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from scripts.errors import InvalidInputError, MissingInputError, input_error_in, one_line
from scripts.networks import bundle_network

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"
TRAIN = [CONFIGS / "train.json"]
EVALUATE = [CONFIGS / "train.json", CONFIGS / "evaluate.json"]
TINY = {"spatial_size": [32, 32, 8], "network_preset": "tiny", "num_workers": 0, "epochs": 1}


def run_bundle(run_id: str, config_files: list[Path], cwd: Path, **overrides: object) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run <run_id>`` with ``overrides`` as ``--key value``, one thread, in ``cwd``."""
    config = str(config_files[0]) if len(config_files) == 1 else str([str(path) for path in config_files])
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config]
    command += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    overrides = {"bundle_root": str(BUNDLE_ROOT), **overrides}
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("MEMWARP_TRACEBACK", None)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``ERROR:`` line of a failed run; fails the test on a zero exit status or any traceback."""
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode != 0, output
    assert "Traceback" not in result.stdout + result.stderr, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, output
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


def test_training_on_a_missing_dataset_folder(tmp_path: Path) -> None:
    missing = tmp_path / "ACDC" / "database"
    line = error_line(run_bundle("training", TRAIN, tmp_path, dataset_dir=str(missing), run_dir=str(tmp_path / "run")))
    assert line == f"ERROR: {missing}: dataset directory not found"
    assert not (tmp_path / "run").exists()


def placeholder_test_patient(root: Path) -> Path:
    """``root/testing/patient101`` in the ACDC layout with empty image and label files (listing a data set never
    opens them)."""
    patient = root / "testing" / "patient101"
    patient.mkdir(parents=True)
    (patient / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\nNbFrame: 30\n")
    for name in ("frame01", "frame12", "frame01_gt", "frame12_gt"):
        (patient / f"patient101_{name}.nii.gz").touch()
    return patient


def user_error_of_training(tmp_path: Path, **overrides: object) -> str:
    """Run configs/train.json in this process; the one-line report of the user error that stops it."""
    workflow = ConfigWorkflow(
        workflow_type="train",
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        bundle_root=str(BUNDLE_ROOT),
        run_dir=str(tmp_path / "run"),
        **TINY,
        **overrides,
    )
    workflow.initialize()
    with pytest.raises(Exception) as caught:
        workflow.run()
    cause = input_error_in(caught.value)
    assert cause is not None, f"not a user error: {caught.value!r}"
    assert not (tmp_path / "run").exists()
    return one_line(cause)


def test_training_on_an_empty_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = user_error_of_training(tmp_path, dataset_dir=str(tmp_path / "empty"))
    assert message.startswith(f"{tmp_path / 'empty'}: no patient folders")


def test_training_with_a_datalist_that_is_not_json(tmp_path: Path) -> None:
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"training": [')
    assert user_error_of_training(tmp_path, datalist=str(datalist)).startswith(f"{datalist}: not a JSON datalist")


def test_training_with_too_few_patients_outside_the_test_set(tmp_path: Path) -> None:
    placeholder_test_patient(tmp_path)
    message = user_error_of_training(tmp_path, dataset_dir=str(tmp_path))
    assert message == (
        f"{tmp_path}: no training pairs (0 patient(s) outside the reference test set (101-150); training needs at "
        "least 2, one to train on and one to validate); add patients or pass --datalist with a 'training' section"
    )


def test_training_refuses_to_overwrite_the_shipped_weights(tmp_path: Path) -> None:
    # a copy of the bundle (the real one is never put at risk): shipped weights, large_files.yml, the code linked
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(b"shipped weights")
    shutil.copy(BUNDLE_ROOT / "large_files.yml", bundle)
    (bundle / "scripts").symlink_to(BUNDLE_ROOT / "scripts")
    result = run_bundle(
        "training", TRAIN, bundle, bundle_root=str(bundle), ckpt_dir=str(bundle / "models"), dataset_dir=str(bundle)
    )
    line = error_line(result)
    assert line.startswith(f"ERROR: {bundle / 'models' / 'model.pt'}: refusing to overwrite a file shipped with")
    assert "--overwrite_shipped_weights true" in line
    assert (bundle / "models" / "model.pt").read_bytes() == b"shipped weights"
    assert sorted(path.name for path in (bundle / "models").iterdir()) == ["model.pt"]


def test_evaluation_without_the_checkpoint(tmp_path: Path) -> None:
    placeholder_test_patient(tmp_path)
    missing = tmp_path / "runs" / "memwarp" / "models" / "model.pt"
    overrides = {"dataset_dir": str(tmp_path / "testing"), "ckpt_path": str(missing), "output_dir": "out"}
    line = error_line(run_bundle("evaluating", EVALUATE, tmp_path, **overrides, **TINY))
    assert line.startswith(f"ERROR: {missing}: checkpoint not found")
    assert not (tmp_path / "out").exists()


def test_evaluation_of_a_data_set_holding_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    patient = placeholder_test_patient(tmp_path)
    torch.save(bundle_network("memwarp", "tiny").state_dict(), tmp_path / "model.pt")
    # two loader processes: the error crosses torch's worker boundary, which wraps its message in a traceback
    overrides = {"dataset_dir": str(tmp_path / "testing"), "ckpt_path": str(tmp_path / "model.pt"), "num_workers": 2}
    line = error_line(run_bundle("evaluating", EVALUATE, tmp_path, **{**TINY, **overrides}))
    assert line.startswith(f"ERROR: {patient / 'patient101_frame'}") and ".nii.gz: " in line
    assert "install" not in line  # not MONAI's advice to install reader libraries


def test_one_line_takes_the_message_out_of_a_data_loader_worker_report() -> None:
    wrapped = InvalidInputError(
        "Caught InvalidInputError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in load\nscripts.errors.InvalidInputError: /data/a.nii.gz: cannot be read\n'
    )
    assert one_line(wrapped) == "/data/a.nii.gz: cannot be read"
    assert one_line(MissingInputError("/data/b.nii.gz: not found")) == "/data/b.nii.gz: not found"


def test_input_error_in_finds_the_user_error_under_runtime_errors() -> None:
    cause = MissingInputError("/data/x.nii.gz: not found")
    try:
        try:
            raise cause
        except MissingInputError as error:
            raise RuntimeError("applying transform") from error
    except RuntimeError as wrapped:
        assert input_error_in(RuntimeError("Failed to instantiate").with_traceback(None)) is None
        assert input_error_in(wrapped) is cause
