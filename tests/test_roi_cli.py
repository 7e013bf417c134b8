"""``hu-roi roi validate`` and ``hu-roi roi new``, and the wrong-frame (RAS) hint.

References: voxel positions from DICOM's formula ``IPP + c·ΔC·X + r·ΔR·Y`` written out
here with the test's own geometry; ROI means from numpy (``math.fsum`` over the pixels
whose centre lies within the radius), independent of hu_roi.rasterize.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.roi import load_roiset

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROIS = REPO / "sample_dicom" / "rois" / "sample.rois.json"
SIEMENS = REPO.parent / "shared" / "real_ct" / "siemens_biograph_mct_thoracolumbar" / "dicom"
UID = "1.2.826.0.1.3680043.10.1234.77.1"

#: A sagittal series with anisotropic pixels and an offset origin (none of the axes trivial).
GEOM = {
    "pixel_spacing": (0.7, 0.9),  # (ΔR, ΔC)
    "orientation": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # X = +y (P), Y = -z (down)
    "origin": (12.0, -40.0, 30.0),
    "slice_positions": [0.0, 1.5, 3.0, 4.5, 6.0],
}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    hu = rng.integers(-200, 900, size=(5, 40, 48)).astype(float)
    folder = tmp_path_factory.mktemp("sag") / "dicom"
    write_ct_series(folder, hu, series_uid=UID, **GEOM)
    return folder, hu


def _lps(k: int, r: int, c: int) -> np.ndarray:
    """DICOM formula with the geometry the test wrote (normal = X × Y)."""
    x = np.array(GEOM["orientation"][:3])
    y = np.array(GEOM["orientation"][3:])
    n = np.cross(x, y)
    dr, dc = GEOM["pixel_spacing"]
    ipp = np.array(GEOM["origin"]) + GEOM["slice_positions"][k] * n
    return ipp + c * dc * x + r * dr * y


def _numpy_mean(hu: np.ndarray, k: int, row: int, col: int, radius: float) -> tuple[float, int]:
    dr, dc = GEOM["pixel_spacing"]
    rr, cc = np.mgrid[0 : hu.shape[1], 0 : hu.shape[2]]
    inside = ((rr - row) * dr) ** 2 + ((cc - col) * dc) ** 2 <= radius**2
    vals = hu[k][inside]
    return math.fsum(vals.tolist()) / vals.size, int(vals.size)


def _new(dicom: Path, out: Path, *extra: str, voxel=("2", "20", "24")):
    return run_main(
        "roi", "new", "--dicom", str(dicom), "--series", UID, "--voxel", *voxel,
        "--radius", "4", "--timepoint", "T0", "--out", str(out), *extra,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# roi validate
# ---------------------------------------------------------------------------------------
def test_validate_sample_one_line_exit_0() -> None:
    proc = run_main("roi", "validate", str(SAMPLE_ROIS))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{SAMPLE_ROIS}: valid, 72 ROIs"), proc.stdout
    assert "3 patients" in lines[0] and "reader 'R1'" in lines[0]


def test_validate_folder_and_flags_unusable_targets(tmp_path) -> None:
    d = json.loads(SAMPLE_ROIS.read_text())
    d["rois"][0]["level"] = None  # a target without level: longitudinal cannot use it
    (tmp_path / "a.rois.json").write_text(json.dumps(d))
    (tmp_path / "b.rois.json").write_text(SAMPLE_ROIS.read_text())
    proc = run_main("roi", "validate", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "1 target ROI without level or timepoint" in lines[0]
    assert "without level" not in lines[1]


def test_validate_refuses_like_measure(tmp_path) -> None:
    d = json.loads(SAMPLE_ROIS.read_text())
    d["rois"][3]["Level"] = d["rois"][3].pop("level")
    bad = tmp_path / "bad.rois.json"
    bad.write_text(json.dumps(d))
    rid = d["rois"][3]["roi_id"]
    proc = run_main("roi", "validate", str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi roi: error: "), proc.stderr
    assert str(bad) in lines[0] and f"ROI {rid!r}" in lines[0] and "'Level'" in lines[0]
    # measure gives the same reason
    m = run_main("measure", "--dicom", str(tmp_path), "--rois", str(bad))
    assert m.returncode == 2
    assert m.stderr.strip().split(": error: ", 1)[1] == lines[0].split(": error: ", 1)[1]


def test_validate_missing_file(tmp_path) -> None:
    proc = run_main("roi", "validate", str(tmp_path / "nope.rois.json"))
    assert proc.returncode == 2 and "nope.rois.json" in proc.stderr


def test_measure_help_points_to_the_format_page() -> None:
    proc = run_main("measure", "--help")
    assert "docs/roi_format.md" in " ".join(proc.stdout.split())
    assert (REPO / "docs" / "roi_format.md").is_file()


# ---------------------------------------------------------------------------------------
# roi new
# ---------------------------------------------------------------------------------------
def test_new_creates_then_appends_in_lps(tmp_path, series) -> None:
    dicom, _ = series
    out = tmp_path / "sub" / "x.rois.json"
    proc = _new(dicom, out, "--level", "L1", "--patient-id", "TEST", "--irradiated",
                "--lesion-type", "mixed", "--reader", "R2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "added ROI 'TEST-T0-L1'" in proc.stdout and "(1 ROI)" in proc.stdout
    proc = _new(
        dicom, out, "--kind", "reference-air", "--patient-id", "TEST", voxel=("0", "1", "1")
    )
    assert proc.returncode == 0, proc.stderr
    assert "(2 ROIs)" in proc.stdout
    rs = load_roiset(out)
    assert [r.roi_id for r in rs.rois] == ["TEST-T0-L1", "TEST-T0-reference-air"]
    first, air = rs.rois
    assert np.allclose(first.shape.center_mm, _lps(2, 20, 24), atol=1e-9)
    assert np.allclose(air.shape.center_mm, _lps(0, 1, 1), atol=1e-9)
    assert first.series_instance_uid == UID and first.shape.radius_mm == 4.0
    assert (first.level, first.timepoint, first.irradiated, first.lesion_type) == (
        "L1",
        "T0",
        True,
        "mixed",
    )
    assert air.level is None and air.kind == "reference-air"
    assert rs.reader == "R2" and len(rs.history) == 2  # one history entry per save
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.rois.json"]  # no temp left


def _new_line(dicom: Path, out: Path, *extra: str, line=("0", "5", "6", "4", "30", "40")):
    return run_main(
        "roi", "new", "--dicom", str(dicom), "--series", UID, "--line", *line,
        "--timepoint", "T0", "--patient-id", "TEST", "--out", str(out), *extra,
    )  # fmt: skip


def test_new_line_is_a_height_measured_as_its_length(tmp_path, series) -> None:
    dicom, _ = series
    out = tmp_path / "h.rois.json"
    proc = _new_line(dicom, out, "--level", "L1", "--kind", "height-anterior")
    assert proc.returncode == 0, proc.stderr
    (roi,) = load_roiset(out).rois
    a, b = _lps(0, 5, 6), _lps(4, 30, 40)  # DICOM's formula, written out in this test
    assert roi.roi_id == "TEST-T0-L1-height-anterior" and roi.kind == "height-anterior"
    assert np.allclose(roi.shape.points_mm, [a, b], atol=1e-9)
    want = float(np.linalg.norm(b - a))
    assert f"line, {want:.2f} mm" in proc.stdout
    csv_out = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(dicom), "--rois", str(out), "--out", str(csv_out),
                    "--no-cache", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = list(csv.DictReader(csv_out.open()))
    assert float(row["length_mm"]) == pytest.approx(want, abs=1e-9) and row["qc_status"] == "pass"


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--level", "L1"], "--line needs --kind height-anterior"),
        (["--kind", "height-middle"], "--level is required for a height"),
        (["--level", "L1", "--kind", "height-middle", "--radius", "3"], "--radius is for a circle"),
    ],
)
def test_new_line_refuses_bad_arguments(tmp_path, series, extra, pattern) -> None:
    dicom, _ = series
    out = tmp_path / "h.rois.json"
    proc = _new_line(dicom, out, *extra)
    assert proc.returncode == 2 and pattern in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    proc = _new_line(dicom, out, "--level", "L1", "--kind", "height-middle",
                     line=("0", "5", "6", "9", "30", "40"))  # fmt: skip
    assert proc.returncode == 2 and "--line 0 5 6 9 30 40" in proc.stderr and not out.exists()


def test_new_roi_measures_the_numpy_mean(tmp_path, series) -> None:
    """The new ROI, measured by hu-roi measure, holds the voxel and gives numpy's mean."""
    from hu_roi.batch import measure_batch

    dicom, hu = series
    out = tmp_path / "x.rois.json"
    assert (
        _new(
            dicom, out, "--level", "L2", "--patient-id", "TEST", voxel=("3", "17", "30")
        ).returncode
        == 0
    )
    ref_mean, ref_n = _numpy_mean(hu, 3, 17, 30, 4.0)
    (m,) = measure_batch(dicom, out).measurements
    assert m.slice_index == 3 and m.n_voxels == ref_n
    assert m.mean_hu == ref_mean
    csv_out = tmp_path / "m.csv"
    proc = run_main(
        "measure", "--dicom", str(dicom), "--rois", str(out), "--out", str(csv_out), "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    with open(csv_out, newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert int(row["slice_index"]) == 3 and int(row["n_voxels"]) == ref_n
    assert abs(float(row["mean_hu"]) - ref_mean) < 1e-3


@pytest.mark.parametrize(
    ("extra", "voxel", "pattern"),
    [
        (
            ["--level", "L1", "--patient-id", "TEST"],
            ("5", "0", "0"),
            "slice 5 is outside the series",
        ),
        (["--level", "L1", "--patient-id", "TEST"], ("0", "40", "0"), "row 40 is outside"),
        (["--level", "L1", "--patient-id", "TEST"], ("0", "0", "-1"), "column -1 is outside"),
        (["--patient-id", "TEST"], ("0", "0", "0"), "--level is required"),
        (["--level", "L1"], ("0", "0", "0"), "differs from the series' PatientID"),
        (
            ["--level", "L1", "--patient-id", "TEST", "--kind", "bone"],
            ("0", "0", "0"),
            "field 'kind'",
        ),
        (["--level", "L1", "--patient-id", "T\nEST"], ("0", "0", "0"), "control character"),
        (
            ["--level", "L1", "--patient-id", "TEST", "--radius", "nan"],
            ("0", "0", "0"),
            "--radius must be",
        ),
    ],
)
def test_new_refuses_bad_arguments(tmp_path, series, extra, voxel, pattern) -> None:
    dicom, _ = series
    out = tmp_path / "x.rois.json"
    # dicom_factory writes PatientID "TEST"; a different --patient-id is the mismatch case
    if "--patient-id" not in extra:
        extra = [*extra, "--patient-id", "OTHER"]
    proc = _new(dicom, out, *extra, voxel=voxel)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi roi: error: ") and pattern in lines[0], (
        proc.stderr
    )
    assert not out.exists()


def test_new_patient_id_defaults_to_the_series(tmp_path, series) -> None:
    dicom, _ = series
    out = tmp_path / "x.rois.json"
    assert _new(dicom, out, "--level", "L3").returncode == 0
    assert load_roiset(out).rois[0].patient_id == "TEST"


def test_new_refuses_duplicate_id_and_unknown_series(tmp_path, series) -> None:
    dicom, _ = series
    out = tmp_path / "x.rois.json"
    assert _new(dicom, out, "--level", "L1", "--patient-id", "TEST").returncode == 0
    before = out.read_bytes()
    proc = _new(dicom, out, "--level", "L1", "--patient-id", "TEST")
    assert proc.returncode == 2 and "already holds ROI 'TEST-T0-L1'" in proc.stderr
    proc = run_main(
        "roi", "new", "--dicom", str(dicom), "--series", "1.2.3.4", "--voxel", "0", "0", "0",
        "--radius", "4", "--timepoint", "T0", "--level", "L2", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 2 and "no series '1.2.3.4'" in proc.stderr and UID in proc.stderr
    assert out.read_bytes() == before, "a refused append leaves the file as it was"


def test_new_refuses_an_invalid_existing_file(tmp_path, series) -> None:
    dicom, _ = series
    out = tmp_path / "x.rois.json"
    out.write_text('{"format": "hu-roi.roiset", "version": 1, "rois": [], "Rois": []}')
    before = out.read_bytes()
    proc = _new(dicom, out, "--level", "L1")
    assert proc.returncode == 2 and "'Rois'" in proc.stderr
    assert out.read_bytes() == before


@pytest.mark.realct
def test_new_on_real_siemens_measures_numpy_mean(tmp_path) -> None:
    """Real anonymised export (empty UIDs and PatientID): place, measure, compare."""
    if not SIEMENS.is_dir():
        pytest.skip("../shared/real_ct/siemens_biograph_mct_thoracolumbar not available")
    from hu_roi.batch import measure_batch
    from hu_roi.io import index_folder, load_series
    from hu_roi.rasterize import rasterize_roi

    (info,) = [s for s in index_folder(SIEMENS).series if s.n_slices > 1]
    k, row, col, radius = 10, 328, 244, 8.0  # middle of the T12 body (TotalSegmentator label)
    out = tmp_path / "s.rois.json"
    proc = run_main(
        "roi", "new", "--dicom", str(SIEMENS), "--series", info.series_key,
        "--voxel", str(k), str(row), str(col), "--radius", str(radius), "--level", "T12",
        "--timepoint", "T0", "--patient-id", "S01", "--no-cache", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (roi,) = load_roiset(out).rois
    # the worked example of docs/roi_format.md, to the last digit
    assert roi.shape.center_mm == (-11.23046875, -117.19921875, -784.5)
    doc = (REPO / "docs" / "roi_format.md").read_text(encoding="utf-8")
    assert "[-11.23046875, -117.19921875, -784.5]" in doc and "--voxel 10 328 244" in doc
    vol = load_series(info)
    # the voxel is inside the ROI's mask, on its slice
    mask = rasterize_roi(vol, roi).to_dense(vol.hu.shape)
    assert mask[k, row, col] and mask.sum() == mask[k].sum()
    # numpy: pixels of slice k whose centre is within the radius of voxel (row, col)
    dr, dc = info.pixel_spacing_mm
    rr, cc = np.mgrid[0 : info.rows, 0 : info.columns]
    inside = ((rr - row) * dr) ** 2 + ((cc - col) * dc) ** 2 <= radius**2
    vals = vol.hu[k][inside].astype(np.float64)
    ref = math.fsum(vals.tolist()) / vals.size
    (m,) = measure_batch(SIEMENS, out).measurements
    assert m.qc_status != "fail", m.qc_flags
    assert (m.slice_index, m.n_voxels, m.mean_hu) == (k, vals.size, ref)
    csv_out = tmp_path / "m.csv"
    proc = run_main(
        "measure", "--dicom", str(SIEMENS), "--rois", str(out), "--out", str(csv_out), "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    with open(csv_out, newline="", encoding="utf-8") as fh:
        (row_,) = list(csv.DictReader(fh))
    assert row_["patient_id"] == "S01" and int(row_["slice_index"]) == k
    assert abs(float(row_["mean_hu"]) - ref) < 1e-3


# ---------------------------------------------------------------------------------------
# wrong-frame hint
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def axial(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ax") / "dicom"
    write_ct_series(
        folder, np.full((4, 64, 64), 40.0), pixel_spacing=(0.8, 0.8), origin=(-100.0, -150.0, -50.0),
        series_uid=UID + ".2",
    )  # fmt: skip
    return folder


def _rois_file(tmp_path: Path, uid: str, centres: dict[str, list[float]]) -> Path:
    rois = [
        {"roi_id": rid, "patient_id": "TEST", "timepoint": "T0", "series_instance_uid": uid,
         "level": "L1", "kind": "target", "shape": {"type": "circle", "center_mm": c, "radius_mm": 3}}
        for rid, c in centres.items()
    ]  # fmt: skip
    p = tmp_path / "f.rois.json"
    p.write_text(json.dumps({"format": "hu-roi.roiset", "version": 1, "rois": rois}))
    return p


def test_ras_coordinates_get_the_hint(tmp_path, axial, series) -> None:
    from hu_roi.batch import measure_batch

    lps = [-75.0, -125.0, -48.0]  # inside the axial image
    f = _rois_file(
        tmp_path,
        UID + ".2",
        {"lps": lps, "ras": [75.0, 125.0, -48.0], "far": [500.0, 500.0, -48.0]},
    )
    rows = {m.roi_id: m for m in measure_batch(axial, f).measurements}
    assert rows["lps"].qc_status != "fail" and rows["lps"].mean_hu == 40.0
    for rid in ("ras", "far"):
        assert rows[rid].qc_flags[0] == "roi-outside-image"
        assert (
            "image extent (LPS, voxel centres): x -100.0 … -49.6, y -150.0 … -99.6, z -50.0 … -47.0 mm"
            in rows[rid].detail
        )
    assert "look like RAS (3D Slicer)" in rows["ras"].detail
    assert "RAS" not in rows["far"].detail
    # sagittal: negating x moves the plane off the slice stack (fails before loading)
    centre = _lps(2, 20, 24)
    g = _rois_file(tmp_path, UID, {"lps": list(centre), "ras": [-centre[0], -centre[1], centre[2]]})
    rows = {m.roi_id: m for m in measure_batch(series[0], g).measurements}
    assert rows["lps"].qc_status != "fail"
    assert rows["ras"].qc_flags[0] == "roi-outside-image" and "look like RAS" in rows["ras"].detail
