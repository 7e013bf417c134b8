"""``hu-roi measure --rtdose/--prescription-gy/--labels`` (issue 15, items 5, 7, 8 and 9).

A synthetic CT with two vertebra-like blocks (L1, L2; the phantom of
test_rois_from_labels) and RTDOSE files written here with known dose patterns: uniform
blocks, a linear gradient (trilinear interpolation reproduces a linear dose exactly, so
every voxel's dose is known in closed form) and a multi-frame grid stored in decreasing
order with absolute GridFrameOffsetVector.  The expected statistics come from an
independent brute-force enumeration of the circle's voxel centres.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series
from test_rois_from_labels import (
    DZ,
    LEVELS,
    ORIGIN,
    REAL,
    SP,
    N,
    _phantom,
    _write_nifti,
    _write_seg,
)
from test_rtdose import write_rtdose

from hu_roi.roi import Roi, RoiSet, save_roiset

FOR_T0 = "1.2.826.0.1.3680043.10.1234.77.1"
FOR_T2 = "1.2.826.0.1.3680043.10.1234.77.2"
# dose grid: x -40..40, y -30..60, z 90..145 (LPS, mm), 2.5 mm
DX = 2.5
GX = np.arange(-40.0, 40.0 + 1e-9, DX)
GY = np.arange(-30.0, 60.0 + 1e-9, DX)
GZ = np.arange(90.0, 145.0 + 1e-9, DX)
# ROI centres on voxel centres (x = -27 + 0.75 c, y = -20 + 0.75 r, z = 100 + 2 k)
L1_XYZ = (0.0, 1.0, 110.0)  # column 36, row 28, slice 5
L2_XYZ = (-0.75, 2.5, 130.0)  # column 35, row 30, slice 15
RADIUS = 5.0


def _dose_file(
    path: Path,
    f,
    *,
    z=GZ,
    frame_of_reference: str = FOR_T0,
    patient_id: str = "P07",
    summation: str = "PLAN",
    decreasing: bool = False,
) -> Path:
    """An RTDOSE of dose ``f(x, y, z)`` (Gy) on the grid GX × GY × z."""
    zz = z[::-1] if decreasing else z
    x, y = np.meshgrid(GX, GY)  # (rows = y, columns = x)
    d = np.stack([f(x, y, np.full_like(x, zi)) for zi in zz])
    offsets = list(zz) if decreasing else list(zz - zz[0])  # absolute or relative form
    write_rtdose(path, d, origin=(GX[0], GY[0], zz[0]), spacing=(DX, DX), offsets=offsets,
                 scaling=1e-3)  # fmt: skip
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PatientID = patient_id
    ds.DoseSummationType = summation
    ds.save_as(path)
    return path


def _roi(rid: str, xyz, level: str, *, timepoint="T0", irradiated=None, uid=None) -> Roi:
    d = {
        "roi_id": rid,
        "patient_id": "P07",
        "timepoint": timepoint,
        "level": level,
        "kind": "target",
        "irradiated": irradiated,
        "shape": {"type": "circle", "center_mm": list(xyz), "radius_mm": RADIUS},
    }
    if uid:
        d["series_instance_uid"] = uid
    return Roi.from_dict(d)


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dose")
    hu, lab = _phantom()
    for tp, for_uid in (("T0", FOR_T0), ("T2", FOR_T2)):
        write_ct_series(
            root / tp, hu, pixel_spacing=SP, slice_positions=np.arange(N) * DZ, origin=ORIGIN,
            series_uid=f"1.2.826.0.1.3680043.10.1234.78.{tp[1]}", frame_of_reference_uid=for_uid,
            extra_tags={"PatientID": "P07", "StudyDate": {"T0": "20200101", "T2": "20200403"}[tp]},
        )  # fmt: skip
    return {"root": root, "hu": hu, "lab": lab}


def _uid(tp: str) -> str:
    return f"1.2.826.0.1.3680043.10.1234.78.{tp[1]}"


def _rois(tmp_path: Path, *rois: Roi) -> Path:
    f = tmp_path / "r.rois.json"
    save_roiset(RoiSet(rois=tuple(rois), reader="R1"), f, overwrite=True)
    return f


def _measure(case, tmp_path, rois: Path, *extra: str, dicom: Path | None = None):
    out = tmp_path / "m.csv"
    res = run_main("measure", "--dicom", str(dicom or case["root"] / "T0"), "--rois", str(rois),
                   "--out", str(out), "--no-cache", "-q", *extra)  # fmt: skip
    rows = {}
    if out.exists():
        with out.open(newline="") as fh:
            rows = {r["roi_id"]: r for r in csv.DictReader(fh)}
    return res, rows


def _circle_points(xyz) -> np.ndarray:
    """LPS centres of the circle's voxels, by brute force over the whole slice."""
    cx, cy, cz = xyz
    r, c = np.indices((100, 72))
    x = ORIGIN[0] + c * SP[1]
    y = ORIGIN[1] + r * SP[0]
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= RADIUS**2 + 1e-9
    return np.column_stack([x[inside], y[inside], np.full(inside.sum(), cz)])


def _flags(row: dict) -> set[str]:
    """The row's flags but the phantom's own: its field of view is too small for the
    automatic air check (info)."""
    return set(filter(None, row["qc_flags"].split(";"))) - {"cal-air-auto-unavailable"}


# ---------------------------------------------------------------------------------- dose
def test_uniform_blocks(case, tmp_path) -> None:
    dose = _dose_file(tmp_path / "d.dcm", lambda x, y, z: np.where(z <= 118, 30.0, 2.0))
    rois = _rois(tmp_path, _roi("a", L1_XYZ, "L1"), _roi("b", L2_XYZ, "L2"))
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose))
    assert res.returncode == 0, res.stderr
    for rid, gy in (("a", 30.0), ("b", 2.0)):
        r = rows[rid]
        assert (float(r["dose_mean_gy"]), float(r["dose_min_gy"]), float(r["dose_max_gy"])) == (
            gy, gy, gy,
        )  # fmt: skip
        assert r["qc_status"] == "pass", r["qc_flags"]
    meta = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert meta["settings"]["rtdose"][0]["path"] == str(dose.resolve())


def _linear(x, y, z):
    return 10.0 + 0.1 * x + 0.2 * y + 0.05 * (z - 90.0)


def test_gradient_is_exact(case, tmp_path) -> None:
    # every grid value is a multiple of 0.125 Gy: stored exactly at DoseGridScaling 1e-3
    dose = _dose_file(tmp_path / "g.dcm", _linear)
    rois = _rois(tmp_path, _roi("a", L1_XYZ, "L1"), _roi("b", L2_XYZ, "L2"))
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose))
    assert res.returncode == 0, res.stderr
    for rid, xyz in (("a", L1_XYZ), ("b", L2_XYZ)):
        p = _circle_points(xyz)
        want = _linear(p[:, 0], p[:, 1], p[:, 2])
        r = rows[rid]
        assert int(r["n_voxels"]) == len(p)
        assert float(r["dose_mean_gy"]) == pytest.approx(want.mean(), abs=1e-9)
        assert float(r["dose_min_gy"]) == pytest.approx(want.min(), abs=1e-9)
        assert float(r["dose_max_gy"]) == pytest.approx(want.max(), abs=1e-9)
        assert want.max() - want.min() > 2.0  # a real gradient across the ROI


def test_multiframe_decreasing_absolute_offsets(case, tmp_path) -> None:
    # frames stored head to foot with GridFrameOffsetVector as positions along the normal
    dose = _dose_file(tmp_path / "m.dcm", _linear, decreasing=True)
    rois = _rois(tmp_path, _roi("a", L1_XYZ, "L1"), _roi("b", L2_XYZ, "L2"))
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose))
    assert res.returncode == 0, res.stderr
    for rid, xyz in (("a", L1_XYZ), ("b", L2_XYZ)):
        p = _circle_points(xyz)
        assert float(rows[rid]["dose_mean_gy"]) == pytest.approx(
            _linear(p[:, 0], p[:, 1], p[:, 2]).mean(), abs=1e-9
        )


def test_two_beam_doses_are_summed_and_plan_plus_beam_refused(case, tmp_path) -> None:
    a = _dose_file(tmp_path / "b1.dcm", lambda x, y, z: np.full_like(x, 12.5), summation="BEAM")
    b = _dose_file(tmp_path / "b2.dcm", lambda x, y, z: np.full_like(x, 7.5), summation="BEAM")
    rois = _rois(tmp_path, _roi("a", L1_XYZ, "L1"))
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(a), "--rtdose", str(b))
    assert res.returncode == 0, res.stderr
    assert float(rows["a"]["dose_mean_gy"]) == 20.0
    plan = _dose_file(tmp_path / "p.dcm", lambda x, y, z: np.full_like(x, 20.0))
    res, _ = _measure(case, tmp_path, rois, "--rtdose", str(a), "--rtdose", str(plan))
    assert res.returncode == 2 and "count the plan twice" in res.stderr
    res, _ = _measure(case, tmp_path, rois, "--rtdose", str(a), "--rtdose", str(a))
    assert res.returncode == 2 and "same RTDOSE" in res.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frame_of_reference": "1.2.3.999"}, "Frame of Reference mismatch"),
        ({"patient_id": "OTHER"}, "another patient"),
    ],
)
def test_dose_of_another_frame_or_patient_is_refused(case, tmp_path, change, message) -> None:
    dose = _dose_file(tmp_path / "x.dcm", _linear, **change)
    out = tmp_path / "m.csv"
    res, rows = _measure(case, tmp_path, _rois(tmp_path, _roi("a", L1_XYZ, "L1")),
                         "--rtdose", str(dose))  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("hu-roi measure: error:") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not rows


def test_roi_partly_outside_the_dose_grid(case, tmp_path) -> None:
    dose = _dose_file(tmp_path / "d.dcm", _linear, z=np.arange(90.0, 120.0 + 1e-9, DX))
    rois = _rois(tmp_path, _roi("a", L1_XYZ, "L1"), _roi("b", L2_XYZ, "L2"))
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose))
    assert res.returncode == 0, res.stderr
    assert rows["a"]["dose_mean_gy"] != "" and "dose-outside-grid" not in _flags(rows["a"])
    b = rows["b"]
    assert b["dose_mean_gy"] == b["dose_min_gy"] == b["dose_max_gy"] == ""
    assert "dose-outside-grid" in _flags(b) and b["qc_status"] == "warn"
    assert "outside the dose grid" in b["detail"]


def test_without_rtdose_the_dose_columns_are_empty(case, tmp_path) -> None:
    res, rows = _measure(case, tmp_path, _rois(tmp_path, _roi("a", L1_XYZ, "L1")))
    assert res.returncode == 0, res.stderr
    assert rows["a"]["dose_mean_gy"] == "" and rows["a"]["qc_status"] == "pass"


# --------------------------------------------------------------------------- prescription
def test_irradiated_from_dose(case, tmp_path) -> None:
    dose = _dose_file(tmp_path / "d.dcm", lambda x, y, z: np.where(z <= 118, 30.0, 2.0))
    rois = _rois(
        tmp_path,
        _roi("l1-empty", L1_XYZ, "L1", uid=_uid("T0")),  # no label: filled true
        _roi("l2-wrong", L2_XYZ, "L2", irradiated=True, uid=_uid("T0")),  # contradicts
        _roi("l1-agree", L1_XYZ, "L1", irradiated=True, uid=_uid("T0")),
        # a follow-up scan in another Frame of Reference: the level's verdict from T0
        _roi("l1-T2", L1_XYZ, "L1", timepoint="T2", uid=_uid("T2")),
    )
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose), "--prescription-gy", "30",
                         dicom=case["root"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    e = rows["l1-empty"]
    assert e["irradiated"] == "true" and "irradiated-from-dose" in _flags(e)
    assert e["qc_status"] == "pass"  # info only
    assert "30.00 Gy ≥ 15 Gy (50 % of 30 Gy)" in e["detail"]
    w = rows["l2-wrong"]
    assert w["irradiated"] == "true"  # the reader's label is kept ...
    assert "irradiated-mismatch" in _flags(w) and w["qc_status"] == "warn"  # ... and flagged
    assert "2.00 Gy < 15 Gy" in w["detail"]
    assert _flags(rows["l1-agree"]) == set()
    t2 = rows["l1-T2"]
    assert t2["dose_mean_gy"] == ""  # no dose in its Frame of Reference
    assert t2["irradiated"] == "true" and "irradiated-from-dose" in _flags(t2)
    assert "planning CT" in t2["detail"]
    # a higher threshold turns L1 (30 Gy) into not irradiated: the rule is really applied
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose), "--prescription-gy", "70",
                         dicom=case["root"])  # fmt: skip
    assert rows["l1-empty"]["irradiated"] == "false"
    assert "irradiated-mismatch" in _flags(rows["l1-agree"])
    assert "irradiated-mismatch" in _flags(rows["l2-wrong"])  # 2 Gy is still below


def test_prescription_needs_rtdose(case, tmp_path) -> None:
    res, rows = _measure(case, tmp_path, _rois(tmp_path, _roi("a", L1_XYZ, "L1")),
                         "--prescription-gy", "30")  # fmt: skip
    assert res.returncode == 2 and "--prescription-gy needs --rtdose" in res.stderr
    assert not rows


# ------------------------------------------------------------------------------- labels
def _label_rois(uid: str | None = None) -> tuple[Roi, ...]:
    return (
        _roi("in-l1", L1_XYZ, "L1", uid=uid),
        _roi("in-l2", L2_XYZ, "L2", uid=uid),
        _roi("says-l2", L1_XYZ, "L2", uid=uid),  # placed on L1, labelled L2
        _roi("leaky", (12.0, 1.0, 110.0), "L1", uid=uid),  # reaches out of L1's side
    )


def _check_label_rows(rows: dict) -> None:
    assert _flags(rows["in-l1"]) == set() and _flags(rows["in-l2"]) == set()
    s = rows["says-l2"]
    assert _flags(s) == {"level-mismatch"} and s["qc_status"] == "warn"
    assert "labelled L2 lies on L1" in s["detail"]
    leaky = rows["leaky"]
    assert "roi-outside-body" in _flags(leaky) and "level-mismatch" not in _flags(leaky)


def test_labels_flag_mismatch_and_outside(case, tmp_path) -> None:
    nii = _write_nifti(tmp_path / "seg.nii.gz", case["lab"], flip=1)
    rois = _rois(tmp_path, *_label_rois())
    res, rows = _measure(case, tmp_path, rois, "--labels", str(nii))
    assert res.returncode == 0, res.stderr
    _check_label_rows(rows)
    # the leaky ROI's share off the label, counted independently
    p = _circle_points((12.0, 1.0, 110.0))
    r = np.rint((p[:, 1] - ORIGIN[1]) / SP[0]).astype(int)
    c = np.rint((p[:, 0] - ORIGIN[0]) / SP[1]).astype(int)
    off = int(np.count_nonzero(case["lab"][5, r, c] != 31))
    assert off > 0.05 * len(p)
    assert f"{off} of {len(p)} voxels off it" in rows["leaky"]["detail"]


def test_labels_from_dicom_seg(case, tmp_path) -> None:
    seg = _write_seg(case["root"] / "T0", case["lab"], tmp_path / "seg.dcm",
                     {31: "vertebrae_L1", 30: "vertebrae_L2"})  # fmt: skip
    res, rows = _measure(case, tmp_path, _rois(tmp_path, *_label_rois()), "--labels", str(seg))
    assert res.returncode == 0, res.stderr
    _check_label_rows(rows)
    # a SEG of organs only: refused before anything is measured
    organs = _write_seg(case["root"] / "T0", case["lab"], tmp_path / "organs.dcm",
                        {31: "liver", 30: "spleen"})  # fmt: skip
    res, _ = _measure(case, tmp_path, _rois(tmp_path, *_label_rois()), "--labels", str(organs))
    assert res.returncode == 2 and "holds no vertebra segment" in res.stderr
    # the same SEG given for a measurement of the other series: refused
    res, _ = _measure(case, tmp_path, _rois(tmp_path, *_label_rois(_uid("T2"))),
                      "--labels", str(seg), dicom=case["root"])  # fmt: skip
    assert res.returncode == 2 and "belongs to another series" in res.stderr


def test_label_map_on_two_series_grids_must_be_named(case, tmp_path) -> None:
    nii = _write_nifti(tmp_path / "seg.nii.gz", case["lab"])
    rois = _rois(tmp_path, *_label_rois(_uid("T0")), _roi("t2", L1_XYZ, "L2", timepoint="T2",
                                                         uid=_uid("T2")))  # fmt: skip
    res, rows = _measure(case, tmp_path, rois, "--labels", str(nii), dicom=case["root"])
    assert res.returncode == 2 and "grid of 2 measured series" in res.stderr and not rows
    res, rows = _measure(case, tmp_path, rois, "--labels", f"{_uid('T0')}={nii}",
                         dicom=case["root"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    _check_label_rows(rows)
    assert _flags(rows["t2"]) == set()  # T2 has no label map: not checked


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda lab, p: _write_nifti(p, lab, shift_mm=(0.0, 0.0, 1.0)), "not aligned"),
        (lambda lab, p: _write_nifti(p, np.where(lab > 0, 5, 0).astype(np.uint8)),
         "holds no vertebra label"),
    ],
    ids=["shifted-1mm", "no-vertebra"],
)  # fmt: skip
def test_unusable_label_maps_are_refused(case, tmp_path, make, message) -> None:
    nii = make(case["lab"], tmp_path / "seg.nii.gz")
    out = tmp_path / "m.csv"
    res, _ = _measure(case, tmp_path, _rois(tmp_path, *_label_rois()), "--labels", str(nii))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("hu-roi measure: error: --labels:") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


def test_output_may_not_overwrite_the_dose(case, tmp_path) -> None:
    dose = _dose_file(tmp_path / "d.dcm", _linear)
    before = dose.read_bytes()
    res = run_main("measure", "--dicom", str(case["root"] / "T0"), "--rois",
                   str(_rois(tmp_path, _roi("a", L1_XYZ, "L1"))), "--rtdose", str(dose),
                   "--out", str(dose), "--no-cache", "-q")  # fmt: skip
    assert res.returncode == 2 and dose.read_bytes() == before


# ------------------------------------------------------------------------------ real data
SIEMENS = REAL / "siemens_biograph_mct_thoracolumbar"


@pytest.mark.skipif(not (SIEMENS / "labels").is_dir(), reason="real Siemens CT not present")
def test_real_siemens_proposal_passes_and_relabelled_is_a_mismatch(tmp_path) -> None:
    labels = SIEMENS / "labels" / "example_seg_dicom.nii.gz"
    prop = tmp_path / "p.rois.json"
    res = run_main("rois-from-labels", "--labels", str(labels), "--dicom", str(SIEMENS / "dicom"),
                   "--timepoint", "T0", "--patient-id", "S01", "--out", str(prop),
                   "--no-cache")  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(prop.read_text())
    moved = json.loads(json.dumps(data["rois"][0]))
    moved["roi_id"], moved["level"] = "relabelled", "T11"
    data["rois"].append(moved)
    rois = tmp_path / "r.rois.json"
    rois.write_text(json.dumps(data))
    out = tmp_path / "m.csv"
    res = run_main("measure", "--dicom", str(SIEMENS / "dicom"), "--rois", str(rois),
                   "--labels", str(labels), "--out", str(out), "--no-cache", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    with out.open(newline="") as fh:
        rows = {r["roi_id"]: r for r in csv.DictReader(fh)}
    t12 = rows[data["rois"][0]["roi_id"]]
    assert not {"level-mismatch", "roi-outside-body"} & _flags(t12)
    assert "level-mismatch" in _flags(rows["relabelled"])
    assert "labelled T11 lies on T12" in rows["relabelled"]["detail"]


def test_levels_table_matches_the_phantom() -> None:
    assert set(LEVELS) == {31, 30}


def test_disagreeing_dosed_rois_label_no_other_row(case, tmp_path) -> None:
    # two ROIs of L1 on the planning CT, one in the field and one in the low-dose part:
    # the level's verdict is ambiguous, so the follow-up row keeps its empty label
    dose = _dose_file(tmp_path / "d.dcm", lambda x, y, z: np.where(x <= 0, 30.0, 2.0))
    rois = _rois(
        tmp_path,
        _roi("right", (-8.0, 1.0, 110.0), "L1", uid=_uid("T0")),
        _roi("left", (9.0, 1.0, 110.0), "L1", uid=_uid("T0")),
        _roi("t2", L1_XYZ, "L1", timepoint="T2", uid=_uid("T2")),
    )
    res, rows = _measure(case, tmp_path, rois, "--rtdose", str(dose), "--prescription-gy", "30",
                         dicom=case["root"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert rows["right"]["irradiated"] == "true" and rows["left"]["irradiated"] == "false"
    assert rows["t2"]["irradiated"] == "" and _flags(rows["t2"]) == set()


def test_workers_give_the_same_dose_and_label_rows(case, tmp_path) -> None:
    dose = _dose_file(tmp_path / "g.dcm", _linear)
    nii = _write_nifti(tmp_path / "seg.nii.gz", case["lab"], flip=1)
    rois = _rois(tmp_path, *_label_rois(_uid("T0")), _roi("t2", L1_XYZ, "L1", timepoint="T2",
                                                         uid=_uid("T2")))  # fmt: skip
    args = ("--rtdose", str(dose), "--labels", f"{_uid('T0')}={nii}")
    res1, one = _measure(case, tmp_path, rois, *args, dicom=case["root"])
    res2, two = _measure(case, tmp_path, rois, *args, "--workers", "2", dicom=case["root"])
    assert res1.returncode == res2.returncode == 0, res2.stderr
    assert one == two
    _check_label_rows(two)
    assert two["in-l1"]["dose_mean_gy"] != ""
