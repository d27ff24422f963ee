"""The cine workflow (configs/cine.json, scripts.cine) and its benchmark on a small phantom cine with its truth.

The phantom (a normal heart, 8 frames) knows its motion; fed its true ED -> frame fields, the workflow's
measurement must give the true ejection fractions, volume curves, ES frame and strain within stated tolerances;
tracked with the shipped weights it should give them within the issue's targets (not met yet: a strict xfail). The
command line runs with a randomly initialised network: what is checked there is the files, their grid, the run's
summary and the error handling, not the accuracy of untrained weights.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from scripts.benchmark.cine import TRUE_FIELDS_ROW, cine_errors
from scripts.benchmark.cine import main as benchmark_main
from scripts.cine import (
    analyse_cine,
    cine_cases,
    cine_preprocessing,
    measure_cine,
    network_fields_to_world,
    read_cine,
    track_cine,
)
from scripts.cine.frames import CINE_KEY
from scripts.cine.outputs import SUMMARY_FILE
from scripts.cine.tracking import register_pairs
from scripts.cine.workflow import CineWorkflow
from scripts.data import InvalidInputError, registration_preprocessing
from scripts.errors import one_line
from scripts.geometry import read_displacement_nifti
from scripts.inference import load_network_weights
from scripts.networks import bundle_network
from scripts.networks.cpu import optimise_for_cpu, optimise_for_device
from scripts.phantom import GenerationOptions, generate_subject
from scripts.phantom.acdc_writer import write_subject
from scripts.phantom.cine_truth import cine_truth_paths, write_cine_truth

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
PATIENT = 131  # a normal heart of the test split
COPY = 132  # the same cine under another name: a second patient of the run
SHIPPED_WEIGHTS = BUNDLE_ROOT / "models" / "model.pt"
FRAMES = 8
OPTIONS = GenerationOptions(n_frames=FRAMES, max_matrix=128, n_through=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """ACDC-layout root with ``testing/patient131`` (cine, ED/ES frames and labels) and its cine truth, and
    ``testing/patient132``, a copy of it under that name."""
    root = tmp_path_factory.mktemp("cine") / "database"
    subject = generate_subject(PATIENT, 0, options=OPTIONS, cine_truth=True)
    folder = root / "testing" / subject.name
    write_subject(subject, folder)
    write_cine_truth(subject, folder)
    copy = root / "testing" / f"patient{COPY:03d}"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name.replace(subject.name, copy.name)).write_bytes(path.read_bytes())
    return root


@pytest.fixture(scope="module")
def patient(dataset) -> Path:
    return dataset / "testing" / f"patient{PATIENT:03d}"


@pytest.fixture(scope="module")
def truth(patient) -> dict:
    return json.loads(cine_truth_paths(patient, patient.name, 0)["function"].read_text())


@pytest.fixture(scope="module")
def checkpoint(compact_checkpoint) -> Path:
    """A randomly initialised default network (memwarp, compact) as a plain state dict (conftest.py)."""
    return compact_checkpoint


def shipped_network(cpu_pass: bool = True) -> nn.Module:
    """The shipped weights in the default network, with inference's CPU pass (or without), in evaluation mode."""
    network = bundle_network("memwarp", "compact")
    load_network_weights(network, str(SHIPPED_WEIGHTS), "cpu", architecture="memwarp", network_preset="compact")
    return (optimise_for_cpu(network) if cpu_pass else network).eval()


@pytest.fixture(scope="module")
def network_frames(patient) -> torch.Tensor:
    """(T, 1, 128, 128, 16) the cine's frames on the network grid."""
    network_cine = cine_preprocessing()({CINE_KEY: read_cine(cine_cases(patient)[0]).image})[CINE_KEY]
    return network_cine.as_tensor()[:, None]


def true_fields(patient: Path) -> torch.Tensor:
    paths = cine_truth_paths(patient, patient.name, FRAMES)["fields"]
    return torch.stack([torch.from_numpy(read_displacement_nifti(p)[0]).permute(3, 0, 1, 2).float() for p in paths])


def run_cine(*overrides: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file configs/cine.json <overrides>`` from the bundle root, one thread."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/cine.json"]
    command += ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf", *overrides]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BUNDLE_ROOT)}
    environment.pop("MEMWARP_TRACEBACK", None)
    return subprocess.run(command, cwd=BUNDLE_ROOT, env=environment, capture_output=True, text=True, timeout=600)


def test_each_frame_is_preprocessed_exactly_as_the_pair_preprocessing_does(patient):
    case = cine_cases(patient)[0]
    network_cine = cine_preprocessing()({CINE_KEY: read_cine(case).image})[CINE_KEY]
    pair = registration_preprocessing(with_labels=False)(
        {"moving": case.cine, "moving_frame": 0, "fixed": case.cine, "fixed_frame": 4}
    )
    assert torch.equal(network_cine[4], pair["fixed"][0].as_tensor())
    np.testing.assert_allclose(network_cine.affine, pair["fixed"].affine)


def test_network_grid_fields_come_back_on_the_cine_grid_in_world_millimetres(patient):
    case = cine_cases(patient)[0]
    loaded = read_cine(case)
    preprocessing = cine_preprocessing()
    network_cine = preprocessing({CINE_KEY: loaded.image})[CINE_KEY]
    fields = torch.zeros(FRAMES, 3, *network_cine.shape[1:])
    fields[:, 0], fields[:, 1] = 1.0, -2.0  # a translation in network voxels
    world = network_fields_to_world(fields, network_cine, preprocessing)
    assert tuple(world.shape) == (FRAMES, 3, *loaded.image.shape[1:])
    expected = np.asarray(network_cine.affine)[:3, :3] @ np.array([1.0, -2.0, 0.0])
    centre = tuple(n // 2 for n in loaded.image.shape[1:])
    np.testing.assert_allclose(world[3][(slice(None), *centre)].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["sequential", "blend"])
def test_frame_to_frame_fields_are_composed_round_the_cycle_from_ed(mode):
    frames = torch.zeros(5, 1, 16, 16, 4)
    ed = 2

    def translations(moving, fixed):
        # frame f is the ED image moved by f - ED voxels along axis 0 (round the cycle): pair fields are differences
        shift = [((f - ed) % 5) - ((m - ed) % 5) for m, f in zip(moving, fixed)]
        fields = torch.zeros(len(moving), 3, 16, 16, 4)
        fields[:, 0] = -torch.tensor(shift, dtype=torch.float32)[:, None, None, None]
        return fields

    fields = track_cine(None, frames, ed, mode, field_provider=translations)
    for frame in range(5):
        expected = -((frame - ed) % 5)
        assert float(fields[frame, 0, 8, 8, 2]) == pytest.approx(expected), frame  # inside, away from the borders
    assert not fields[ed].any()


class ZeroFieldNetwork(nn.Module):
    """A registration network that always answers "no motion"."""

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ddf": torch.zeros(moving.shape[0], 3, *moving.shape[2:])}


def test_refine_steps_refine_each_network_field_on_its_own_pair():
    # frame 1 is the ED blob moved by +2 voxels along axis 0: its field (fixed = frame 1) is -2 voxels there
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (48, 48, 4)), indexing="ij")

    def blob(centre: float) -> torch.Tensor:
        return torch.exp(-((axes[0] - centre) ** 2 + (axes[1] - 24.0) ** 2) / (2 * 6.0**2))

    frames = torch.stack([blob(24.0), blob(26.0)])[:, None]
    unrefined = track_cine(ZeroFieldNetwork(), frames, 0, "direct")
    refined = track_cine(ZeroFieldNetwork(), frames, 0, "direct", refine_steps=30)
    assert not unrefined.any()
    assert not refined[0].any()  # the ED frame's field stays zero
    shift = float(refined[1, 0, 16:32, 16:32].mean())
    assert -2.5 < shift < -1.0, shift


def test_true_motion_gives_the_true_function_volumes_and_strain(patient, truth):
    loaded = read_cine(cine_cases(patient)[0])
    measured = measure_cine(loaded.ed_labels, true_fields(patient), loaded.affine, 0, loaded.case.es_frame_info)
    errors = cine_errors(measured.function, truth)
    assert errors["lv_ef_error"] < 2.0 and errors["rv_ef_error"] < 3.0  # EF points
    assert errors["es_frame_error"] == 0
    assert errors["lv_curve_error"] < 3.0 and errors["rv_curve_error"] < 3.0  # % of EDV
    assert errors["circumferential_strain_error"] < 1.0 and errors["radial_strain_error"] < 5.0  # strain points
    assert measured.labels.shape == loaded.ed_labels.shape + (FRAMES,)
    np.testing.assert_array_equal(measured.labels[..., 0], loaded.ed_labels)


@pytest.mark.parametrize("cpu_pass", [True, False], ids=["cpu_pass", "plain"])
def test_an_image_encoded_once_gives_the_fields_of_the_plain_forward(cpu_pass, network_frames):
    memwarp = shipped_network(cpu_pass).registration
    ed, frames = network_frames[:1], network_frames[[2, 4]]  # ED against two frames of large motion
    with torch.inference_mode():
        plain = memwarp(ed.expand(2, -1, -1, -1, -1).contiguous(), frames)
        ed_features = memwarp.encode(ed)  # a batch of one, expanded against the frames
        from_features = memwarp.decode(memwarp.pair_features(ed_features, memwarp.encode(frames)), ed)
    assert float(plain["ddf"].abs().max()) > 1.0  # voxels: a real field, not the near-zero one of random weights
    assert float((from_features["ddf"] - plain["ddf"]).abs().max()) <= 1e-5
    assert float((from_features["anatomical_logits"][0] - plain["anatomical_logits"][0]).abs().max()) <= 1e-4
    assert float((from_features["warped"] - plain["warped"]).abs().max()) <= 1e-4


def test_tracking_encodes_every_frame_once_and_gives_the_fields_of_the_plain_forward(network_frames, monkeypatch):
    network = shipped_network()
    memwarp, frames = network.registration, network_frames[:3]
    encoded_images = []
    encode = memwarp.encode
    monkeypatch.setattr(memwarp, "encode", lambda images: encoded_images.append(len(images)) or encode(images))
    # frame to frame from ED = 0 (frame 1 is fixed in the first pair and moving in the second), one pair per batch
    fields = register_pairs(network, frames, [0, 1], [1, 2], batch_size=1)
    assert encoded_images == [2, 1]  # frame 1 is encoded once for its two pairs
    with torch.inference_mode():
        plain = network(frames[[0, 1]], frames[[1, 2]])["ddf"]
    assert float((fields - plain).abs().max()) <= 1e-5


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 EF targets not met by the shipped 0.7.0 weights: they track a fraction of the motion (LV EF "
    "off by 16.5 points, RV EF by 34.5 on this cine; 0.6.0: 22.8 and 38.6; docs/README.md, 'Cine function'). "
    "Strict: passing means the targets are met",
)
def test_shipped_weights_measure_the_ejection_fractions_within_the_targets(patient, truth):
    analysis = analyse_cine(cine_cases(patient)[0], shipped_network())
    errors = cine_errors(analysis.measurements.function, truth)
    assert errors["lv_ef_error"] <= 3.0 and errors["rv_ef_error"] <= 5.0, errors  # EF points, the targets
    assert errors["es_frame_error"] <= 1


def test_without_an_ed_label_map_the_ed_labels_are_the_memorys_segmentation_of_the_ed_frame(patient):
    cine = patient / f"{patient.name}_4d.nii.gz"
    analysis = analyse_cine(cine_cases(cine=cine, ed_frame=1)[0], shipped_network())
    assert analysis.ed_labels_source == "memory segmentation"
    truth = np.asarray(nib.load(str(patient / f"{patient.name}_frame01_gt.nii.gz")).dataobj)
    assert analysis.ed_labels.shape == truth.shape and analysis.ed_labels.dtype == np.uint8
    blood_pool, reference = analysis.ed_labels == 3, truth == 3
    dice = 2 * (blood_pool & reference).sum() / (blood_pool.sum() + reference.sum())
    assert dice > 0.8  # 0.90 on the default-options patient131 of the test split
    np.testing.assert_array_equal(analysis.measurements.labels[..., 0], analysis.ed_labels)


@pytest.mark.slow  # two cines through the real command: about 30 s of CPU time
def test_workflow_writes_every_output_on_the_cines_grid(dataset, patient, checkpoint, tmp_path):
    output = tmp_path / "out"
    result = run_cine(
        "--dataset_dir", str(dataset), "--patients", f"[{PATIENT},{COPY}]", "--ckpt_path", str(checkpoint),
        "--output_dir", str(output), "--batch_size", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    cine = nib.load(str(patient / f"{patient.name}_4d.nii.gz"))
    folder = output / patient.name
    labels = nib.load(str(folder / "labels_4d.nii.gz"))
    assert labels.shape == cine.shape and labels.get_data_dtype() == np.uint8
    np.testing.assert_allclose(labels.affine, cine.affine, atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(labels.dataobj)[..., 0],
        np.asarray(nib.load(str(patient / f"{patient.name}_frame01_gt.nii.gz")).dataobj),
    )
    fields = sorted((folder / "displacements").iterdir())
    assert [path.name for path in fields] == [f"ED_to_frame{t:02d}_mm.nii.gz" for t in range(1, FRAMES + 1)]
    field, affine = read_displacement_nifti(fields[3])  # checks (X, Y, Z, 1, 3) and intent 1006
    assert field.shape == cine.shape[:3] + (3,)
    np.testing.assert_allclose(affine, cine.affine, atol=1e-5)
    function = json.loads((folder / "function.json").read_text())
    assert function["frames"] == FRAMES and function["ed_frame"] == 1 and function["es_frame_info_cfg"] is not None
    assert set(function["lv"]) == {"edv_ml", "esv_ml", "sv_ml", "ef_percent", "mass_g"}
    assert len(function["strain"]["radial_percent"]) == FRAMES
    rows = list(csv.DictReader((folder / "volumes.csv").open()))
    assert len(rows) == FRAMES and float(rows[0]["lv_mass_g"]) == pytest.approx(
        1.05 * float(rows[0]["lv_myocardium_ml"])
    )
    assert (folder / "function.png").stat().st_size > 10_000
    summary = list(csv.DictReader((output / "cine_summary.csv").open()))
    assert [row["cine"] for row in summary] == [patient.name, f"patient{COPY:03d}"]
    assert summary[0]["lv_ef_percent"] == summary[1]["lv_ef_percent"] == str(function["lv"]["ef_percent"])


def _write_like(reference: Path, data: np.ndarray, path: Path) -> Path:
    image = nib.load(str(reference))
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    return path


@pytest.mark.parametrize("case", ["3d_file", "ed_frame_out_of_range", "label_on_another_grid", "one_frame"])
def test_bad_input_ends_with_one_line_naming_the_file_and_writes_nothing(case, patient, checkpoint, tmp_path):
    cine = patient / f"{patient.name}_4d.nii.gz"
    arguments = {"--cine": str(cine)}
    if case == "3d_file":
        named = arguments["--cine"] = str(patient / f"{patient.name}_frame01.nii.gz")
    elif case == "ed_frame_out_of_range":
        named, arguments["--ed_frame"] = str(cine), str(FRAMES + 1)
    elif case == "label_on_another_grid":
        label = np.asarray(nib.load(str(patient / f"{patient.name}_frame01_gt.nii.gz")).dataobj)[:-4]
        named = arguments["--ed_label"] = str(_write_like(cine, label, tmp_path / "cropped_gt.nii.gz"))
    else:
        single = np.asarray(nib.load(str(cine)).dataobj)[..., :1]
        named = arguments["--cine"] = str(_write_like(cine, single, tmp_path / "one_frame_4d.nii.gz"))
    output = tmp_path / "out"
    overrides = [item for pair in arguments.items() for item in pair]
    result = run_cine(*overrides, "--ckpt_path", str(checkpoint), "--output_dir", str(output))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0] == result.stderr.rstrip().splitlines()[-1], result.stderr[-3000:]
    assert named in errors[0]
    assert not output.exists() or not any(output.iterdir())


def test_yes_no_options_typed_on_the_command_line_are_read_as_flags(patient, checkpoint):
    arguments = (cine_cases(patient), ZeroFieldNetwork(), str(checkpoint), "out")
    workflow = CineWorkflow(*arguments, save_fields="false", save_figure="True")
    assert workflow.save_fields is False and workflow.save_figure is True
    with pytest.raises(InvalidInputError, match="save_fields"):
        CineWorkflow(*arguments, save_fields="maybe")


def test_a_cine_corrupt_behind_a_valid_header_stops_the_run_and_keeps_the_cines_completed_before_it(
    dataset, checkpoint, tmp_path
):
    # patient133: patient131's files with the cine cut in half (the header reads, the data does not)
    corrupt = tmp_path / "patient133"
    corrupt.mkdir()
    for path in (dataset / "testing" / f"patient{PATIENT:03d}").iterdir():
        data = path.read_bytes()
        if path.name.endswith("_4d.nii.gz"):
            data = data[: len(data) // 2]
        (corrupt / path.name.replace(f"patient{PATIENT:03d}", corrupt.name)).write_bytes(data)
    cases = cine_cases(dataset / "testing", [PATIENT]) + cine_cases(corrupt) + cine_cases(dataset / "testing", [COPY])
    network = optimise_for_device(bundle_network("memwarp", "compact"), "cpu")
    output = tmp_path / "out"
    workflow = CineWorkflow(cases, network, str(checkpoint), str(output), save_fields=False, save_figure=False)
    with pytest.raises(InvalidInputError) as error:
        workflow.run()
    assert str(error.value).startswith(cases[1].cine)  # the file, then the problem
    assert sorted(path.name for path in output.iterdir()) == sorted([SUMMARY_FILE, f"patient{PATIENT:03d}"])
    completed = json.loads((output / f"patient{PATIENT:03d}" / "function.json").read_text())
    assert set(completed["files"]) == {path.name for path in (output / f"patient{PATIENT:03d}").iterdir()}
    summary = list(csv.DictReader((output / SUMMARY_FILE).open()))
    assert [(row["cine"], row["status"]) for row in summary] == [
        (f"patient{PATIENT:03d}", "ok"),
        ("patient133", "failed"),
        (f"patient{COPY:03d}", "not run"),
    ]
    assert summary[0]["lv_ef_percent"] == str(completed["lv"]["ef_percent"]) and not summary[0]["error"]
    assert summary[1]["error"] == one_line(error.value) and not summary[1]["lv_ef_percent"]


def test_benchmark_of_the_true_fields_writes_its_report_with_small_errors(dataset, tmp_path):
    output = tmp_path / "report"
    arguments = ["--dataset_dir", str(dataset), "--patients", str(PATIENT), "--tracking", "--true_fields"]
    code = benchmark_main([*arguments, "--output_dir", str(output)])
    assert code == 0
    report = json.loads((output / "cine_benchmark.json").read_text())
    summary = report["summaries"][TRUE_FIELDS_ROW]
    assert summary["cines"] == 1 and summary["lv_ef_error"] < 2.0 and summary["es_within_one_percent"] == 100.0
    assert (output / "cine_table.md").is_file() and (output / "per_cine_true_fields.csv").is_file()
