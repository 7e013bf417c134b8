"""SimpleITK as the independent reference for geometry and pixels (tests only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def read_with_sitk(folder_or_file: Path, series_uid: str | None = None) -> sitk.Image:
    """Read a series the way a SimpleITK user would (GDCM sorts the files by position)."""
    p = Path(folder_or_file)
    if p.is_file():
        return sitk.ReadImage(str(p))
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(p))
    uid = series_uid if series_uid is not None else ids[0]
    files = reader.GetGDCMSeriesFileNames(str(p), uid)
    reader.SetFileNames(files)
    return reader.Execute()


def assert_volume_equals_sitk(vol, img: sitk.Image) -> None:
    """HU array, origin, spacing and direction of a hu-roi Volume equal SimpleITK's."""
    arr = sitk.GetArrayFromImage(img)  # (z, y, x) = (slice, row, column)
    assert arr.shape == vol.hu.shape
    np.testing.assert_array_equal(arr.astype(np.float64), vol.hu.astype(np.float64))
    np.testing.assert_allclose(img.GetOrigin(), vol.slice_origins_lps_mm[0], atol=1e-4)
    sx, sy, sz = img.GetSpacing()
    np.testing.assert_allclose((sx, sy), vol.spacing_xyz_mm[:2], rtol=1e-6)
    if vol.shape[0] > 1:
        np.testing.assert_allclose(sz, vol.spacing_xyz_mm[2], rtol=1e-4)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(d[:, 0], vol.row_dir, atol=1e-5)
    np.testing.assert_allclose(d[:, 1], vol.col_dir, atol=1e-5)
