"""ROI set files: validation, unknown-field round trip, atomic and conflict-safe saving,
edit history, and matching ROIs to series."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from hu_roi.errors import RoiConflictError, RoiFormatError
from hu_roi.roi import (
    Roi,
    RoiSet,
    find_roi_files,
    load_roiset,
    match_series,
    save_roiset,
)
from hu_roi.series import SeriesInfo, SliceRef

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "rois" / "sample.rois.json"

BASE = {
    "format": "hu-roi.roiset",
    "version": 1,
    "reader": "R1",
    "site": "Heidelberg",  # unknown top-level field
    "rois": [
        {
            "roi_id": "P01-T0-L3",
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": "1.2.3",
            "level": "L3",
            "irradiated": True,
            "lesion_type": "osteolytic",
            "kind": "target",
            "comment": "sclerotic rim avoided",  # unknown ROI field
            "shape": {
                "type": "ellipse",
                "center_mm": [1.5, -20.25, 100.0],
                "radii_mm": [10.0, 7.0],
                "angle_deg": 15.0,
                "drawn_on_slice": 42,  # unknown shape field
            },
        },
        {
            "roi_id": "P01-T0-air",
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": "1.2.3",
            "level": None,
            "irradiated": None,
            "lesion_type": None,
            "kind": "reference-air",
            "shape": {"type": "circle", "center_mm": [0, -150, 100], "radius_mm": 5},
        },
        {
            "roi_id": "P01-T0-rod",
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": "1.2.3",
            "level": None,
            "irradiated": None,
            "lesion_type": None,
            "kind": "phantom-k2hpo4-100",
            "density_mg_cm3": 100.0,
            "shape": {"type": "sphere", "center_mm": [0, 60, 100], "radius_mm": 4},
        },
        {
            "roi_id": "P01-T0-L4",
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": "1.2.3",
            "level": "L4",
            "irradiated": False,
            "lesion_type": "none",
            "kind": "target",
            "shape": {
                "type": "polygon",
                "points_mm": [[0, 0, 130], [10, 0, 130], [10, 8, 130], [0, 8, 130]],
            },
        },
    ],
}


def write(tmp_path: Path, d: dict, name="r.rois.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def test_round_trip_keeps_unknown_fields(tmp_path):
    p = write(tmp_path, BASE)
    rs = load_roiset(p)
    assert rs.reader == "R1" and len(rs.rois) == 4
    e = rs.get("P01-T0-L3")
    assert e.shape.radii_mm == (10.0, 7.0) and e.shape.angle_deg == 15.0
    assert rs.get("P01-T0-rod").density_mg_cm3 == 100.0
    saved = save_roiset(rs)
    back = json.loads(p.read_text())
    assert back["site"] == "Heidelberg"
    assert back["rois"][0]["comment"] == "sclerotic rim avoided"
    assert back["rois"][0]["shape"]["drawn_on_slice"] == 42
    # apart from the history, the file content equals what was loaded
    stripped = {k: v for k, v in back.items() if k != "history"}
    assert stripped == BASE
    assert load_roiset(p).rois == saved.rois


def test_sample_roiset_loads():
    if not SAMPLE.exists():
        pytest.skip("sample data not generated")
    rs = load_roiset(SAMPLE)
    assert len(rs.rois) > 10
    assert {r.shape.type for r in rs.rois} >= {"ellipse", "circle", "polygon", "sphere"}


def mutate(path_fn):
    d = copy.deepcopy(BASE)
    path_fn(d)
    return d


BAD = [
    ("format", lambda d: d.update(format="something-else"), "format"),
    ("shape type", lambda d: d["rois"][0]["shape"].update(type="triangle"), "shape.type"),
    ("missing radius", lambda d: d["rois"][1]["shape"].pop("radius_mm"), "shape.radius_mm"),
    (
        "nan centre",
        lambda d: d["rois"][1]["shape"].update(center_mm=[0, float("nan"), 1]),
        "center_mm",
    ),
    ("inf radius", lambda d: d["rois"][1]["shape"].update(radius_mm=float("inf")), "radius_mm"),
    ("negative radius", lambda d: d["rois"][1]["shape"].update(radius_mm=-2), "radius_mm"),
    ("negative radii", lambda d: d["rois"][0]["shape"].update(radii_mm=[3, -1]), "radii_mm"),
    ("centre length", lambda d: d["rois"][1]["shape"].update(center_mm=[0, 1]), "center_mm"),
    (
        "polygon off-plane",
        lambda d: d["rois"][3]["shape"]["points_mm"].__setitem__(2, [10, 8, 131]),
        "points_mm",
    ),
    (
        "polygon collinear",
        lambda d: d["rois"][3]["shape"].update(points_mm=[[0, 0, 1], [1, 1, 1], [2, 2, 1]]),
        "points_mm",
    ),
    ("level", lambda d: d["rois"][0].update(level="L6"), "level"),
    ("timepoint", lambda d: d["rois"][0].update(timepoint="T9"), "timepoint"),
    ("kind", lambda d: d["rois"][0].update(kind="bone"), "kind"),
    ("lesion", lambda d: d["rois"][0].update(lesion_type="lytic"), "lesion_type"),
    ("irradiated", lambda d: d["rois"][0].update(irradiated="yes"), "irradiated"),
    ("missing patient", lambda d: d["rois"][0].pop("patient_id"), "patient_id"),
    ("duplicate id", lambda d: d["rois"][1].update(roi_id="P01-T0-L3"), "roi_id"),
    ("rois not list", lambda d: d.update(rois={}), "rois"),
]


@pytest.mark.parametrize("name,fn,field", BAD, ids=[b[0] for b in BAD])
def test_validation_errors_name_roi_and_field(tmp_path, name, fn, field):
    d = mutate(fn)
    p = tmp_path / "bad.rois.json"
    p.write_text(json.dumps(d, allow_nan=True))
    with pytest.raises(RoiFormatError) as ei:
        load_roiset(p)
    msg = str(ei.value)
    assert field in msg
    assert str(p) in msg
    if name not in ("format", "rois not list"):
        assert "ROI '" in msg  # names the ROI


def test_not_json(tmp_path):
    p = tmp_path / "x.rois.json"
    p.write_text("this is { not json")
    with pytest.raises(RoiFormatError, match="not a JSON file"):
        load_roiset(p)


def test_kinds_and_levels_valid():
    for kind in ("target", "reference-water", "phantom-k2hpo4_200", "phantom-CaHA.50"):
        d = copy.deepcopy(BASE["rois"][1])
        d["kind"] = kind
        assert Roi.from_dict(d).kind == kind


def test_history_appended_on_every_save(tmp_path):
    p = write(tmp_path, BASE)
    rs = load_roiset(p)
    new = Roi.from_dict(
        {
            "roi_id": "P01-T0-L5",
            "patient_id": "P01",
            "timepoint": "T0",
            "kind": "target",
            "level": "L5",
            "shape": {"type": "circle", "center_mm": [0, 0, 150], "radius_mm": 6},
        }
    )
    rs2 = save_roiset(rs.with_roi(new).without_roi("P01-T0-air"))
    moved = rs2.get("P01-T0-L3")
    moved = Roi.from_dict({**moved.to_dict(), "level": "L2"})
    rs3 = save_roiset(rs2.with_roi(moved), who="tester")
    h = json.loads(p.read_text())["history"]
    assert len(h) == 2
    assert h[0]["tool"].startswith("hu-roi ") and h[0]["when"] and "R1" in h[0]["who"]
    assert set(h[0]["changes"]) == {"added P01-T0-L5", "removed P01-T0-air"}
    assert h[1]["who"] == "tester"
    assert h[1]["changes"] == ["modified P01-T0-L3 (level)"]
    assert [r.roi_id for r in rs3.rois][0] == "P01-T0-L3"  # position kept on replace


def test_save_refuses_when_file_changed_on_disk(tmp_path):
    p = write(tmp_path, BASE)
    rs = load_roiset(p)
    # someone else saves in between (content and size change)
    other = load_roiset(p)
    save_roiset(other.without_roi("P01-T0-air"), who="colleague")
    with pytest.raises(RoiConflictError, match="changed on disk"):
        save_roiset(rs)
    # same size, same mtime but different content is also caught (sha256)
    p2 = write(tmp_path, BASE, "b.rois.json")
    rs_b = load_roiset(p2)
    st = p2.stat()
    txt = p2.read_text().replace("Heidelberg", "Heidelbery")
    p2.write_text(txt)
    os.utime(p2, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(RoiConflictError):
        save_roiset(rs_b)
    # unchanged: saving twice in a row works (stamp is refreshed)
    p3 = write(tmp_path, BASE, "c.rois.json")
    rs_c = save_roiset(load_roiset(p3))
    save_roiset(rs_c)


def test_save_never_overwrites_an_unloaded_file(tmp_path):
    p = write(tmp_path, BASE)
    fresh = RoiSet(rois=(), reader="R2")
    with pytest.raises(RoiConflictError, match="already exists"):
        save_roiset(fresh, p)
    save_roiset(fresh, p, overwrite=True)
    assert load_roiset(p).reader == "R2"
    # new file: fine
    q = tmp_path / "new.rois.json"
    out = save_roiset(fresh, q)
    assert out.path == str(q) and out.stamp is not None


def test_save_is_atomic_no_temp_left(tmp_path):
    p = write(tmp_path, BASE)
    save_roiset(load_roiset(p))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.rois.json"]


def test_save_fails_cleanly_keeps_old_file(tmp_path):
    p = write(tmp_path, BASE)
    rs = load_roiset(p)
    before = p.read_bytes()
    bad = RoiSet(rois=rs.rois, reader="R1", extra={"x": float("nan")}, path=rs.path, stamp=rs.stamp)
    with pytest.raises(ValueError):
        save_roiset(bad)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.rois.json"]


def test_find_roi_files(tmp_path):
    (tmp_path / "a").mkdir()
    write(tmp_path / "a", BASE, "x.rois.json")
    write(tmp_path, BASE, "y.rois.json")
    (tmp_path / "notes.json").write_text("{}")
    assert [p.name for p in find_roi_files(tmp_path)] == ["x.rois.json", "y.rois.json"]


# -------------------------------------------------------------------------------- matching
def info(key, uid, pid="P01", date="20200101", problems=()):
    return SeriesInfo(
        series_key=key,
        series_instance_uid=uid,
        study_instance_uid="",
        patient_id=pid,
        study_date=date,
        modality="CT",
        manufacturer="",
        model="",
        kvp=120.0,
        kernel="",
        slice_thickness_mm=1.0,
        contrast_agent="",
        series_description="",
        series_number=1,
        acquisition_number=1,
        frame_of_reference_uid="",
        rows=8,
        columns=8,
        pixel_spacing_mm=(1.0, 1.0),
        orientation=(1, 0, 0, 0, 1, 0),
        slice_spacing_mm=1.0,
        slices=(SliceRef("a", (0.0, 0.0, 0.0)),),
        transfer_syntax="",
        rescale_slope=1.0,
        rescale_intercept=0.0,
        rescale_type="HU",
        bits_stored=16,
        pixel_representation=1,
        image_type=(),
        patient_position="HFS",
        folder="",
        problems=tuple(problems),
    )


def roi(**kw):
    d = {
        "roi_id": "R",
        "patient_id": "P01",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": [0, 0, 0], "radius_mm": 3},
    }
    d.update(kw)
    return Roi.from_dict(d)


def test_match_by_uid_then_key_then_only_series():
    s1, s2 = info("1.2.3", "1.2.3"), info("nouid-abc", "")
    s3 = info("4.5.6", "4.5.6", pid="P02")
    assert match_series(roi(series_instance_uid="1.2.3"), [s1, s2, s3]).info is s1
    assert match_series(roi(series_key="nouid-abc"), [s1, s2, s3]).info is s2
    only = match_series(roi(patient_id="P02"), [s1, s2, s3])
    assert only.info is s3 and only.how == "only-series"
    # two CT series for P01: ambiguous unless the study date decides
    amb = match_series(roi(), [s1, s2, s3])
    assert amb.info is None and amb.reason == "series-ambiguous"
    s4 = info("7.8.9", "7.8.9", date="20200401")
    assert match_series(roi(study_date="20200401"), [s1, s4]).info is s4
    # a localizer does not count
    loc = info("9", "9", pid="P03", problems=("localizer",))
    ct = info("10", "10", pid="P03")
    assert match_series(roi(patient_id="P03"), [loc, ct]).info is ct


def test_match_fails_with_reason():
    s1 = info("1.2.3", "1.2.3")
    m = match_series(roi(series_instance_uid="9.9.9"), [s1])
    assert m.info is None and m.reason == "series-not-found" and "9.9.9" in m.detail
    m = match_series(roi(patient_id="P77"), [s1])
    assert m.reason == "series-not-found" and "P77" in m.detail
