"""The quality-control picture: colour bars with units, a fixed Jacobian scale, named slices, orientation letters and a
legend that lists what is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scripts.inference.qc_figure import (
    JACOBIAN_RANGE,
    orientation_letters,
    quality_control_figure,
    save_quality_control_figure,
    slice_names,
)

SHAPE = (24, 20, 6)
AFFINE = np.diag([1.5, 1.5, 8.0, 1.0])


def heart(shape=SHAPE) -> np.ndarray:
    """Labels 1..3 in a block whose cross-section shrinks along the slice axis (large at slice 0: the base)."""
    labels = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        half = 8 - z
        labels[12 - half : 12 + half, 10 - half : 10 + half, z] = 2
        labels[12 - half // 2 : 12 + half // 2, 10 - half // 2 : 10 + half // 2, z] = 3
    labels[2:5, 2:5, :] = 1
    return labels


def panels(jacobian: np.ndarray | None = None, warped_label: np.ndarray | None = None) -> dict:
    rng = np.random.default_rng(0)
    fixed = rng.random(SHAPE).astype(np.float32) * 100
    return dict(
        fixed=fixed,
        moving=fixed + 5,
        warped=fixed + 1,
        displacement_mm=np.zeros((3, *SHAPE)),
        affine=AFFINE,
        segmentation=heart(),
        warped_label=warped_label,
        jacobian=np.ones(SHAPE) if jacobian is None else jacobian,
        title="pair",
    )


def colour_bars(figure) -> dict[str, tuple[float, float]]:
    """Colour bar label -> its value range (the figure's axes other than the panels' image)."""
    return {axes.get_xlabel(): axes.get_xlim() for axes in figure.axes if axes.get_xlabel()}


def test_difference_and_jacobian_panels_have_colour_bars_with_units() -> None:
    figure = quality_control_figure(**panels())
    bars = colour_bars(figure)
    assert len(figure.axes) == 3 and len(bars) == 2
    assert "|intensity difference| (input image units)" in bars
    assert bars["|intensity difference| (input image units)"][0] == 0.0
    assert bars["volume ratio (1 = unchanged)"] == JACOBIAN_RANGE == (0.0, 2.0)


def test_jacobian_scale_is_the_same_whatever_the_values() -> None:
    strong = np.full(SHAPE, 1.0)
    strong[..., 2] = 7.5  # one slice far above the scale, another folding
    strong[..., 4] = -0.5
    for jacobian in (np.ones(SHAPE), strong):
        assert colour_bars(quality_control_figure(**panels(jacobian)))["volume ratio (1 = unchanged)"] == (0.0, 2.0)


def test_slices_are_named_base_mid_apex_by_the_heart_cross_section() -> None:
    labels = heart()
    assert slice_names([1, 2, 4], labels, 2) == ["base (slice 1)", "mid (slice 2)", "apex (slice 4)"]
    assert slice_names([1, 2, 4], labels[..., ::-1], 2) == ["apex (slice 1)", "mid (slice 2)", "base (slice 4)"]
    assert slice_names([1, 2, 4], None, 2) == ["slice 1", "slice 2", "slice 4"]
    figure = quality_control_figure(**panels())
    texts = {text.get_text() for text in figure.axes[0].texts}
    assert {"base (slice 1)", "mid (slice 2)", "apex (slice 4)"} <= texts


def test_orientation_letters_name_the_world_directions_of_the_panel_edges() -> None:
    assert orientation_letters(np.array([1.5, 0.0, 0.0])) == ("L", "R")  # RAS+: index grows towards the right
    assert orientation_letters(np.array([-1.5, 0.0, 0.0])) == ("R", "L")
    assert orientation_letters(np.array([0.0, 1.5, 0.0])) == ("P", "A")
    assert orientation_letters(np.array([0.2, -1.0, 0.9])) == ("AI", "PS")  # oblique: main component first
    texts = [text.get_text() for text in quality_control_figure(**panels()).axes[0].texts]
    assert all(texts.count(letter) == 3 for letter in "LRPA")  # one set per row, on the first column


def test_legend_lists_what_is_drawn() -> None:
    def entries(**kwargs) -> list[str]:
        return [text.get_text() for text in quality_control_figure(**panels(**kwargs)).legends[0].get_texts()]

    plain = entries()
    assert plain == ["RV (predicted)", "LV myocardium (predicted)", "LV blood pool (predicted)", "deformed grid"]
    folding = np.ones(SHAPE)
    folding[5:8, 5:8, 2] = -1.0
    with_both = entries(jacobian=folding, warped_label=heart())
    assert "warped moving label (dotted)" in with_both and "J <= 0 (folding)" in with_both


def test_the_picture_is_written_as_png(tmp_path: Path) -> None:
    path = save_quality_control_figure(tmp_path / "qc.png", **panels())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("shape", [(30, 18, 5), (16, 40, 7)])
def test_non_square_slices_are_drawn(shape: tuple[int, int, int]) -> None:
    fixed = np.random.default_rng(1).random(shape).astype(np.float32)
    figure = quality_control_figure(fixed, fixed, fixed, np.zeros((3, *shape)), AFFINE)
    assert figure.axes[0].images[0].get_array().shape[:2] == (3 * shape[1] + 6, 7 * shape[0] + 18)
