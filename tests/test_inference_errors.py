"""Bad inputs stop the inference run before anything is written, with a message naming the file.

Most cases run the bundle's workflow in this process (the exception chain is inspected); two run the real command
to check the exit status and the one-line message on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from scripts.errors import InvalidInputError, input_error_in, one_line
from scripts.networks import bundle_network
from tests.inference_helpers import BUNDLE_ROOT, blob_image, files_under, run_bundle, save_nifti, scanner_affine

SHAPE = (64, 72, 8)


@pytest.fixture()
def pair(tmp_path: Path) -> dict[str, Path]:
    """A valid moving/fixed pair (rotated, anisotropic grid) in ``tmp_path/inputs``."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    affine = scanner_affine(SHAPE)
    return {
        "moving": save_nifti(blob_image(affine, SHAPE, (3.0, 0.0, 0.0)), affine, folder / "moving.nii.gz"),
        "fixed": save_nifti(blob_image(affine, SHAPE), affine, folder / "fixed.nii.gz"),
        "affine": affine,
    }


def datalist(tmp_path: Path, **record: Path) -> Path:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{k: str(v) for k, v in record.items()}]))
    return path


def run_in_process(**overrides) -> None:
    workflow = ConfigWorkflow(
        workflow_type="infer",
        config_file=str(BUNDLE_ROOT / "configs/inference.json"),
        meta_file=str(BUNDLE_ROOT / "configs/metadata.json"),
        logging_file=False,
        bundle_root=str(BUNDLE_ROOT),
        **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def assert_refused(named: Path, output: Path, **overrides) -> str:
    """Run, expect an input error whose message names ``named``, and no file under ``output``."""
    before = files_under(output)
    with pytest.raises(Exception) as caught:
        run_in_process(output_dir=output, **overrides)
    cause = input_error_in(caught.value)
    assert cause is not None, f"not an input error: {caught.value!r}"
    assert str(named) in str(cause), str(cause)
    assert files_under(output) == before
    return str(cause)


def test_missing_image_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    missing = tmp_path / "inputs" / "absent.nii.gz"
    listing = datalist(tmp_path, moving=missing, fixed=pair["fixed"])
    message = assert_refused(missing, tmp_path / "out", datalist=listing, ckpt_path=compact_checkpoint)
    assert "not found" in message


def test_unreadable_image_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    garbage = tmp_path / "inputs" / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI file")
    listing = datalist(tmp_path, moving=pair["moving"], fixed=garbage)
    assert "cannot be read" in assert_refused(garbage, tmp_path / "out", datalist=listing, ckpt_path=compact_checkpoint)


def test_two_dimensional_image_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    flat = save_nifti(np.random.rand(64, 72).astype(np.float32), np.eye(4), tmp_path / "inputs" / "flat.nii.gz")
    listing = datalist(tmp_path, moving=flat, fixed=pair["fixed"])
    assert "2D" in assert_refused(flat, tmp_path / "out", datalist=listing, ckpt_path=compact_checkpoint)


def test_four_dimensional_cine_without_frame_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    cine = np.stack([blob_image(pair["affine"], SHAPE)] * 5, axis=-1)
    cine_path = save_nifti(cine, pair["affine"], tmp_path / "inputs" / "cine_4d.nii.gz")
    listing = datalist(tmp_path, moving=cine_path, fixed=pair["fixed"])
    assert "frame index" in assert_refused(cine_path, tmp_path / "out", datalist=listing, ckpt_path=compact_checkpoint)


def test_cine_folder_without_info_cfg_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    patient = tmp_path / "inputs" / "patient007"
    patient.mkdir()
    cine = np.stack([blob_image(pair["affine"], SHAPE)] * 5, axis=-1)
    save_nifti(cine, pair["affine"], patient / "patient007_4d.nii.gz")
    message = assert_refused(patient, tmp_path / "out", dataset_dir=patient, ckpt_path=compact_checkpoint)
    assert "Info.cfg" in message


def test_image_with_nans_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    values = blob_image(pair["affine"], SHAPE)
    values[10, 10, 2] = np.nan
    broken = save_nifti(values, pair["affine"], tmp_path / "inputs" / "nan.nii.gz")
    listing = datalist(tmp_path, moving=broken, fixed=pair["fixed"])
    assert "NaN" in assert_refused(broken, tmp_path / "out", datalist=listing, ckpt_path=compact_checkpoint)


def test_images_that_do_not_overlap_in_world_space_are_refused(
    tmp_path: Path, pair: dict, compact_checkpoint: Path
) -> None:
    far = pair["affine"].copy()
    far[:3, 3] += (0.0, 0.0, 1000.0)  # one metre away
    elsewhere = save_nifti(blob_image(far, SHAPE), far, tmp_path / "inputs" / "elsewhere.nii.gz")
    listing = datalist(tmp_path, moving=elsewhere, fixed=pair["fixed"])
    message = assert_refused(elsewhere, tmp_path / "out", datalist=listing, ckpt_path=compact_checkpoint)
    assert "overlap" in message


def test_missing_checkpoint_is_refused(tmp_path: Path, pair: dict) -> None:
    missing = tmp_path / "nowhere" / "model.pt"
    listing = datalist(tmp_path, moving=pair["moving"], fixed=pair["fixed"])
    assert "not found" in assert_refused(missing, tmp_path / "out", datalist=listing, ckpt_path=missing)


def test_checkpoint_of_another_network_is_refused(tmp_path: Path, pair: dict) -> None:
    other = tmp_path / "tiny.pt"
    torch.save(bundle_network("memwarp", "tiny").state_dict(), other)
    listing = datalist(tmp_path, moving=pair["moving"], fixed=pair["fixed"])
    assert "network_preset" in assert_refused(other, tmp_path / "out", datalist=listing, ckpt_path=other)


def test_checkpoint_card_naming_another_preset_is_refused_before_the_weights_are_read(
    tmp_path: Path, pair: dict
) -> None:
    # inference loads weights like training and evaluation: the card beside model.pt is compared with the
    # configured architecture/preset first (the weights file itself is not even a checkpoint here)
    weights = tmp_path / "weights" / "model.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"not read")
    card = {"architecture": "memwarp", "network_preset": "paper", "spatial_size": [128, 128, 16]}
    (weights.parent / "model.json").write_text(json.dumps(card))
    listing = datalist(tmp_path, moving=pair["moving"], fixed=pair["fixed"])
    message = assert_refused(weights.parent / "model.json", tmp_path / "out", datalist=listing, ckpt_path=weights)
    assert "memwarp/paper" in message and "memwarp/compact" in message and "--network_preset paper" in message


def test_output_dir_holding_the_inputs_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    listing = datalist(tmp_path, moving=pair["moving"], fixed=pair["fixed"])
    for output in (tmp_path / "inputs", tmp_path):  # equal to, then containing, the inputs' folder
        message = assert_refused(output, output, datalist=listing, ckpt_path=compact_checkpoint)
        assert "refusing" in message


def test_earlier_output_used_as_input_is_refused(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    output = tmp_path / "out"
    previous = output / "moving_to_fixed"
    previous.mkdir(parents=True)
    reused = previous / "warped_moving.nii.gz"
    reused.write_bytes(pair["moving"].read_bytes())
    listing = datalist(tmp_path, moving=reused, fixed=pair["fixed"])
    assert_refused(reused, output, datalist=listing, ckpt_path=compact_checkpoint)
    assert reused.read_bytes() == pair["moving"].read_bytes()


def test_command_line_reports_a_corrupt_checkpoint_in_one_line(tmp_path: Path, pair: dict) -> None:
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    listing = datalist(tmp_path, moving=pair["moving"], fixed=pair["fixed"])
    output = tmp_path / "out"
    result = run_bundle("--datalist", str(listing), "--ckpt_path", str(corrupt), "--output_dir", str(output))
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ERROR: ") and str(corrupt) in last_line, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_command_line_refuses_to_write_into_the_dataset(tmp_path: Path, compact_checkpoint: Path) -> None:
    from scripts.phantom import write_sample

    dataset = tmp_path / "sample"
    patient = write_sample(dataset)
    before = files_under(dataset)
    result = run_bundle(
        "--dataset_dir", str(dataset), "--ckpt_path", str(compact_checkpoint), "--output_dir", str(patient)
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"ERROR: {patient}: refusing"), result.stderr[-2000:]
    assert files_under(dataset) == before
    assert nib.load(str(before[1])).shape  # the inputs are intact


def test_command_line_reports_an_empty_file_in_one_line(tmp_path: Path, pair: dict, compact_checkpoint: Path) -> None:
    empty = tmp_path / "inputs" / "empty.nii.gz"
    empty.write_bytes(b"")
    output = tmp_path / "out"
    result = run_bundle(
        "--moving", str(empty), "--fixed", str(pair["fixed"]), "--ckpt_path", str(compact_checkpoint),
        "--output_dir", str(output), env={"PYTHONWARNINGS": "ignore::UserWarning"},
    )  # fmt: skip
    assert result.returncode != 0
    # MONAI's own warnings (config parsing, grid_sample) are silenced: how Python prints them depends on what is
    # installed (ITK replaces the format); the log lines start with the date
    reported = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("20", "> "))]
    assert reported == [f"ERROR: {empty}: empty file (0 bytes), not a NIfTI image (record key 'moving')"], result.stderr
    assert not output.exists()


@pytest.mark.parametrize("content", [b"this is text, not a NIfTI image", b"\x1f\x8b\x08\x00" + b"\x00" * 20])
def test_a_non_nifti_file_is_refused_in_one_line(
    tmp_path: Path, pair: dict, compact_checkpoint: Path, content: bytes
) -> None:
    bad = tmp_path / "inputs" / "bad.nii.gz"
    bad.write_bytes(content)
    message = assert_refused(bad, tmp_path / "out", moving=bad, fixed=pair["fixed"], ckpt_path=compact_checkpoint)
    assert message.startswith(f"{bad}: cannot be read as a NIfTI image (") and "\n" not in message


def test_a_truncated_image_is_refused_in_one_line_when_read(
    tmp_path: Path, pair: dict, compact_checkpoint: Path
) -> None:
    truncated = tmp_path / "inputs" / "truncated.nii.gz"
    truncated.write_bytes(pair["moving"].read_bytes()[:2000])  # the header is intact, the voxels are cut off
    message = assert_refused(
        truncated, tmp_path / "out", moving=truncated, fixed=pair["fixed"], ckpt_path=compact_checkpoint
    )
    # the file is read in a dataloader worker: the report keeps the original message, on one line
    assert one_line(InvalidInputError(message)).startswith(f"{truncated}: cannot be read as an image (")
    assert "install the reader" not in message
