"""Specification of the strain code (scripts.cine.strain, scripts.cine.tracked_strain) on analytic deformations.

A synthetic short-axis stack on an oblique grid holds an LV ring (blood pool r < 15 mm, myocardium 15-24 mm about
one centre); each test builds the exact pull-back field (frame point x -> ED point x + d(x)) of a known deformation
and checks the global strain the workflow computes from it against the value worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.cine.strain import green_lagrange, in_plane_basis, slice_centroids
from scripts.cine.tracked_strain import tracked_global_strain
from scripts.geometry import voxel_to_world_points, world_to_voxel_displacement

SHAPE = (72, 72, 4)
ENDOCARDIUM_MM, EPICARDIUM_MM = 15.0, 24.0


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def ring():
    """(labels, affine, in-plane coordinates (X, Y, Z, 2) of every voxel centre about the ring's centre)."""
    affine = np.eye(4)
    tilt = rotation_z(0.4) @ np.array(
        [[1, 0, 0], [0, math.cos(0.3), -math.sin(0.3)], [0, math.sin(0.3), math.cos(0.3)]]
    )
    affine[:3, :3] = tilt @ np.diag([1.5, 1.5, 8.0])
    affine[:3, 3] = [-40.0, 25.0, -12.0]
    index = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1).astype(np.float64)
    world = voxel_to_world_points(index, affine)
    basis, _ = in_plane_basis(affine)
    centre_index = np.array([35.3, 36.1, 0.0])
    centre = voxel_to_world_points(centre_index, affine)
    plane = (world - centre) @ basis  # (X, Y, Z, 2): in-plane offset from each slice's centre (same for all slices)
    radius = np.linalg.norm(plane, axis=-1)
    labels = np.zeros(SHAPE, np.uint8)
    labels[radius < ENDOCARDIUM_MM] = 3
    labels[(radius >= ENDOCARDIUM_MM) & (radius < EPICARDIUM_MM)] = 2
    return labels, affine, plane, basis


def strain_of(backward_plane, ring) -> tuple[float, float]:
    """Global strain of the deformation whose pull-back maps in-plane offsets p (frame) to backward_plane(p) (ED)."""
    labels, affine, plane, basis = ring
    displacement_plane = backward_plane(plane) - plane  # (X, Y, Z, 2)
    displacement_mm = displacement_plane @ basis.T  # (X, Y, Z, 3) world
    fields = torch.from_numpy(displacement_mm).permute(3, 0, 1, 2)[None].float()
    radial, circumferential = tracked_global_strain(world_to_voxel_displacement(fields, affine), labels, affine)
    return float(radial[0]), float(circumferential[0])


def test_centroids_are_the_blood_pool_centres(ring):
    labels, affine, plane, basis = ring
    centroids = slice_centroids(labels, affine)
    expected = voxel_to_world_points(np.array([35.3, 36.1, 0.0]), affine)
    offsets = (centroids - expected) @ basis
    assert np.abs(offsets).max() < 0.2  # mm: the discrete disc's centroid


def test_uniform_in_plane_contraction_gives_the_same_radial_and_circumferential_strain(ring):
    scale = 0.8  # forward: p -> 0.8 p, so E = (0.8^2 - 1) / 2 in every direction
    radial, circumferential = strain_of(lambda p: p / scale, ring)
    assert radial == pytest.approx(-0.18, abs=1e-3)
    assert circumferential == pytest.approx(-0.18, abs=1e-3)


def test_pure_radial_contraction_shortens_circumferentially_without_radial_strain(ring):
    inward_mm = 3.0  # forward r -> r - 3 mm: every point moves straight towards the centre, the wall keeps its width
    labels, affine, plane, basis = ring

    def backward(p: np.ndarray) -> np.ndarray:
        r = np.linalg.norm(p, axis=-1, keepdims=True)
        return p * (r + inward_mm) / np.maximum(r, 1e-9)

    radial, circumferential = strain_of(backward, ring)
    r_ed = np.linalg.norm(plane[labels == 2], axis=-1)
    expected_circumferential = np.mean(0.5 * (((r_ed - inward_mm) / r_ed) ** 2 - 1.0))  # hoop stretch r' / r
    assert expected_circumferential < -0.1
    assert abs(radial) < 0.005  # dr'/dr = 1
    assert circumferential == pytest.approx(expected_circumferential, abs=0.005)


def test_pure_twist_of_base_against_apex_is_free_of_in_plane_strain(ring):
    # each slice turns rigidly about the LV axis by its own angle (-15 to +15 degrees from apex to base): the
    # twist's shear is through-plane, so the short-axis strain is zero
    labels, affine, plane, basis = ring
    angles = np.radians(np.linspace(-15.0, 15.0, SHAPE[2]))
    inverse = np.stack(
        [np.stack([np.cos(angles), np.sin(angles)], -1), np.stack([-np.sin(angles), np.cos(angles)], -1)], -2
    )  # (Z, 2, 2): the inverse rotation of each slice

    radial, circumferential = strain_of(lambda p: np.einsum("kab,xykb->xyka", inverse, p), ring)
    assert abs(radial) < 2e-3
    assert abs(circumferential) < 2e-3


def test_rigid_rotation_is_strain_free(ring):
    angle = math.radians(25.0)  # rigid rotation of every slice: large, so a small-strain formula would not give 0
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])  # the inverse
    radial, circumferential = strain_of(lambda p: p @ rotation.T, ring)
    assert abs(radial) < 2e-3
    assert abs(circumferential) < 2e-3


def test_area_preserving_wall_thickening_gives_the_analytic_radial_and_circumferential_strain(ring):
    shrink = 120.0  # forward r -> sqrt(r^2 - 120): the cavity shrinks, the wall keeps its area and thickens
    labels, affine, plane, basis = ring

    def backward(p: np.ndarray) -> np.ndarray:
        r = np.linalg.norm(p, axis=-1, keepdims=True)
        return p * np.sqrt(r**2 + shrink) / np.maximum(r, 1e-9)

    radial, circumferential = strain_of(backward, ring)
    r_ed = np.linalg.norm(plane[labels == 2], axis=-1)
    r_frame = np.sqrt(r_ed**2 - shrink)
    expected_radial = np.mean(0.5 * ((r_ed / r_frame) ** 2 - 1.0))  # dr'/dr = r / r'
    expected_circumferential = np.mean(0.5 * ((r_frame / r_ed) ** 2 - 1.0))
    assert expected_radial > 0.15 and expected_circumferential < -0.1
    assert radial == pytest.approx(expected_radial, abs=0.01)
    assert circumferential == pytest.approx(expected_circumferential, abs=0.005)


def test_green_lagrange_of_a_rotation_is_zero_and_of_a_stretch_is_half_of_stretch_squared_minus_one():
    angle = 0.7
    rotation = np.array([[[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]])
    assert np.abs(green_lagrange(rotation)).max() < 1e-12
    stretch = np.array([[[1.3, 0.0], [0.0, 0.9]]])
    np.testing.assert_allclose(green_lagrange(stretch)[0], np.diag([0.5 * (1.3**2 - 1), 0.5 * (0.9**2 - 1)]))
