"""Synthetic cardiac cine MRI phantom in ACDC layout, with exact ground-truth motion.

Command line (see ``python -m scripts.phantom --help``)::

    python -m scripts.phantom --output DIR [--subjects N] [--seed S] [--workers W] [--overwrite]
    python -m scripts.phantom --sample sample_data          # regenerates sample_data/patient001
    python -m scripts.phantom --preview DIR/training/patient001 --png out.png

Layout written (exactly ACDC's, plus the true fields)::

    DIR/training/patientNNN/ and DIR/testing/patientNNN/
        Info.cfg                              "ED: n", "ES: n", "Group: NOR|MINF|DCM|HCM|RV",
                                              "Height: x", "Weight: x", "NbFrame: n"
        patientNNN_4d.nii.gz                  (X, Y, Z, NbFrame) int16 cine
        patientNNN_frameFF.nii.gz             ED and ES frames, FF = 1-based frame number, 2 digits
        patientNNN_frameFF_gt.nii.gz          uint8 labels 0 bg, 1 RV, 2 LVM, 3 LVBP
        patientNNN_true_ddf_ED_to_ES.nii.gz   true displacement, moving = ED, fixed = ES
        patientNNN_true_ddf_ES_to_ED.nii.gz   true displacement, moving = ES, fixed = ED
    DIR/phantom_manifest.json                 seed, options, per-patient group/split/targets

Numbering: 150 patients by default, 001-100 training (blocks of 20: DCM, HCM, MINF, NOR, RV as in
ACDC), 101-150 testing (blocks of 10 in the same group order). ``--subjects N`` keeps ACDC numbers
and groups (round(2N/3) training, groups dealt out evenly), see :mod:`scripts.phantom.subjects`.

True displacement field convention (the one used everywhere in the bundle):
``patientNNN_true_ddf_ED_to_ES.nii.gz`` lives on the ES frame's voxel grid (the same grid and affine
as every frame of the subject) and holds, at the voxel centre x, the world displacement d(x) in
millimetres (NIfTI RAS) such that the point x of the ES frame corresponds to the point x + d(x) of
the ED frame: sampling the ED image at x + d(x) reproduces the ES image (moving = ED, fixed = ES).
``patientNNN_true_ddf_ES_to_ED.nii.gz`` is the reverse (on the ED grid, pointing into ES). Arrays
are float32 of shape (X, Y, Z, 1, 3) with NIfTI intent code 1006 ("displacement vector") and the
subject's affine, so ITK/SimpleITK read them as displacement-field transforms mapping fixed points to
moving points (ITK converts the stored RAS components to LPS on read). Values are rounded to 2^-10 mm.

How the truth is exact: the anatomy is analytic in a continuous ED reference space
(:mod:`~scripts.phantom.anatomy`); every frame has a known backward map frame -> ED
(:mod:`~scripts.phantom.motion`: heart shells with volume-conserving walls, base descent, twist;
surroundings that slide along the heart; a breathing shift of the liver); images and labels of every
frame are the anatomy evaluated at the mapped points (:mod:`~scripts.phantom.render`). ED_to_ES is
the ES backward map minus identity; ES_to_ED is its closed-form inverse (checked numerically in the
tests: mapping back returns within 0.01 mm except where sliding hides tissue).

The picture (``--preview``) lives in :mod:`scripts.phantom.preview`, imported on demand because it
selects matplotlib's Agg backend.
"""

from .generator import (
    DEFAULT_SEED,
    SAMPLE_OPTIONS,
    PhantomSubject,
    generate_dataset,
    generate_subject,
    subject_parameters,
    write_sample,
)
from .parameters import GenerationOptions
from .subjects import GROUPS, SubjectSlot, acdc_group, select_subjects

__all__ = [
    "DEFAULT_SEED",
    "GROUPS",
    "GenerationOptions",
    "PhantomSubject",
    "SAMPLE_OPTIONS",
    "SubjectSlot",
    "acdc_group",
    "generate_dataset",
    "generate_subject",
    "select_subjects",
    "subject_parameters",
    "write_sample",
]
