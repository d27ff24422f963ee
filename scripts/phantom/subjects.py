"""Which patients a phantom data set holds: ACDC numbering, disease groups and the train/test split.

ACDC numbers its 150 patients 001-150: 001-100 are the training set, five disease groups in blocks of
20 (001-020 DCM, 021-040 HCM, 041-060 MINF, 061-080 NOR, 081-100 RV), 101-150 the testing set with
10 patients per group. ACDC does not publish the group order of its testing set; the phantom uses the
same order in blocks of 10 (101-110 DCM, 111-120 HCM, 121-130 MINF, 131-140 NOR, 141-150 RV).

A smaller data set (``n_subjects < 150``) keeps every patient number meaningful: patientNNN always
has the group ACDC numbering gives it and, for a given seed, the same anatomy and motion as in the
full data set. Round(2 N / 3) patients go to training and the rest to testing; the groups are dealt
out in the order DCM, HCM, MINF, NOR, RV over the whole list (training first), each taking the next
unused number of its block. N = 5 therefore gives patient001 (DCM), 021 (HCM), 041 (MINF) for training
and 131 (NOR), 141 (RV) for testing: every group once, both splits as balanced as their sizes allow.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS: tuple[str, ...] = ("DCM", "HCM", "MINF", "NOR", "RV")
N_ACDC_SUBJECTS = 150
N_ACDC_TRAINING = 100
TRAINING_BLOCK = 20
TESTING_BLOCK = 10


@dataclass(frozen=True)
class SubjectSlot:
    """One patient of the data set: ACDC number (1-150), disease group and split ("training"/"testing")."""

    patient_id: int
    group: str
    split: str

    @property
    def name(self) -> str:
        """ACDC folder and file prefix, e.g. ``patient001``."""
        return f"patient{self.patient_id:03d}"


def acdc_group(patient_id: int) -> str:
    """Disease group of ACDC patient ``patient_id`` (1-150) under the numbering above."""
    if not 1 <= patient_id <= N_ACDC_SUBJECTS:
        raise ValueError(f"patient_id must be in 1..{N_ACDC_SUBJECTS}, got {patient_id}")
    if patient_id <= N_ACDC_TRAINING:
        return GROUPS[(patient_id - 1) // TRAINING_BLOCK]
    return GROUPS[(patient_id - N_ACDC_TRAINING - 1) // TESTING_BLOCK]


def acdc_split(patient_id: int) -> str:
    """``"training"`` for patients 1-100, ``"testing"`` for 101-150."""
    acdc_group(patient_id)  # validates the range
    return "training" if patient_id <= N_ACDC_TRAINING else "testing"


def select_subjects(n_subjects: int = N_ACDC_SUBJECTS) -> list[SubjectSlot]:
    """The ``n_subjects`` patients of a data set (1..150) as described in the module docstring, by number."""
    if not 1 <= n_subjects <= N_ACDC_SUBJECTS:
        raise ValueError(f"--subjects must be in 1..{N_ACDC_SUBJECTS}, got {n_subjects}")
    n_training = min(N_ACDC_TRAINING, round(2 * n_subjects / 3))
    used = {(group, split): 0 for group in GROUPS for split in ("training", "testing")}
    slots = []
    for position in range(n_subjects):
        split = "training" if position < n_training else "testing"
        group = GROUPS[position % len(GROUPS)]
        rank = used[(group, split)]
        used[(group, split)] = rank + 1
        if split == "training":
            patient_id = GROUPS.index(group) * TRAINING_BLOCK + rank + 1
        else:
            patient_id = N_ACDC_TRAINING + GROUPS.index(group) * TESTING_BLOCK + rank + 1
        slots.append(SubjectSlot(patient_id, group, split))
    return sorted(slots, key=lambda slot: slot.patient_id)
