"""ROI files: misspelt field names, unknown fields, numbers and text no ROI file may hold.

* A field name that differs from a known one only by case or separators, that is a known
  name without or with another unit, or that is 1 edit (names of 4–6 characters) or 2 edits
  (7 or more) away, is an error naming both (issue 11 item 6; rule in docs/roi_format.md).
* Other unknown fields are kept, written back, and listed once per name and file.
* NaN/Infinity, numbers beyond the float range, integers beyond Python's 4,300-digit limit,
  duplicate keys and lone surrogates are refused wherever they stand, naming ROI and field.
* Values are quoted cut to about 80 characters and with newlines escaped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_main

from hu_roi.errors import RoiFormatError
from hu_roi.roi import load_roiset, misspelt_field, save_roiset

REPO = Path(__file__).resolve().parents[1]


def _roi(**kw) -> dict:
    d = {
        "roi_id": "P01-T0-L1",
        "patient_id": "P01",
        "timepoint": "T0",
        "series_instance_uid": "1.2.3",
        "level": "L1",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": [0.0, 0.0, 0.0], "radius_mm": 5.0},
    }
    d.update(kw)
    return d


def _doc(*rois: dict, **top) -> dict:
    d = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": list(rois) or [_roi()]}
    d.update(top)
    return d


def _write(tmp_path: Path, doc: dict | str, name: str = "a.rois.json") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return p


def _rename(d: dict, old: str, new: str) -> dict:
    """A copy of ``d`` with key ``old`` renamed to ``new`` (position kept)."""
    return {(new if k == old else k): v for k, v in d.items()}


def _shape_field(old: str, new: str) -> dict:
    r = _roi(shape={"type": "ellipse", "center_mm": [0, 0, 0], "radii_mm": [5, 4], "angle_deg": 30})
    r["shape"] = _rename(r["shape"], old, new)
    return _doc(r)


# (case, document, ROI named or None, field named, known name named)
MISSPELT: list[tuple[str, dict, str | None, str, str]] = [
    ("levle", _doc(_rename(_roi(), "level", "levle")), "P01-T0-L1", "levle", "level"),
    ("Level", _doc(_rename(_roi(), "level", "Level")), "P01-T0-L1", "Level", "level"),
    ("timpoint", _doc(_rename(_roi(), "timepoint", "timpoint")), "P01-T0-L1", "timpoint", "timepoint"),
    ("time_point", _doc(_rename(_roi(), "timepoint", "time_point")), "P01-T0-L1", "time_point", "timepoint"),
    ("TIMEPOINT", _doc(_rename(_roi(), "timepoint", "TIMEPOINT")), "P01-T0-L1", "TIMEPOINT", "timepoint"),
    ("Kind", _doc(_rename(_roi(), "kind", "Kind")), "P01-T0-L1", "Kind", "kind"),
    ("irradiatd", _doc(_rename(_roi(), "irradiated", "irradiatd")), "P01-T0-L1", "irradiatd", "irradiated"),
    ("lesiontype", _doc(_rename(_roi(), "lesion_type", "lesiontype")), "P01-T0-L1", "lesiontype", "lesion_type"),
    ("seriesInstanceUID", _doc(_rename(_roi(), "series_instance_uid", "seriesInstanceUID")), "P01-T0-L1", "seriesInstanceUID", "series_instance_uid"),
    # the known field is missing: the ROI is named by its position
    ("Roi_ID", _doc(_rename(_roi(), "roi_id", "Roi_ID")), "#0", "Roi_ID", "roi_id"),
    ("patient_ID", _doc(_rename(_roi(), "patient_id", "patient_ID")), "P01-T0-L1", "patient_ID", "patient_id"),
    # inside the shape object
    ("centre_mm", _shape_field("center_mm", "centre_mm"), "P01-T0-L1", "shape.centre_mm", "shape.center_mm"),
    ("Type", _shape_field("type", "Type"), "P01-T0-L1", "shape.Type", "shape.type"),
    ("angle", _shape_field("angle_deg", "angle"), "P01-T0-L1", "shape.angle", "shape.angle_deg"),
    ("angle_rad", _shape_field("angle_deg", "angle_rad"), "P01-T0-L1", "shape.angle_rad", "shape.angle_deg"),
    ("center_ras", _shape_field("center_mm", "center_ras"), "P01-T0-L1", "shape.center_ras", "shape.center_mm"),
    ("radii", _shape_field("radii_mm", "radii"), "P01-T0-L1", "shape.radii", "shape.radii_mm"),
    # top level
    ("Rois", _rename(_doc(), "rois", "Rois"), None, "Rois", "rois"),
    ("Version", _rename(_doc(), "version", "Version"), None, "Version", "version"),
    ("raeder", _rename(_doc(), "reader", "raeder"), None, "raeder", "reader"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "doc", "roi", "fld", "known"), MISSPELT, ids=[m[0] for m in MISSPELT]
)
def test_misspelt_field_is_an_error_naming_both(tmp_path, case, doc, roi, fld, known) -> None:
    p = _write(tmp_path, doc)
    with pytest.raises(RoiFormatError) as ei:
        load_roiset(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg
    assert f"field {fld!r}" in msg and f"misspelling of {known!r}" in msg, msg
    if roi is None:
        assert "ROI set" in msg
    elif roi.startswith("#"):
        assert f"ROI {roi}" in msg
    else:
        assert f"ROI {roi!r}" in msg


@pytest.mark.parametrize("case", ["levle", "Level", "timpoint", "centre_mm", "Rois"])
def test_measure_exits_2_on_a_misspelt_field(tmp_path, case) -> None:
    _, doc, _, fld, known = next(m for m in MISSPELT if m[0] == case)
    p = _write(tmp_path, doc)
    out = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(tmp_path), "--rois", str(p), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi measure: error: "), proc.stderr
    assert repr(fld) in lines[0] and repr(known) in lines[0]
    assert not out.exists()


#: Names that are not misspellings of any known field: kept and written back.
LEGIT_ROI_FIELDS = ["label", "time", "hint", "note", "comment", "color", "site", "name", "id",
                    "study_time", "series_description", "patient_age", "irradiation", "x_levle"]  # fmt: skip
LEGIT_SHAPE_FIELDS = ["label", "time", "color", "drawn_on_slice", "normal", "center_lps_mm"]


def test_unknown_fields_that_are_no_misspelling_are_kept(tmp_path) -> None:
    r = _roi(**{k: f"v-{k}" for k in LEGIT_ROI_FIELDS})
    r["shape"].update({k: f"s-{k}" for k in LEGIT_SHAPE_FIELDS})
    p = _write(tmp_path, _doc(r, site="Heidelberg", notes=["a", "b"]))
    rs = load_roiset(p)
    saved = save_roiset(rs)
    again = json.loads(Path(saved.path).read_text())
    roi = again["rois"][0]
    assert all(roi[k] == f"v-{k}" for k in LEGIT_ROI_FIELDS)
    assert all(roi["shape"][k] == f"s-{k}" for k in LEGIT_SHAPE_FIELDS)
    assert again["site"] == "Heidelberg" and again["notes"] == ["a", "b"]
    assert load_roiset(p).rois[0].level == "L1"


def test_unknown_fields_listed_once_per_name_and_file(tmp_path, caplog) -> None:
    rois = [_roi(roi_id=f"R{i}", comment="x", label=str(i)) for i in range(5)]
    rois[0]["shape"]["drawn_by"] = "R1"
    p = _write(tmp_path, _doc(*rois, site="Heidelberg"))
    with caplog.at_level(logging.WARNING, logger="hu_roi.roi"):
        load_roiset(p)
    msgs = [r.getMessage() for r in caplog.records if r.name == "hu_roi.roi"]
    assert len(msgs) == 4, msgs  # site, comment, label, shape.drawn_by
    assert sum("'rois[].comment' (in 5 objects)" in m for m in msgs) == 1
    assert sum("'rois[].shape.drawn_by' (in 1 object)" in m for m in msgs) == 1
    assert sum("'site'" in m for m in msgs) == 1
    assert all(str(p) in m for m in msgs)


def test_unknown_field_warning_on_measure_stderr(tmp_path) -> None:
    """The warning reaches the terminal once per field name, through the CLI's logging."""
    rois = [_roi(roi_id=f"R{i}", comment="x") for i in range(3)]
    p = _write(tmp_path, _doc(*rois))
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "roi", "validate", str(p)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warn = [ln for ln in proc.stderr.splitlines() if "comment" in ln]
    assert len(warn) == 1 and "WARNING" in warn[0] and "kept" in warn[0], proc.stderr


def test_misspelling_rule_details() -> None:
    known = ("roi_id", "level", "kind", "timepoint", "shape")
    assert misspelt_field("levle", known) == ("level", "1 edit away")  # a transposition
    assert misspelt_field("timpoint", known)[0] == "timepoint"
    assert misspelt_field("timepnt", known)[0] == "timepoint"  # 2 edits, 9 letters
    assert misspelt_field("lvl", known) is None  # 2 edits from a 5-letter name
    assert misspelt_field("label", known) is None  # 2 edits: a field of its own
    assert misspelt_field("kid", known)[0] == "kind"
    assert misspelt_field("x_level", known) is None  # own-field prefix
    assert misspelt_field("level", known) is None  # known names are not misspellings
    assert misspelt_field("ROI-ID", known)[0] == "roi_id"


# ---------------------------------------------------------------------------------------
# numbers and text that no ROI file may hold, anywhere in the file
# ---------------------------------------------------------------------------------------
def _raw(radius: str = "5.0", extra: str = "", top: str = "") -> str:
    return (
        '{"format": "hu-roi.roiset", "version": 1, "reader": "R1"' + top + ', "rois": ['
        '{"roi_id": "A", "patient_id": "P01", "timepoint": "T0", "level": "L1"' + extra + ","
        ' "shape": {"type": "circle", "center_mm": [1, 2, 3], "radius_mm": ' + radius + "}}]}"
    )


BIG_INT = "9" * 5000
#: (case, file text, ROI named or None, field named, pattern)
BAD_VALUES = [
    ("overflow_1e999", _raw("1e999"), "A", "shape.radius_mm", "finite number; got 1e999"),
    ("negative_overflow", _raw("-1e999"), "A", "shape.radius_mm", "finite number; got -1e999"),
    ("nan_literal", _raw("NaN"), "A", "shape.radius_mm", "got NaN"),
    ("infinity_literal", _raw("Infinity"), "A", "shape.radius_mm", "got Infinity"),
    ("minus_infinity", _raw("-Infinity"), "A", "shape.radius_mm", "got -Infinity"),
    ("int_beyond_digit_limit", _raw(BIG_INT), "A", "shape.radius_mm", "5000 digits"),
    ("negative_int_beyond_limit", _raw("-" + BIG_INT), "A", "shape.radius_mm", "5000 digits"),
    ("int_beyond_float", _raw("9" * 400), "A", "shape.radius_mm", "must be finite"),
    ("long_float_literal", _raw("1" + "0" * 5000 + ".5"), "A", "shape.radius_mm", "finite"),
    ("overflow_in_centre", _raw().replace("[1, 2, 3]", "[1, 1e999, 3]"), "A", "shape.center_mm", "element \\[1\\]"),
    ("nan_in_unknown_roi_field", _raw(extra=', "x_note": NaN'), "A", "x_note", "got NaN"),
    ("big_int_in_unknown_top_field", _raw(top=', "site": ' + BIG_INT), None, "site", "5000 digits"),
    ("overflow_in_history", _raw(top=', "history": [{"when": 1e999}]'), None, "history.when", "1e999"),
    ("big_int_version", _raw().replace('"version": 1', '"version": ' + BIG_INT), None, "version", "5000 digits"),
    ("duplicate_key", _raw(extra=', "level": "L2"'), "A", "level", "more than once"),
    ("lone_surrogate", _raw(extra=', "note": "\\ud800"'), "A", "note", "not valid Unicode"),
    ("newline_in_roi_id", _raw().replace('"A"', '"A\\nhu-roi measure: 0 ROIs"'), "#0", "roi_id", "control character"),
    ("huge_roi_id", _raw().replace('"A"', '"' + "A" * 3_000_000 + '"'), "#0", "roi_id", "longer than 256"),
    ("huge_invalid_level", _raw(extra=', "level": "' + "x" * 3_000_000 + '"').replace('"level": "L1", ', ""), "A", "level", "must be"),
    ("newline_in_level", _raw(extra=', "level": "L1\\nhu-roi: fake"').replace('"level": "L1", ', ""), "A", "level", "must be"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "roi", "fld", "pattern"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES]
)
def test_bad_values_refused_naming_roi_and_field(tmp_path, case, text, roi, fld, pattern) -> None:
    import re

    p = _write(tmp_path, text)
    with pytest.raises(RoiFormatError) as ei:
        load_roiset(p)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < len(str(p)) + 400, msg[:1000]
    assert f"field {fld!r}" in msg, msg
    if roi is None:
        assert "ROI set" in msg
    elif roi.startswith("#"):
        assert f"ROI {roi}," in msg
    else:
        assert f"ROI {roi!r}" in msg
    assert re.search(pattern, msg), msg


@pytest.mark.parametrize("case", [b[0] for b in BAD_VALUES])
def test_measure_exits_2_with_one_line(tmp_path, case) -> None:
    text = next(b[1] for b in BAD_VALUES if b[0] == case)
    p = _write(tmp_path, text)
    out = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(tmp_path), "--rois", str(p), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[:2000]
    assert lines[0].startswith("hu-roi measure: error: ") and len(lines[0]) < 600
    assert not out.exists()


@pytest.mark.parametrize(
    "case", ["int_beyond_digit_limit", "nan_literal", "huge_invalid_level", "newline_in_roi_id"]
)
def test_measure_subprocess_no_traceback(tmp_path, case) -> None:
    """The real process: exit 2, one short line on stderr, no traceback or warning."""
    text = next(b[1] for b in BAD_VALUES if b[0] == case)
    p = _write(tmp_path, text)
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "measure", "--dicom", str(tmp_path), "--rois", str(p)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi measure: error: "), proc.stderr[:2000]
    assert len(lines[0]) < 600 and "Traceback" not in proc.stderr


def test_utf8_byte_order_mark_is_read(tmp_path) -> None:
    """Editors on Windows write a BOM; the file is the same ROI set."""
    p = tmp_path / "bom.rois.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(_doc()).encode())
    assert load_roiset(p).rois[0].roi_id == "P01-T0-L1"


def test_proposed_is_known_and_kept(tmp_path, caplog) -> None:
    p = _write(tmp_path, _doc(_roi(proposed=True)))
    with caplog.at_level(logging.WARNING, logger="hu_roi.roi"):
        rs = load_roiset(p)
    assert rs.rois[0].proposed is True and not caplog.records
    assert save_roiset(rs).rois[0].to_dict()["proposed"] is True
    with pytest.raises(RoiFormatError, match="'proposed'"):
        load_roiset(_write(tmp_path, _doc(_roi(proposed="yes")), "b.rois.json"))
