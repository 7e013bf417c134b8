"""Line ROIs (vertebral heights): ROI file, ``hu-roi measure`` and ``hu-roi longitudinal``.

References: series written with pydicom (tests/dicom_factory.py) whose geometry is given
here, so the image extent (voxel centres ± half a voxel) and the lengths (Euclidean
distances of points chosen on a 3-4-5 / 5-12-13 grid) are known exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.analysis.schemas import LONGITUDINAL_SCHEMA, MEASUREMENT_SCHEMA, read_measurements
from hu_roi.batch import measure_batch
from hu_roi.errors import RoiFormatError
from hu_roi.export import columns, measurement_row
from hu_roi.io import index_folder, load_series
from hu_roi.longitudinal import longitudinal_table, read_measurement_targets
from hu_roi.measure import measure_line, measure_roi
from hu_roi.roi import HEIGHT_KINDS, Roi, load_roiset, save_roiset, schema_path

UID = "1.2.826.0.1.3680043.10.1234.77"
# grid of the phantom: 10 slices 2 mm apart from z = -50, 32 × 32 pixels of 0.8 (rows, y)
# × 0.6 mm (columns, x) from (-10, -20): voxel centres x -10 … 8.6, y -20 … 4.8,
# z -50 … -32; the image block reaches half a voxel further: x -10.3 … 8.9,
# y -20.4 … 5.2, z -51 … -31 mm.
SPACING = (0.8, 0.6)
ORIGIN = (-10.0, -20.0, -50.0)


def _series(folder: Path, uid: str = UID, **tags) -> None:
    hu = np.full((10, 32, 32), 200.0)
    write_ct_series(
        folder,
        hu,
        pixel_spacing=SPACING,
        slice_positions=[2.0 * k for k in range(10)],
        origin=ORIGIN,
        series_uid=uid,
        extra_tags={"PatientID": "P01", **tags},
    )


def _line(rid: str, a, b, *, kind: str = "height-anterior", tp: str = "T0", uid: str = UID):
    return {
        "roi_id": rid,
        "patient_id": "P01",
        "timepoint": tp,
        "series_instance_uid": uid,
        "level": "L1",
        "irradiated": True,
        "lesion_type": "osteolytic",
        "kind": kind,
        "shape": {"type": "line", "points_mm": [list(a), list(b)]},
    }


def _circle(rid: str, tp: str = "T0", uid: str = UID) -> dict:
    return {
        "roi_id": rid,
        "patient_id": "P01",
        "timepoint": tp,
        "series_instance_uid": uid,
        "level": "L1",
        "irradiated": True,
        "lesion_type": "osteolytic",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": [0.0, -6.0, -40.0], "radius_mm": 5.0},
    }


def _write_rois(path: Path, rois: list[dict]) -> Path:
    path.write_text(json.dumps({"format": "hu-roi.roiset", "reader": "R1", "rois": rois}))
    return path


# ----------------------------------------------------------------------------- ROI file
def test_line_roi_loads_round_trips_and_matches_the_schema(tmp_path: Path) -> None:
    f = _write_rois(
        tmp_path / "h.rois.json",
        [
            _line("a", (0, 0, -48), (3, 4, -48)),
            _line("m", (0, 0, -48), (0, 5, -36), kind="height-middle"),
        ],
    )
    rs = load_roiset(f)
    a, m = rs.rois
    assert a.shape.type == "line" and a.shape.is_line and not a.shape.is_2d
    assert a.shape.length_mm == 5.0  # 3-4-5
    assert m.shape.length_mm == 13.0  # 5-12-13
    saved = save_roiset(rs, tmp_path / "copy.rois.json")
    again = load_roiset(saved.path)
    assert [r.to_dict() for r in again.rois] == [r.to_dict() for r in rs.rois]
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    v = jsonschema.Draft202012Validator(schema)
    assert list(v.iter_errors(json.loads(Path(saved.path).read_text()))) == []


@pytest.mark.parametrize(
    ("roi", "match"),
    [
        (
            {**_line("x", (0, 0, 0), (1, 0, 0)), "kind": "target"},
            r"field 'kind': a line ROI measures a vertebral height",
        ),
        (
            {**_circle("x"), "kind": "height-posterior"},
            r"field 'shape.type': an ROI of kind 'height-posterior' is a height and needs a line",
        ),
        (
            {**_line("x", (0, 0, 0), (1, 0, 0)), "kind": "height-lateral"},
            r"field 'kind': must be target, .*height-anterior",
        ),
        (_line("x", (1, 2, 3), (1, 2, 3)), r"the same point"),
        (
            {
                **_line("x", (0, 0, 0), (1, 0, 0)),
                "shape": {"type": "line", "points_mm": [[0, 0, 0]]},
            },
            r"a line needs exactly 2 points",
        ),
        (
            {
                **_line("x", (0, 0, 0), (1, 0, 0)),
                "shape": {"type": "line", "points_mm": [[0, 0, 0], [1, 0, 0], [2, 0, 0]]},
            },
            r"a line needs exactly 2 points",
        ),
        (
            {
                **_line("x", (0, 0, 0), (1, 0, 0)),
                "shape": {"type": "line", "points_mm": [[0, 0], [1, 0, 0]]},
            },
            r"must be a list of 3 numbers",
        ),
        (
            {**_line("x", (0, 0, 0), (1, 0, 0)), "shape": {"type": "line"}},
            r"field 'shape.points_mm': missing",
        ),
        (_line("x", (-1e308, 0, 0), (1e308, 0, 0)), r"too far apart"),
    ],
)
def test_bad_line_rois_are_refused_with_the_reason(tmp_path: Path, roi: dict, match: str) -> None:
    f = _write_rois(tmp_path / "bad.rois.json", [roi])
    with pytest.raises(RoiFormatError, match=match):
        load_roiset(f)


def test_schema_refuses_what_the_loader_refuses() -> None:
    v = jsonschema.Draft202012Validator(json.loads(schema_path().read_text(encoding="utf-8")))

    def doc(r: dict) -> dict:
        return {"format": "hu-roi.roiset", "rois": [r]}

    assert list(v.iter_errors(doc(_line("a", (0, 0, 0), (1, 0, 0))))) == []
    assert list(v.iter_errors(doc({**_line("a", (0, 0, 0), (1, 0, 0)), "kind": "target"})))
    no_kind = _line("a", (0, 0, 0), (1, 0, 0))
    del no_kind["kind"]  # a line without kind would be a target
    assert list(v.iter_errors(doc(no_kind)))
    assert list(v.iter_errors(doc({**_circle("c"), "kind": "height-middle"})))
    three = _line("a", (0, 0, 0), (1, 0, 0))
    three["shape"]["points_mm"].append([2, 0, 0])
    assert list(v.iter_errors(doc(three)))


def test_roi_validate_accepts_and_counts_heights(tmp_path: Path) -> None:
    f = _write_rois(
        tmp_path / "h.rois.json",
        [_circle("c"), *(_line(k, (0, 0, -48), (0, 0, -36), kind=k) for k in HEIGHT_KINDS)],
    )
    proc = run_main("roi", "validate", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "valid, 4 ROIs (1 target, 0 reference, 0 phantom, 3 height lines)" in proc.stdout


# ----------------------------------------------------------------------------- measure
def test_measure_writes_length_and_fails_points_outside_the_image(tmp_path: Path) -> None:
    _series(tmp_path / "dicom", ContrastBolusAgent="IOPAMIDOL")
    rois = [
        _circle("P01-T0-L1"),
        _line("ant", (0, 0, -48), (0, 0, -36)),  # 12 mm along z
        _line("mid", (0, 0, -48), (3, 4, -48), kind="height-middle"),  # 5 mm
        # the image block's corner: x 8.9, y 5.2, z -31 (voxel centres + half a voxel)
        _line("post", (-10.3, -20.4, -51.0), (8.9, 5.2, -31.0), kind="height-posterior"),
        _line("out-z", (0, 0, -48), (0, 0, -30.9), tp="T1"),  # 0.1 mm beyond the last slice
        _line("out-x", (8.95, 0, -40), (0, 0, -40), tp="T2"),  # 0.05 mm beyond the columns
        _line("out-y", (0, -20.5, -40), (0, 0, -40), tp="T3"),
    ]
    f = _write_rois(tmp_path / "h.rois.json", rois)
    ms = {m.roi_id: m for m in measure_batch(tmp_path / "dicom", f).measurements}
    assert ms["ant"].length_mm == 12.0 and ms["mid"].length_mm == 5.0
    assert ms["post"].length_mm == pytest.approx(math.sqrt(19.2**2 + 25.6**2 + 20.0**2), abs=1e-12)
    for rid in ("ant", "mid", "post"):
        m = ms[rid]
        assert m.qc_status == "pass" and m.qc_flags == (), (rid, m.qc_flags, m.detail)
        assert m.n_voxels == 0 and math.isnan(m.mean_hu) and math.isnan(m.sd_hu)
        assert m.slice_index is None and m.area_mm2 is None
    # the scan's HU flags (contrast) stay on the area ROI, not on the lengths
    assert "contrast-agent" in ms["P01-T0-L1"].qc_flags
    assert ms["P01-T0-L1"].length_mm is None
    for rid, where in (
        ("out-z", "point 2 (0.0, 0.0, -30.9) mm lies 0.10 mm beyond the last slice"),
        ("out-x", "point 1 (8.9, 0.0, -40.0) mm lies 0.05 mm outside the columns"),
        ("out-y", "point 1 (0.0, -20.5, -40.0) mm lies 0.10 mm outside the rows"),
    ):
        m = ms[rid]
        assert m.qc_status == "fail" and m.qc_flags == ("line-outside-image",), (rid, m.qc_flags)
        assert m.length_mm is None
        assert where in m.detail and "image extent" in m.detail, m.detail


def test_measure_csv_has_length_column_and_longitudinal_carries_heights(tmp_path: Path) -> None:
    _series(tmp_path / "t0", UID + ".0")
    _series(tmp_path / "t1", UID + ".1")
    rois = [
        _circle("c0", "T0", UID + ".0"),
        _circle("c1", "T1", UID + ".1"),
        _line("a0", (0, 0, -48), (0, 0, -36), tp="T0", uid=UID + ".0"),  # 12 mm
        _line("a1", (0, 0, -48), (0, 0, -39), tp="T1", uid=UID + ".1"),  # 9 mm: -25 %
        _line("p0", (0, 0, -48), (0, 5, -36), kind="height-posterior", uid=UID + ".0"),  # 13
        _line("p1", (0, 0, -48), (0, 0, -30), kind="height-posterior", tp="T1", uid=UID + ".1"),
    ]
    f = _write_rois(tmp_path / "h.rois.json", rois)
    out = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(tmp_path), "--rois", str(f), "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    header = out.read_text().splitlines()[0].split(",")
    assert header[:28] == list(MEASUREMENT_SCHEMA.names)[:28]  # contract columns, then length_mm
    assert "dose_mean_gy" in header  # the other declared column, among the extras
    assert header == list(columns())
    by = {r["roi_id"]: r for r in rows}
    assert float(by["a0"]["length_mm"]) == 12.0 and float(by["a1"]["length_mm"]) == 9.0
    assert by["a0"]["mean_hu"] == "" and by["a0"]["sd_hu"] == "" and by["a0"]["qc_status"] == "pass"
    assert by["c0"]["length_mm"] == "" and float(by["c0"]["mean_hu"]) == 200.0
    assert by["p1"]["qc_status"] == "fail" and by["p1"]["length_mm"] == ""
    # the analysis' reader types it
    m = read_measurements(out)
    assert m.set_index("roi_id").loc["a1", "length_mm"] == 9.0
    assert math.isnan(m.set_index("roi_id").loc["c0", "length_mm"])
    # longitudinal: HU rows as before, one row per height kind with lengths and changes
    lout = tmp_path / "long.csv"
    proc = run_main("longitudinal", str(out), "--out", str(lout), "-q")
    assert proc.returncode == 0, proc.stderr
    t = LONGITUDINAL_SCHEMA.read_csv(lout).set_index("kind")
    assert list(t.index) == ["height-anterior", "height-posterior", "target"]
    ant, post, tgt = t.loc["height-anterior"], t.loc["height-posterior"], t.loc["target"]
    assert (ant["length_mm_T0"], ant["length_mm_T1"]) == (12.0, 9.0)
    assert ant["delta_length_mm_T1"] == -3.0 and ant["pct_delta_length_T1"] == -25.0
    assert math.isnan(ant["hu_T0"]) and math.isnan(ant["delta_hu_T1"])
    assert ant["flags"] == "" or pd_isna(ant["flags"])
    assert post["length_mm_T0"] == 13.0 and math.isnan(post["length_mm_T1"])
    assert "qc-fail-T1" in post["flags"]
    assert tgt["hu_T0"] == 200.0 and tgt["hu_T1"] == 200.0 and math.isnan(tgt["length_mm_T0"])
    proc = run_main("longitudinal", str(out))
    assert "3 patient × level rows from 2 target ROIs and 4 heights" in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[0].split(",") == list(LONGITUDINAL_SCHEMA.names)
    # the same table in memory
    mem = longitudinal_table(read_measurement_targets(out)).set_index("kind")
    assert mem.loc["height-anterior", "pct_delta_length_T1"] == -25.0


def pd_isna(v: object) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_duplicate_heights_are_an_error(tmp_path: Path) -> None:
    _series(tmp_path / "d")
    f = _write_rois(
        tmp_path / "h.rois.json",
        [_line("a", (0, 0, -48), (0, 0, -36)), _line("b", (0, 0, -48), (0, 0, -38))],
    )
    out = tmp_path / "m.csv"
    assert (
        run_main(
            "measure", "--dicom", str(tmp_path / "d"), "--rois", str(f), "--out", str(out), "-q"
        ).returncode
        == 0
    )
    proc = run_main("longitudinal", str(out))
    assert proc.returncode == 2
    assert "more than one usable height" in proc.stderr and "roi_id 'a', 'b'" in proc.stderr


def test_viewer_path_measure_roi_gives_the_batch_row(tmp_path: Path) -> None:
    _series(tmp_path / "d")
    info = index_folder(tmp_path / "d").series[0]
    vol = load_series(info, slices=[0])  # a partial load: the extent is the series'
    r = Roi.from_dict(_line("a", (0, 0, -48), (0, 0, -31.0)))
    m = measure_roi(vol, r)
    assert m.length_mm == 17.0 and m.qc_status == "pass"
    assert measure_line(info, r) == m
    row = measurement_row(m)
    assert row["length_mm"] == "17.0" and row["mean_hu"] == "" and row["n_voxels"] == "0"
    # without the series header, the loaded slice is the image: z -49 … -51 only
    from dataclasses import replace

    alone = measure_roi(replace(vol, info=None), r)
    assert alone.qc_status == "fail" and "beyond the last slice" in alone.detail
