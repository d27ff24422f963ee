"""Paired per-patient comparison of two methods scored on the same pairs: who wins on how many patients.

A mean over 50 patients can hide that one method is better on most of them, or that a difference rests on a few.
For two methods A and B and one metric, every patient scored by both (its pairs' nan-mean, the aggregation of
:func:`scripts.evaluation.summarise`) counts as a win for the better one, or a tie when the two are equal to
``tie_tolerance``. The two-sided exact sign test (binomial with p = 1/2 over the non-tied patients) says how often
a split at least that uneven would arise if neither method were better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from scripts.evaluation import patient_means

__all__ = ["COMPARED_METRICS", "PairedComparison", "compare_methods", "paired_comparison", "paired_table", "sign_test"]

# (metric, True when higher is better, table label, scale to the table's unit, tie tolerance in the metric's unit)
COMPARED_METRICS: tuple[tuple[str, bool, str, float, float], ...] = (
    ("dice_mean", True, "Dice (pts)", 100.0, 1e-9),
    ("epe_boundary_mm", False, "boundary EPE (mm)", 1.0, 1e-9),
)


@dataclass(frozen=True)
class PairedComparison:
    """A against B on one metric over the patients both were scored on.

    Attributes:
        metric: the per-pair metric compared.
        higher_is_better: its direction.
        patients: patients scored by both.
        a_wins, b_wins, ties: patients where A is better, B is better, or they are equal.
        mean_difference: mean over those patients of A - B (in the metric's unit; positive: A higher).
        sign_test_p: two-sided exact sign test over the non-tied patients (1.0 when all are tied).
    """

    metric: str
    higher_is_better: bool
    patients: int
    a_wins: int
    b_wins: int
    ties: int
    mean_difference: float | None
    sign_test_p: float


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least as uneven as ``wins``/``losses``) under p = 1/2.

    >>> round(sign_test(8, 2), 4), sign_test(3, 3), sign_test(0, 0)
    (0.1094, 1.0, 1.0)
    """
    total = wins + losses
    if total == 0:
        return 1.0
    extreme = min(wins, losses)
    tail = sum(math.comb(total, k) for k in range(extreme + 1)) / 2.0**total
    return min(1.0, 2.0 * tail)


def paired_comparison(
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    metric: str,
    higher_is_better: bool,
    tie_tolerance: float = 1e-9,
) -> PairedComparison:
    """Compare A and B patient by patient on ``metric`` (per-pair rows with "patient" and the metric)."""
    means_a, means_b = patient_means(rows_a, metric), patient_means(rows_b, metric)
    shared = sorted(set(means_a) & set(means_b))
    differences = [means_a[patient] - means_b[patient] for patient in shared]
    better = [difference if higher_is_better else -difference for difference in differences]
    a_wins = sum(value > tie_tolerance for value in better)
    b_wins = sum(value < -tie_tolerance for value in better)
    return PairedComparison(
        metric=metric,
        higher_is_better=higher_is_better,
        patients=len(shared),
        a_wins=a_wins,
        b_wins=b_wins,
        ties=len(shared) - a_wins - b_wins,
        mean_difference=sum(differences) / len(differences) if differences else None,
        sign_test_p=sign_test(a_wins, b_wins),
    )


def compare_methods(rows: Mapping[str, Sequence[Mapping[str, Any]]], skip: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every pair of methods (in the order given; the earlier one is A) on every metric of
    :data:`COMPARED_METRICS` that both carry: JSON-ready dicts ``{"a", "b", **PairedComparison}``."""
    names = [name for name in rows if name not in skip]
    results = []
    for name_a, name_b in combinations(names, 2):
        for metric, higher_is_better, _, _, tolerance in COMPARED_METRICS:
            comparison = paired_comparison(rows[name_a], rows[name_b], metric, higher_is_better, tolerance)
            if comparison.patients:
                results.append({"a": name_a, "b": name_b, **asdict(comparison)})
    return results


def paired_table(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`compare_methods`'s results: one row per method pair and metric."""
    labels = {metric: (label, scale) for metric, _, label, scale, _ in COMPARED_METRICS}
    header = "| A | B | metric | patients | A better | B better | ties | mean A - B | sign test p |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in comparisons:
        label, scale = labels.get(result["metric"], (result["metric"], 1.0))
        difference = result["mean_difference"]
        lines.append(
            f"| {result['a']} | {result['b']} | {label} | {result['patients']} | {result['a_wins']} | "
            f"{result['b_wins']} | {result['ties']} | "
            f"{'-' if difference is None else f'{difference * scale:+.2f}'} | {result['sign_test_p']:.2g} |"
        )
    return "\n".join(lines) + "\n"
