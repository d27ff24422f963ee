"""Every .nii.gz the bundle writes: standard gzip, reproducible, the image unchanged, ISA-L when installed."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.compressed_nifti import COMPRESSOR, gzip_compress, nifti_file_bytes, write_nifti


def _image() -> nib.Nifti1Image:
    data = np.random.default_rng(0).normal(size=(20, 18, 5)).astype(np.float32)
    affine = np.diag([1.8, 1.8, 10.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    return nib.Nifti1Image(data, affine)


def test_isal_compresses_when_installed() -> None:
    # requirements.txt pins isal: the fast compressor is the one in use
    assert COMPRESSOR == "isal"


def test_gz_file_is_standard_gzip_of_the_plain_nifti_and_reproducible(tmp_path: Path) -> None:
    image = _image()
    first = write_nifti(image, tmp_path / "a.nii.gz")
    second = write_nifti(image, tmp_path / "b.nii.gz", atomic=False)
    assert first.read_bytes() == second.read_bytes()  # no time stamp, no file name
    assert gzip.decompress(first.read_bytes()) == image.to_bytes()
    loaded = nib.load(str(first))
    np.testing.assert_array_equal(loaded.get_fdata(dtype=np.float32), image.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(loaded.affine, image.affine, atol=1e-5)  # the header stores float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # no temporary file left


def test_plain_nii_is_not_compressed(tmp_path: Path) -> None:
    image = _image()
    assert nifti_file_bytes(image, tmp_path / "a.nii") == image.to_bytes()
    assert gzip.decompress(gzip_compress(b"abc" * 1000)) == b"abc" * 1000
