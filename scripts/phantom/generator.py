"""Generate phantom subjects and whole data sets (parallel, with a progress bar)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from scripts.atomic_files import write_text_atomically

from .acdc_writer import MANIFEST_NAME, write_subject
from .calibration import calibrate_function
from .motion import breathing_cycle, cardiac_cycle
from .parameters import GenerationOptions, SubjectParameters, draw_subject
from .render import SubjectRenderer, displacement_field
from .subjects import SubjectSlot, acdc_group, select_subjects

if TYPE_CHECKING:
    from .cine_truth import CineTruth

DEFAULT_SEED = 0
GENERATOR_VERSION = "1.0"
# The committed sample (sample_data/patient001): in-plane matrix cropped to 128 around the heart so
# that the folder (without the 4D cine) stays under 1 MB.
SAMPLE_OPTIONS = GenerationOptions(max_matrix=128)
SAMPLE_BUDGET_BYTES = 1_000_000


@dataclass
class PhantomSubject:
    """One generated subject, in memory.

    Attributes:
        params: everything random about it (anatomy, motion, geometry, appearance).
        cine: (X, Y, Z, NbFrame) int16 image.
        ed_labels, es_labels: (X, Y, Z) uint8, 0 bg, 1 RV, 2 LVM, 3 LVBP.
        ddf_ed_to_es: (X, Y, Z, 3) float32 world RAS mm on the ES grid: ES point x <-> ED point x + d(x).
        ddf_es_to_ed: (X, Y, Z, 3) float32 world RAS mm on the ED grid: ED point y <-> ES point y + d(y).
        contraction: (NbFrame,) contraction level of each frame (0 ED .. 1 ES).
        cine_truth: labels, fields and strain of every frame (:mod:`scripts.phantom.cine_truth`), or None.
    """

    params: SubjectParameters
    cine: np.ndarray
    ed_labels: np.ndarray
    es_labels: np.ndarray
    ddf_ed_to_es: np.ndarray
    ddf_es_to_ed: np.ndarray
    contraction: np.ndarray
    cine_truth: "CineTruth | None" = None

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel -> world RAS mm, shared by every frame, label map and field."""
        return self.params.acquisition.affine

    @property
    def ed_frame(self) -> int:
        """1-based ED frame number (always 1 here, as mostly in ACDC)."""
        return 1

    @property
    def es_frame(self) -> int:
        """1-based ES frame number."""
        return self.params.es_frame

    @property
    def name(self) -> str:
        """``patientNNN``."""
        return f"patient{self.params.patient_id:03d}"


def subject_parameters(
    patient_id: int, seed: int = DEFAULT_SEED, group: str | None = None, options: GenerationOptions | None = None
) -> SubjectParameters:
    """Drawn and calibrated parameters of ``patient_id`` (group from ACDC numbering unless given)."""
    return calibrate_function(draw_subject(patient_id, group or acdc_group(patient_id), seed, options))


def generate_subject(
    patient_id: int,
    seed: int = DEFAULT_SEED,
    group: str | None = None,
    options: GenerationOptions | None = None,
    cine_truth: bool = False,
) -> PhantomSubject:
    """Generate one subject: cine, ED/ES labels and both true displacement fields.

    Args:
        patient_id: ACDC number 1-150 (sets the group unless ``group`` is given, and the random stream).
        seed: data set seed; the same (seed, patient_id, options) always gives identical arrays.
        group: force a disease group ("NOR", "MINF", "DCM", "HCM", "RV").
        options: overrides (frame count, matrix cap, in-plane rotation, partial-volume samples).
        cine_truth: also keep the truth of every frame (:mod:`scripts.phantom.cine_truth`); the other arrays are
            the same either way.
    """
    options = options or GenerationOptions()
    params = subject_parameters(patient_id, seed, group, options)
    renderer = SubjectRenderer(params, n_through=options.n_through)
    noise_rng = np.random.default_rng([int(seed), int(patient_id), 104729])
    contraction = cardiac_cycle(params.n_frames, params.es_frame)
    breathing = breathing_cycle(params.n_frames)
    cine = np.empty(params.acquisition.shape + (params.n_frames,), np.int16)
    grid = renderer.world[renderer.centre_index]
    results = {}
    recorder = None
    if cine_truth:
        from .cine_truth import CineTruthRecorder  # imports the cine package: only when asked for

        recorder = CineTruthRecorder(renderer.model, params.acquisition.affine, grid, params.acquisition.shape)
    for index in range(params.n_frames):
        frame = renderer.frame_state(contraction[index], breathing[index])
        key_frame = index + 1 in (1, params.es_frame)
        rendered = renderer.render_frame(frame, with_labels=key_frame or recorder is not None)
        cine[..., index] = renderer.noisy_image(rendered["signal"], noise_rng)
        if recorder is not None:
            recorder.add(frame, rendered)
        if key_frame:
            results[index + 1] = (frame, rendered)
    es_state, es = results[params.es_frame]
    shape = params.acquisition.shape
    return PhantomSubject(
        params=params,
        cine=cine,
        ed_labels=results[1][1]["labels"],
        es_labels=es["labels"],
        ddf_ed_to_es=displacement_field(es["backward"], grid, shape),
        ddf_es_to_ed=displacement_field(renderer.forward_field(es_state), grid, shape),
        contraction=contraction,
        cine_truth=None if recorder is None else recorder.finish(),
    )


def _generate_and_write(task: tuple[SubjectSlot, int, Path, GenerationOptions, bool, bool]) -> dict:
    """Worker: generate one subject and write it; returns a small summary (no arrays cross processes)."""
    slot, seed, root, options, write_cine, cine_truth = task
    start = time.perf_counter()
    subject = generate_subject(slot.patient_id, seed, slot.group, options, cine_truth=cine_truth)
    write_subject(subject, root / slot.split / slot.name, write_cine=write_cine)
    if cine_truth:
        from .cine_truth import write_cine_truth

        write_cine_truth(subject, root / slot.split / slot.name)
    return {
        "patient": slot.name,
        "group": slot.group,
        "split": slot.split,
        "seconds": round(time.perf_counter() - start, 2),
        "targets": {k: round(v, 4) for k, v in subject.params.targets.items()},
    }


def _prepare_output(root: Path, overwrite: bool) -> None:
    """Refuse a non-empty output directory unless ``overwrite``; then drop stale phantom patients."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"output path {root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output directory {root} exists and is not empty; pass --overwrite to replace its phantom files"
            )
        # Only a previous phantom (identified by its manifest) is cleaned, so that a smaller data set
        # does not leave stale patients behind; foreign files are never deleted.
        if (root / MANIFEST_NAME).is_file():
            for split in ("training", "testing"):
                for folder in sorted((root / split).glob("patient[0-9][0-9][0-9]")):
                    shutil.rmtree(folder)
    root.mkdir(parents=True, exist_ok=True)


def generate_dataset(
    output: str | os.PathLike,
    n_subjects: int = 150,
    seed: int = DEFAULT_SEED,
    workers: int = 2,
    overwrite: bool = False,
    options: GenerationOptions | None = None,
    progress: bool = True,
    cine_truth: bool = False,
) -> list[dict]:
    """Write an ACDC-layout phantom data set to ``output`` (``training/`` and ``testing/`` patient folders).

    Args:
        output: root directory; must be absent or empty unless ``overwrite``.
        n_subjects: 1-150 patients, chosen by :func:`scripts.phantom.subjects.select_subjects`.
        seed: data set seed.
        workers: processes generating in parallel (1 = in this process).
        overwrite: allow a non-empty ``output``.
        options: generation overrides (e.g. fewer frames for quick tests).
        progress: show a tqdm progress bar.
        cine_truth: also write the truth of every frame (:mod:`scripts.phantom.cine_truth`); the other files are
            byte-identical either way.

    Returns:
        One summary dict per patient (name, group, split, seconds, calibrated targets); also written
        to ``output/phantom_manifest.json``.
    """
    root = Path(output)
    _prepare_output(root, overwrite)
    options = options or GenerationOptions()
    slots = select_subjects(n_subjects)
    tasks = [(slot, seed, root, options, True, cine_truth) for slot in slots]
    summaries = []
    bar = tqdm(total=len(tasks), desc="phantom subjects", unit="subject", disable=not progress)
    if workers <= 1:
        for task in tasks:
            summaries.append(_generate_and_write(task))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        # Each worker is single-threaded numpy: the parallelism is across subjects.
        with context.Pool(workers) as pool:
            for summary in pool.imap_unordered(_generate_and_write, tasks):
                summaries.append(summary)
                bar.update()
    bar.close()
    summaries.sort(key=lambda item: item["patient"])
    manifest = {
        "generator": "scripts.phantom",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_subjects": n_subjects,
        "options": {name: getattr(options, name) for name in options.__dataclass_fields__},
        **({"cine_truth": True} if cine_truth else {}),
        "subjects": summaries,
    }
    write_text_atomically(root / MANIFEST_NAME, json.dumps(manifest, indent=4))
    return summaries


def write_sample(output: str | os.PathLike, seed: int = DEFAULT_SEED, overwrite: bool = True) -> Path:
    """Write the committed sample ``output/patient001``: Info.cfg, ED/ES frames and their label maps.

    patient001 of the data set ``seed`` with the in-plane matrix cropped to 128 around the heart
    (SAMPLE_OPTIONS) and no 4D cine; the true fields are added only if the folder stays under 1 MB
    (with the default seed they do not fit: regenerate them with ``--output``). Regenerating with the
    same seed reproduces the folder byte for byte.
    """
    folder = Path(output) / "patient001"
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"sample directory {folder} exists and is not empty; pass --overwrite")
    subject = generate_subject(1, seed, acdc_group(1), SAMPLE_OPTIONS)
    for stale in folder.glob("patient001_*"):  # e.g. fields of an earlier sample that no longer fit
        stale.unlink()
    write_subject(subject, folder, write_cine=False, ddf_budget=SAMPLE_BUDGET_BYTES)
    return folder
