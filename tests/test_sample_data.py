"""The committed synthetic sample cohort (sample_dicom/) and the test DICOM factory.

References used: pydicom (headers, pixels), SimpleITK/GDCM (series reading and geometry,
independent of our code), the phantom's known set values (ground_truth.csv), and an
independent re-rasterisation of the ROIs from the DICOM headers (not the generator's grid).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import (
    COMPRESSED_TRANSFER_SYNTAXES,
    SUPPORTED_TRANSFER_SYNTAXES,
    write_ct_series,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"
SCRIPT = REPO / "scripts" / "make_sample_dicom.py"

LEVELS = {f"C{i}" for i in range(1, 8)} | {f"T{i}" for i in range(1, 13)}
LEVELS |= {f"L{i}" for i in range(1, 6)} | {f"S{i}" for i in range(1, 6)}
KINDS = {"target", "reference-air", "reference-fat", "reference-muscle", "reference-water"}


@pytest.fixture(scope="module")
def gt() -> dict:
    return json.loads((SAMPLE / "ground_truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def gt_rows() -> list[dict[str, str]]:
    with open(SAMPLE / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def roiset() -> dict:
    return json.loads((SAMPLE / "rois" / "sample.rois.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def headers() -> dict[str, list[pydicom.Dataset]]:
    """All sample files read with pydicom, grouped by SeriesInstanceUID."""
    out: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted((SAMPLE / "dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path)
            ds.filename = str(path)
            out[ds.SeriesInstanceUID].append(ds)
    return out


def _hu_volume(datasets: list[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray, list]:
    """(HU (slices,rows,cols), z of each slice ascending, sorted datasets) via pydicom."""
    dss = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    return hu, z, dss


# ----------------------------------------------------------------------------- files


def test_layout_and_size(gt: dict) -> None:
    files = [p for p in (SAMPLE / "dicom").rglob("*") if p.is_file()]
    assert len(files) == 9 * 27 + 27 + 1  # 9 bone series, soft-kernel decoy, scout
    assert all(p.suffix == "" and len(p.name) == 16 for p in files)
    for pid in ("P01", "P02", "P03"):
        for tp in ("T0", "T2", "T3"):
            assert (SAMPLE / "dicom" / pid / tp).is_dir()
    listed = {s["folder"] + "/" + f["file"] for s in gt["series"] for f in s.get("files", [])}
    assert all((SAMPLE / f).is_file() for f in listed)
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 8 * 1024**2, f"sample_dicom is {total / 1024**2:.1f} MB"


def test_headers_with_pydicom(headers: dict, gt: dict) -> None:
    series = {s["series_instance_uid"]: s for s in gt["series"]}
    assert set(headers) == set(series)
    for uid, dss in headers.items():
        s = series[uid]
        assert len(dss) == s["n_slices"]
        for ds in dss:
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.SOPClassUID == pydicom.uid.CTImageStorage
            assert ds.Modality == "CT" and ds.Manufacturer == "SIEMENS"
            assert ds.ManufacturerModelName == "SOMATOM Sensation Open"
            assert ds.PatientID == s["patient_id"] and ds.StudyDate == s["study_date"]
            assert float(ds.KVP) == s["kvp"] and ds.ConvolutionKernel == s["kernel"]
            assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
        if s["role"] == "decoy-localizer":
            (ds,) = dss
            assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
            continue
        ds0 = dss[0]
        assert [float(v) for v in ds0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds0.SliceThickness) == 3.0 and ds0.PatientPosition == "HFS"
        assert list(ds0.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        z = sorted(float(d.ImagePositionPatient[2]) for d in dss)
        np.testing.assert_allclose(np.diff(z), 3.0)
        assert len({d.SOPInstanceUID for d in dss}) == len(dss)
        # InstanceNumber 1 is the top slice: ordering by it reverses the position order
        top = max(dss, key=lambda d: float(d.ImagePositionPatient[2]))
        assert int(top.InstanceNumber) == 1
    kvps = {(s["patient_id"], s["timepoint"]): s["kvp"] for s in gt["series"]}
    assert kvps[("P03", "T2")] == 100 and kvps[("P03", "T0")] == 120
    roles = sorted(s["role"] for s in gt["series"])
    assert roles.count("measure") == 9 and "decoy-soft-kernel" in roles


def test_padding_and_pixel_representation(headers: dict, gt: dict) -> None:
    for s in gt["series"]:
        if s["role"] != "measure":
            continue
        ds = headers[s["series_instance_uid"]][0]
        assert ds.PixelRepresentation == s["pixel_representation"]
        assert ds.BitsStored == s["bits_stored"]
        raw = ds.pixel_array
        assert ds.PixelPaddingValue == s["pixel_padding_value"]
        corner = raw[0, 0]  # outside the reconstruction circle
        assert corner == ds.PixelPaddingValue
        assert corner + float(ds.RescaleIntercept) == s["padding_hu"]
        inside = raw[raw.shape[0] // 2, raw.shape[1] // 2 - 10 : raw.shape[1] // 2 + 10]
        assert np.all(inside != ds.PixelPaddingValue)
    assert {s["pixel_representation"] for s in gt["series"] if "pixel_representation" in s} == {
        0,
        1,
    }


# ----------------------------------------------------------------------------- SimpleITK


@pytest.mark.parametrize(("pid", "tp"), [("P01", "T0"), ("P03", "T2")])
def test_simpleitk_core_hu(pid: str, tp: str, gt_rows: list[dict[str, str]]) -> None:
    """GDCM reads the series; HU inside each trabecular core match the set value."""
    rows = [r for r in gt_rows if (r["patient_id"], r["timepoint"]) == (pid, tp)]
    uid = rows[0]["series_instance_uid"]
    folder = SAMPLE / "dicom" / pid / tp
    reader = sitk.ImageSeriesReader()
    assert uid in reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img).astype(np.float64)  # (slice, row, col)
    assert arr.shape[0] == 27
    assert img.GetSpacing()[2] == pytest.approx(3.0)
    for r in rows:
        if r["kind"] != "target":
            continue
        cx, cy, rx, ry = (
            float(r[k]) for k in ("center_x_mm", "center_y_mm", "radius_x_mm", "radius_y_mm")
        )
        zs = np.arange(float(r["z_min_mm"]), float(r["z_max_mm"]) + 1e-6, 3.0)
        vals = []
        for z in zs:
            # voxels whose centre lies inside 70 % of the core ellipse, via SimpleITK's geometry
            k = img.TransformPhysicalPointToIndex((cx, cy, float(z)))[2]
            for dy in np.arange(-0.7 * ry, 0.7 * ry + 1e-6, 0.5):
                for dx in np.arange(-0.7 * rx, 0.7 * rx + 1e-6, 0.5):
                    if (dx / rx) ** 2 + (dy / ry) ** 2 <= 0.49:
                        i, j, _ = img.TransformPhysicalPointToIndex((cx + dx, cy + dy, float(z)))
                        vals.append((k, j, i))
        vals = sorted(set(vals))
        hu = np.array([arr[k, j, i] for k, j, i in vals])
        sd = float(r["noise_sd_hu"])
        assert abs(hu.mean() - float(r["hu_set"])) < 4 * sd / math.sqrt(hu.size) + 0.5, r["roi_id"]
        assert hu.std(ddof=1) == pytest.approx(sd, rel=0.3)
    if (pid, tp) == ("P03", "T2"):  # 100 kV: bone reads 5 % higher than at 120 kV
        irr = next(r for r in rows if r["irradiated"] == "True")
        assert float(irr["hu_set"]) == pytest.approx(1.05 * float(irr["hu_set_120kv"]))


# ----------------------------------------------------------------------------- ROIs


def test_roi_json_follows_design(roiset: dict, gt: dict) -> None:
    assert roiset["format"] == "hu-roi.roiset" and roiset["version"] == 1
    assert roiset["reader"] == "R1"
    rois = roiset["rois"]
    measure = {s["series_instance_uid"]: s for s in gt["series"] if s["role"] == "measure"}
    assert len({r["roi_id"] for r in rois}) == len(rois) == 72
    shapes = defaultdict(int)
    for r in rois:
        for key in ("roi_id", "patient_id", "timepoint", "series_instance_uid", "level",
                    "irradiated", "lesion_type", "kind", "shape"):  # fmt: skip
            assert key in r, (r["roi_id"], key)
        s = measure[r["series_instance_uid"]]
        assert (r["patient_id"], r["timepoint"]) == (s["patient_id"], s["timepoint"])
        assert r["timepoint"] in {"T0", "T1", "T2", "T3"}
        assert r["kind"] in KINDS or r["kind"].startswith("phantom-")
        if r["kind"] == "target":
            assert r["level"] in LEVELS and isinstance(r["irradiated"], bool)
            assert r["lesion_type"] in {"osteolytic", "osteoblastic", "mixed", "none"}
        else:
            assert r["level"] is None and r["lesion_type"] is None
        if r["kind"].startswith("phantom-"):
            assert isinstance(r["density_mg_cm3"], float)
        shape = r["shape"]
        shapes[shape["type"]] += 1
        t = shape["type"]
        assert t in {"circle", "ellipse", "polygon", "sphere"}
        if t in {"circle", "sphere"}:
            assert len(shape["center_mm"]) == 3 and shape["radius_mm"] > 0
        if t == "ellipse":
            assert len(shape["center_mm"]) == 3 and len(shape["radii_mm"]) == 2
        if t == "polygon":
            pts = np.asarray(shape["points_mm"], dtype=float)
            assert pts.shape[1] == 3 and len(pts) >= 3 and np.ptp(pts[:, 2]) == 0
        if t != "sphere":  # 2D shapes lie exactly on a slice centre
            z = shape["points_mm"][0][2] if t == "polygon" else shape["center_mm"][2]
            assert np.min(np.abs(np.asarray(s["z_ascending_mm"]) - z)) < 1e-9
    assert shapes["sphere"] == 1 and shapes["polygon"] == 1 and shapes["circle"] >= 3
    irradiated = {(r["patient_id"], r["level"]) for r in rois if r["irradiated"] is True}
    assert irradiated == {("P01", "L1"), ("P02", "T12"), ("P03", "L2")}


def _independent_mask(shape: dict, dss: list[pydicom.Dataset]) -> np.ndarray:
    """ROI voxels from the DICOM headers (IPP, PixelSpacing), per the rule of docs/roi_format.md."""
    n, rows, cols = len(dss), int(dss[0].Rows), int(dss[0].Columns)
    d_r, d_c = (float(v) for v in dss[0].PixelSpacing)
    mask = np.zeros((n, rows, cols), dtype=bool)
    z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    t = shape["type"]
    for k, ds in enumerate(dss):
        x0, y0, _ = (float(v) for v in ds.ImagePositionPatient)
        xs = x0 + d_c * np.arange(cols)[None, :]
        ys = y0 + d_r * np.arange(rows)[:, None]
        if t == "sphere":
            cx, cy, cz = shape["center_mm"]
            mask[k] = (xs - cx) ** 2 + (ys - cy) ** 2 + (z[k] - cz) ** 2 <= shape["radius_mm"] ** 2
            continue
        plane = shape["points_mm"][0][2] if t == "polygon" else shape["center_mm"][2]
        if k != int(np.argmin(np.abs(z - plane))):
            continue
        if t == "circle":
            cx, cy, _ = shape["center_mm"]
            mask[k] = (xs - cx) ** 2 + (ys - cy) ** 2 <= shape["radius_mm"] ** 2 + 1e-9
        elif t == "ellipse":
            cx, cy, _ = shape["center_mm"]
            a = math.radians(shape.get("angle_deg", 0.0))
            u = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
            v = -(xs - cx) * math.sin(a) + (ys - cy) * math.cos(a)
            rx, ry = shape["radii_mm"]
            mask[k] = (u / rx) ** 2 + (v / ry) ** 2 <= 1 + 1e-9
        else:
            from matplotlib.path import Path as MplPath

            poly = MplPath(np.asarray(shape["points_mm"])[:, :2])
            pts = np.column_stack([np.broadcast_to(xs, (rows, cols)).ravel(),
                                   np.broadcast_to(ys, (rows, cols)).ravel()])  # fmt: skip
            mask[k] = poly.contains_points(pts, radius=1e-6).reshape(rows, cols)
    return mask


def test_expected_roi_statistics(roiset: dict, gt_rows: list, headers: dict) -> None:
    """Ground-truth roi_* statistics equal a re-measurement from the files themselves."""
    by_id = {r["roi_id"]: r for r in gt_rows}
    volumes = {}
    for roi in roiset["rois"]:
        uid = roi["series_instance_uid"]
        if uid not in volumes:
            volumes[uid] = _hu_volume(headers[uid])
        hu, _, dss = volumes[uid]
        vals = hu[_independent_mask(roi["shape"], dss)]
        row = by_id[roi["roi_id"]]
        assert vals.size == int(row["roi_n_voxels"]), roi["roi_id"]
        assert vals.mean() == pytest.approx(float(row["roi_mean_hu"]), abs=1e-3)
        assert vals.std(ddof=1) == pytest.approx(float(row["roi_sd_hu"]), abs=1e-3)
        assert vals.min() == float(row["roi_min_hu"]) and vals.max() == float(row["roi_max_hu"])
        # homogeneous region: mean is the set value within noise
        sd = float(row["noise_sd_hu"])
        assert abs(vals.mean() - float(row["hu_set"])) < 4.5 * sd / math.sqrt(vals.size) + 1.0


def test_irradiated_level_rises(gt_rows: list) -> None:
    hu = {(r["patient_id"], r["level"], r["timepoint"]): float(r["hu_set_120kv"])
          for r in gt_rows if r["kind"] == "target"}  # fmt: skip
    for pid, level in (("P01", "L1"), ("P02", "T12"), ("P03", "L2")):
        rise = hu[(pid, level, "T3")] / hu[(pid, level, "T0")] - 1
        assert 0.2 <= rise <= 0.5


# ----------------------------------------------------------------------------- determinism


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def test_generator_is_deterministic_and_matches_committed(tmp_path: Path) -> None:
    out = tmp_path / "a"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, timeout=120)
    fresh = _digests(out)
    committed = _digests(SAMPLE)
    assert fresh == committed, "regenerate with scripts/make_sample_dicom.py and commit"


# ----------------------------------------------------------------------------- factory


@pytest.mark.parametrize("ts", SUPPORTED_TRANSFER_SYNTAXES, ids=lambda u: u.name)
@pytest.mark.parametrize(("unsigned", "bits", "intercept"), [(True, 12, -1024), (False, 16, -8192)])
def test_factory_roundtrip(tmp_path: Path, ts, unsigned: bool, bits: int, intercept: float):
    """Every syntax the factory claims round-trips exactly through pydicom and SimpleITK."""
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 2000, size=(3, 32, 34)).astype(np.float64)
    paths = write_ct_series(
        tmp_path, hu, pixel_spacing=(0.7, 0.5), slice_positions=[0.0, 2.5, 5.0],
        transfer_syntax=ts, unsigned=unsigned, bits_stored=bits, intercept=intercept,
        reverse_order=True, extra_tags={"KVP": 100},
    )  # fmt: skip
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert ds.file_meta.TransferSyntaxUID == ts and float(ds.KVP) == 100
        assert int(ds.InstanceNumber) == 3 - i
        np.testing.assert_array_equal(ds.pixel_array * 1.0 + intercept, hu[i])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), hu)
    np.testing.assert_allclose(img.GetSpacing(), (0.5, 0.7, 2.5))
    if ts in COMPRESSED_TRANSFER_SYNTAXES:
        assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID.is_compressed


def test_factory_geometry_options(tmp_path: Path) -> None:
    """Feet-first orientation, explicit origins (tilt), gaps and a rejected value range."""
    hu = np.zeros((3, 8, 8))
    orient = (-1, 0, 0, 0, 1, 0)  # FFS: row direction towards patient right
    origins = [[0, 0, 0], [0, 1.0, -2.0], [0, 2.0, -4.0]]  # tilted stack
    paths = write_ct_series(
        tmp_path / "ffs", hu, orientation=orient, origins=origins,
        patient_position="FFS", file_names="sequential",
    )  # fmt: skip
    assert [p.name for p in paths] == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]
    ds = pydicom.dcmread(paths[2])
    assert ds.PatientPosition == "FFS"
    assert [float(v) for v in ds.ImagePositionPatient] == [0, 2.0, -4.0]
    paths = write_ct_series(tmp_path / "gap", hu, slice_positions=[0, 1, 5])
    assert float(pydicom.dcmread(paths[2]).ImagePositionPatient[2]) == 5.0
    with pytest.raises(ValueError, match="outside"):
        write_ct_series(tmp_path / "bad", np.full((1, 4, 4), -2000.0), unsigned=True)
