"""DICOM index and loader, against SimpleITK (independent reference) on real and generated data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from sitk_ref import assert_volume_equals_sitk, read_with_sitk

from hu_roi.errors import SeriesProblemError
from hu_roi.io import index_folder, load_series, read_header, slice_indices_at
from hu_roi.volume import Volume

# ---------------------------------------------------------------------------------------
# Real data from ../shared/real_ct: series count, problems, pixels equal to SimpleITK
# ---------------------------------------------------------------------------------------
REAL_CASES = {
    # folder: (n_series, problems, measurable, n_slices)
    "siemens_biograph_mct_thoracolumbar": (1, ("empty-uid",), True, 20),
    "ge_discovery_mi_water_phantom": (1, (), True, 2),
    "robustness/nema_ct1_small_ge": (1, ("single-slice",), True, 1),
    "robustness/pancreas_ct_flipped_j2k": (1, ("single-slice",), True, 1),
    "robustness/mr_siemens_not_ct_transfer_syntaxes": (
        1,
        ("not-ct", "duplicate-positions", "no-rescale"),
        False,
        4,
    ),
    "robustness/siemens_gantry_tilt_headers_noise_pixels": (1, ("gantry-tilt",), False, 4),
    "robustness/nema_enhanced_ct_multiframe": (1, ("not-ct", "multiframe", "no-rescale"), False, 1),
}


@pytest.mark.realct
@pytest.mark.parametrize("folder", sorted(REAL_CASES))
def test_real_ct_index(real_ct: Path, folder: str) -> None:
    n_series, problems, measurable, n_slices = REAL_CASES[folder]
    res = index_folder(real_ct / folder)
    assert len(res.series) == n_series
    s = res.series[0]
    assert s.problems == problems
    assert (not s.refusing_problems) is measurable
    assert s.n_slices == n_slices
    # PROVENANCE.md (and label NIfTI files) are skipped with a reason, never grouped.
    assert all(f.reason.startswith("not a DICOM file") for f in res.skipped)
    assert {Path(f.path).name for f in res.skipped} >= {"PROVENANCE.md"}


@pytest.mark.realct
@pytest.mark.parametrize(
    "folder",
    [
        "siemens_biograph_mct_thoracolumbar/dicom",
        "ge_discovery_mi_water_phantom",
        "robustness/nema_ct1_small_ge/CT_small.dcm",
        "robustness/pancreas_ct_flipped_j2k/explicit_VR-UN.dcm",
    ],
)
def test_real_ct_pixels_equal_simpleitk(real_ct: Path, folder: str) -> None:
    res = index_folder(real_ct / folder)
    (s,) = res.series
    vol = load_series(s)
    assert vol.hu.dtype == np.int16  # every one of these is exact in int16
    assert_volume_equals_sitk(vol, read_with_sitk(real_ct / folder))


@pytest.mark.realct
def test_real_ct_whole_tree(real_ct: Path) -> None:
    """Every folder at once: 7 DICOM series; the NIfTI folder gives none (skipped files)."""
    res = index_folder(real_ct)
    assert len(res.series) == len(REAL_CASES)
    nifti = [f for f in res.skipped if f.path.endswith(".nii.gz")]
    assert len(nifti) == 4 and all("not a DICOM file" in f.reason for f in nifti)
    assert index_folder(real_ct / "totalseg_abdomen_ct_nifti").series == []


@pytest.mark.realct
def test_real_siemens_facts(real_ct: Path) -> None:
    (s,) = index_folder(real_ct / "siemens_biograph_mct_thoracolumbar").series
    assert s.series_instance_uid == "" and s.series_key.startswith("nouid-")
    assert (s.manufacturer, s.model, s.kvp) == ("SIEMENS", "Biograph40_mCT 4R", 120.0)
    assert s.kernel == "Br38f\\3"
    assert s.slice_spacing_mm == pytest.approx(2.0)  # from positions, not SliceThickness (3)
    assert s.slice_thickness_mm == 3.0
    assert s.contrast_agent == "APPLIED"
    # the key is stable from one scan to the next
    (again,) = index_folder(real_ct / "siemens_biograph_mct_thoracolumbar").series
    assert again.series_key == s.series_key


@pytest.mark.realct
def test_real_refusals(real_ct: Path) -> None:
    mr = index_folder(real_ct / "robustness/mr_siemens_not_ct_transfer_syntaxes").series[0]
    with pytest.raises(SeriesProblemError, match="not-ct"):
        load_series(mr)
    with pytest.raises(SeriesProblemError, match="not-ct"):  # never loadable, even accepted
        load_series(mr, accept=["not-ct", "duplicate-positions"])
    mf = index_folder(real_ct / "robustness/nema_enhanced_ct_multiframe").series[0]
    with pytest.raises(SeriesProblemError, match="multiframe"):
        load_series(mf, accept=["multiframe", "not-ct"])


@pytest.mark.realct
def test_real_gantry_tilt_refused_then_accepted(real_ct: Path) -> None:
    folder = real_ct / "robustness/siemens_gantry_tilt_headers_noise_pixels"
    (s,) = index_folder(folder).series
    with pytest.raises(SeriesProblemError, match=r"gantry-tilt.*accept"):
        load_series(s)
    vol = load_series(s, accept=["gantry-tilt"])
    img = read_with_sitk(folder)
    arr = __import__("SimpleITK").GetArrayFromImage(img)
    np.testing.assert_array_equal(arr, vol.hu)
    # each slice keeps its own ImagePositionPatient (the stacking is oblique)
    ipps = [pydicom.dcmread(sl.path).ImagePositionPatient for sl in s.slices]
    np.testing.assert_allclose(vol.slice_origins_lps_mm, np.array(ipps, dtype=float))


# ---------------------------------------------------------------------------------------
# Generated tricky series
# ---------------------------------------------------------------------------------------
def _phantom(n: int = 6, rows: int = 20, cols: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1500, size=(n, rows, cols)).astype(np.float64)


def _load_only(folder: Path, **kw) -> Volume:
    res = index_folder(folder)
    assert len(res.series) == 1, [s.series_key for s in res.series]
    return load_series(res.series[0], **kw)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("feet_first", dict(slice_positions=[0, -2, -4, -6, -8, -10], patient_position="FFS")),
        ("reversed_files", dict(reverse_order=True, file_names="sequential")),
        ("random_names", dict(file_names="random")),
        ("anisotropic", dict(pixel_spacing=(0.5, 1.25), slice_positions=[0, 3, 6, 9, 12, 15])),
        ("intercept_8192", dict(intercept=-8192, unsigned=True)),
        ("unsigned_12bit", dict(bits_stored=12, unsigned=True, intercept=-1024)),
        ("signed_16bit", dict(unsigned=False, intercept=0)),
        ("oblique_rows_flipped", dict(orientation=(1, 0, 0, 0, -1, 0))),
        ("sagittal", dict(orientation=(0, 1, 0, 0, 0, -1))),
        ("slope_half", dict(slope=0.5, intercept=-1024)),
        ("rle", dict(transfer_syntax=RLELossless)),
        ("jpegls", dict(transfer_syntax=JPEGLSLossless)),
    ],
)
def test_generated_series_equal_simpleitk(tmp_path: Path, name: str, kwargs: dict) -> None:
    hu = _phantom()
    if name == "unsigned_12bit":
        hu = np.clip(hu, -1024, 3071)
    if name == "slope_half":
        hu = np.round(hu * 2) / 2
    write_ct_series(tmp_path, hu, **kwargs)
    vol = _load_only(tmp_path)
    assert vol.hu.dtype == (np.float32 if name == "slope_half" else np.int16)
    assert_volume_equals_sitk(vol, read_with_sitk(tmp_path))
    # and the values are the HU we wrote, in position order along the normal
    order = np.argsort(np.asarray(kwargs.get("slice_positions", np.arange(hu.shape[0]))))
    np.testing.assert_array_equal(vol.hu, hu[order])
    assert np.all(np.diff(vol.slice_positions_mm) > 0)


def test_generated_j2k_equal_simpleitk(tmp_path: Path) -> None:
    hu = _phantom(n=3, rows=40, cols=36)
    write_ct_series(tmp_path, hu, transfer_syntax=JPEG2000Lossless)
    vol = _load_only(tmp_path)
    assert_volume_equals_sitk(vol, read_with_sitk(tmp_path))


def test_two_series_in_one_folder_and_non_dicom_files(tmp_path: Path) -> None:
    a, b = _phantom(seed=1), _phantom(n=4, seed=2)
    write_ct_series(tmp_path, a, series_uid="1.2.826.0.1.3680043.10.1234.9.1")
    write_ct_series(tmp_path, b, series_uid="1.2.826.0.1.3680043.10.1234.9.2")
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    (tmp_path / "empty").write_bytes(b"")
    res = index_folder(tmp_path)
    assert [s.n_slices for s in res.series] == [6, 4]
    assert len(res.skipped) == 3
    assert all("not a DICOM file" in f.reason or "cannot read" in f.reason for f in res.skipped)
    for s, hu in zip(res.series, (a, b), strict=True):
        np.testing.assert_array_equal(load_series(s).hu, hu)


def test_gap_is_named_and_refused(tmp_path: Path) -> None:
    write_ct_series(tmp_path, _phantom(), slice_positions=[0, 2, 4, 6, 10, 12])
    (s,) = index_folder(tmp_path).series
    assert s.problems == ("missing-slices",)
    with pytest.raises(SeriesProblemError, match="missing-slices"):
        load_series(s)
    assert load_series(s, accept=["missing-slices"]).shape[0] == 6


def test_non_uniform_spacing_is_named_but_loads(tmp_path: Path) -> None:
    write_ct_series(tmp_path, _phantom(), slice_positions=[0, 2, 4, 6.3, 8.3, 10.3])
    (s,) = index_folder(tmp_path).series
    assert s.problems == ("non-uniform-spacing",)
    assert load_series(s).shape[0] == 6


def test_duplicate_positions(tmp_path: Path) -> None:
    hu = _phantom()
    write_ct_series(tmp_path, hu, slice_positions=[0, 2, 4, 4, 6, 8])
    (s,) = index_folder(tmp_path).series
    assert "duplicate-positions" in s.problems
    with pytest.raises(SeriesProblemError, match="duplicate-positions"):
        load_series(s)
    vol = load_series(s, accept=["duplicate-positions"])
    assert vol.shape[0] == 5
    assert len(set(np.round(vol.slice_positions_mm, 3))) == 5


def test_tilt_without_tag_is_detected(tmp_path: Path) -> None:
    # Axial images whose origins move in y from slice to slice: stacking is oblique.
    n = 5
    origins = np.array([[0.0, 0.5 * k, 2.0 * k] for k in range(n)])
    write_ct_series(tmp_path, _phantom(n=n), origins=origins)
    (s,) = index_folder(tmp_path).series
    assert s.problems == ("gantry-tilt",)
    assert s.gantry_tilt_deg is None or s.gantry_tilt_deg == 0


def test_small_in_plane_shift_is_not_a_tilt(tmp_path: Path) -> None:
    origins = np.array([[0.0, 0.001 * k, 2.0 * k] for k in range(5)])
    write_ct_series(tmp_path, _phantom(n=5), origins=origins)
    (s,) = index_folder(tmp_path).series
    assert s.problems == ()


def test_mixed_orientation(tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.10.1234.9.77"
    write_ct_series(tmp_path / "a", _phantom(n=3), series_uid=uid)
    write_ct_series(tmp_path / "b", _phantom(n=1), series_uid=uid, orientation=(1, 0, 0, 0, 0, -1))
    (s,) = index_folder(tmp_path).series
    assert "mixed-orientation" in s.problems
    with pytest.raises(SeriesProblemError):
        load_series(s)


def test_localizer_and_no_rescale(tmp_path: Path) -> None:
    write_ct_series(
        tmp_path / "loc",
        _phantom(n=1),
        orientation=(1, 0, 0, 0, 0, -1),
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    write_ct_series(
        tmp_path / "norescale",
        _phantom(n=3) + 1024,
        intercept=0,
        extra_tags={"RescaleSlope": None, "RescaleIntercept": None},
    )
    res = index_folder(tmp_path)
    by_folder = {Path(s.folder).name: s for s in res.series}
    assert "localizer" in by_folder["loc"].problems
    with pytest.raises(SeriesProblemError, match="localizer"):
        load_series(by_folder["loc"])
    assert by_folder["norescale"].problems == ("no-rescale",)
    np.testing.assert_array_equal(load_series(by_folder["norescale"]).hu, _phantom(n=3) + 1024)


def test_empty_series_uid_fallback_groups_by_folder(tmp_path: Path) -> None:
    for name, seed in (("x", 3), ("y", 4)):
        write_ct_series(
            tmp_path / name, _phantom(n=3, seed=seed), extra_tags={"SeriesInstanceUID": ""}
        )
    res = index_folder(tmp_path)
    assert len(res.series) == 2
    assert all(s.problems == ("empty-uid",) for s in res.series)
    assert len({s.series_key for s in res.series}) == 2


def test_partial_load_reads_only_requested_slices(tmp_path: Path) -> None:
    hu = _phantom(n=8)
    write_ct_series(tmp_path, hu, slice_positions=np.arange(8) * 2.5)
    (s,) = index_folder(tmp_path).series
    # Make two slices we do not ask for unreadable: a partial load must not touch them.
    for i in (0, 7):
        Path(s.slices[i].path).write_bytes(b"garbage")
    vol = load_series(s, slices=[5, 2])
    np.testing.assert_array_equal(vol.hu, hu[[2, 5]])
    np.testing.assert_array_equal(vol.slice_indices, [2, 5])
    assert vol.slice_spacing_mm == pytest.approx(2.5)
    assert slice_indices_at(s, [5.1, 12.4, 0.2]) == [0, 2, 5]
    with pytest.raises(IndexError):
        load_series(s, slices=[8])


def test_int16_overflow_falls_back_to_float32(tmp_path: Path) -> None:
    hu = np.full((2, 8, 8), 40.0)
    hu[0, 0, 0] = 40000  # unsigned 16-bit with intercept 0: beyond int16
    write_ct_series(tmp_path, hu, intercept=0, unsigned=True)
    vol = _load_only(tmp_path)
    assert vol.hu.dtype == np.float32
    np.testing.assert_array_equal(vol.hu, hu)


def test_read_header_never_touches_pixels(tmp_path: Path) -> None:
    (p,) = write_ct_series(tmp_path, _phantom(n=1))
    # Chop the pixel data: the header is still readable, the load is not.
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    h = read_header(p)
    assert (h.rows, h.columns) == (20, 24)
    (s,) = index_folder(tmp_path).series
    with pytest.raises(OSError, match="pixel data"):
        load_series(s)


def test_volume_affine_maps_index_to_lps(tmp_path: Path) -> None:
    write_ct_series(
        tmp_path,
        _phantom(n=4),
        pixel_spacing=(0.7, 0.9),
        slice_positions=[0, -3, -6, -9],
        origin=(-100, -120, 50),
    )
    vol = _load_only(tmp_path)
    a = vol.affine
    for k, r, c in [(0, 0, 0), (3, 19, 23), (1, 5, 7)]:
        np.testing.assert_allclose((a @ [k, r, c, 1])[:3], vol.pixel_to_lps(k, r, c), atol=1e-9)
    rc = vol.lps_to_plane(vol.pixel_to_lps(2, 5, 7), 2)
    np.testing.assert_allclose(rc, [5, 7, 0], atol=1e-9)


def test_import_hu_roi_loads_no_gui() -> None:
    code = (
        "import sys, hu_roi, hu_roi.io, hu_roi.cli, hu_roi.volume, hu_roi.series;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'napari','qtpy','PyQt5','PyQt6','PySide2','PySide6','vispy','magicgui'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_index(tmp_path: Path) -> None:
    write_ct_series(
        tmp_path / "d", _phantom(n=3), extra_tags={"PatientName": "DOE^JANE", "PatientID": "P77"}
    )
    (tmp_path / "d" / "readme.txt").write_text("x")
    out = tmp_path / "index.csv"
    env = dict(os.environ, HU_ROI_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "index", str(tmp_path / "d"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text.splitlines()[0].startswith("series_key,series_instance_uid,patient_id,study_date")
    assert "P77" in text and "DOE" not in text  # no patient name in the output
    skipped = (tmp_path / "index.skipped.csv").read_text()
    assert "readme.txt" in skipped and "not a DICOM file" in skipped
    assert "1 file skipped" in r.stderr and "1 files" not in r.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "index", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no such file or folder" in bad.stderr


@pytest.mark.parametrize("implicit", [False, True])
def test_file_without_preamble_is_read(tmp_path: Path, implicit: bool) -> None:
    """Old ACR-NEMA style files: no 128-byte preamble, no file meta, data set only."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    hu = _phantom(n=1)
    (p,) = write_ct_series(tmp_path, hu)
    ds = pydicom.dcmread(p)
    with open(tmp_path / "raw", "wb") as fh:
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, implicit
        write_dataset(out, ds)
    p.unlink()
    vol = _load_only(tmp_path)
    np.testing.assert_array_equal(vol.hu, hu)
