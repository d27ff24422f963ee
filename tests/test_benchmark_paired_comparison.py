"""The paired per-patient comparison of the accuracy benchmark: wins, ties, direction, sign test."""

from __future__ import annotations

import math

import pytest

from scripts.benchmark.paired_comparison import compare_methods, paired_comparison, paired_table, sign_test


def _rows(values: dict[str, list[float]], metric: str = "dice_mean") -> list[dict]:
    return [{"patient": patient, metric: value} for patient, pair_values in values.items() for value in pair_values]


def test_the_sign_test_is_the_exact_two_sided_binomial() -> None:
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(2, 8) == sign_test(8, 2)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0


def test_each_patient_is_its_pairs_mean_and_counts_once() -> None:
    # a: A 0.80 vs B 0.70 (A wins); b: A mean 0.75 vs B 0.76 (B); c: tie; d: only A scored it; e: A NaN pair skipped
    rows_a = _rows({"a": [0.9, 0.7], "b": [0.8, 0.7], "c": [0.6, 0.6], "d": [0.9, 0.9], "e": [math.nan, 0.5]})
    rows_b = _rows({"a": [0.7, 0.7], "b": [0.76, 0.76], "c": [0.6, 0.6], "e": [0.4, 0.4]})
    result = paired_comparison(rows_a, rows_b, "dice_mean", higher_is_better=True)
    assert (result.patients, result.a_wins, result.b_wins, result.ties) == (4, 2, 1, 1)
    assert result.mean_difference == pytest.approx((0.1 - 0.01 + 0.0 + 0.1) / 4)
    assert result.sign_test_p == pytest.approx(sign_test(2, 1))


def test_a_lower_is_better_metric_counts_the_lower_value_as_the_win() -> None:
    rows_a = _rows({"a": [5.0], "b": [6.0], "c": [4.0]}, "epe_boundary_mm")
    rows_b = _rows({"a": [6.0], "b": [5.0], "c": [5.0]}, "epe_boundary_mm")
    result = paired_comparison(rows_a, rows_b, "epe_boundary_mm", higher_is_better=False)
    assert (result.a_wins, result.b_wins, result.ties) == (2, 1, 0)
    assert result.mean_difference == pytest.approx(-1.0 / 3)


def test_every_pair_of_methods_is_compared_on_the_metrics_both_carry() -> None:
    rows = {
        "Initial": _rows({"a": [0.5], "b": [0.5]}),
        "X": [{"patient": p, "dice_mean": d, "epe_boundary_mm": e} for p, d, e in (("a", 0.9, 5.0), ("b", 0.8, 6.0))],
        "Y": [{"patient": p, "dice_mean": d, "epe_boundary_mm": e} for p, d, e in (("a", 0.8, 5.5), ("b", 0.7, 6.5))],
        "Z": _rows({"a": [0.85], "b": [0.95]}),  # no end-point error (e.g. data without true motion)
    }
    results = compare_methods(rows, skip=("Initial",))
    assert [(r["a"], r["b"], r["metric"]) for r in results] == [
        ("X", "Y", "dice_mean"),
        ("X", "Y", "epe_boundary_mm"),
        ("X", "Z", "dice_mean"),
        ("Y", "Z", "dice_mean"),
    ]
    assert [(r["a_wins"], r["b_wins"]) for r in results] == [(2, 0), (2, 0), (1, 1), (0, 2)]
    table = paired_table(results)
    assert "| X | Y | Dice (pts) | 2 | 2 | 0 | 0 | +10.00 | 0.5 |" in table
    assert "| X | Y | boundary EPE (mm) | 2 | 2 | 0 | 0 | -0.50 | 0.5 |" in table
