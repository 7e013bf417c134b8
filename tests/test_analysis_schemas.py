"""Declared CSV schemas: validation, empty typed tables, the longitudinal reshaping, docs.

References: hand-made measurement rows with known HU (changes worked out below) and the
column lists of docs/design.md (measurement CSV) and docs/csv_schemas.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hu_roi.analysis.clinical import CLINICAL_SCHEMA
from hu_roi.analysis.schemas import (
    LONGITUDINAL_SCHEMA,
    MEASUREMENT_SCHEMA,
    longitudinal_from_measurements,
)
from hu_roi.errors import SchemaError

ROOT = Path(__file__).resolve().parents[1]

DESIGN_MEASUREMENT_COLUMNS = (
    "roi_id, patient_id, timepoint, study_date, series_instance_uid, level, irradiated, "
    "lesion_type, kind, shape, slice_index, n_voxels, area_mm2, volume_mm3, mean_hu, sd_hu, "
    "median_hu, min_hu, max_hu, kvp, kernel, slice_thickness_mm, manufacturer, model, "
    "qc_status, qc_flags, reader"
).split(", ")


def test_measurement_schema_matches_design_order() -> None:
    # the contract's 27 columns in order, then the optional length_mm of line ROIs and
    # the dose the longitudinal table carries
    assert list(MEASUREMENT_SCHEMA.names) == [
        *DESIGN_MEASUREMENT_COLUMNS,
        "length_mm",
        "dose_mean_gy",
    ]


def test_empty_tables_are_typed() -> None:
    e = LONGITUDINAL_SCHEMA.empty()
    assert list(e.columns) == list(LONGITUDINAL_SCHEMA.names)
    assert str(e["hu_T0"].dtype) == "float64"
    assert str(e["irradiated"].dtype) == "boolean"
    v = MEASUREMENT_SCHEMA.validate(pd.DataFrame(columns=DESIGN_MEASUREMENT_COLUMNS))
    assert len(v) == 0 and str(v["mean_hu"].dtype) == "float64"
    assert len(longitudinal_from_measurements(v)) == 0


def _m(roi_id: str, tp: str, level: str, hu: object, **kw: object) -> dict[str, object]:
    r: dict[str, object] = {
        "roi_id": roi_id,
        "patient_id": "P01",
        "timepoint": tp,
        "level": level,
        "irradiated": "true",
        "lesion_type": "osteolytic",
        "kind": "target",
        "mean_hu": hu,
        "qc_status": "pass",
        "qc_flags": "",
        "reader": "R1",
    }
    r.update(kw)
    return r


def test_longitudinal_changes_and_flags() -> None:
    rows = [
        _m("a0", "T0", "L3", "200"),
        _m("a2", "T2", "L3", "250", qc_status="warn"),
        _m("a3", "T3", "L3", "", qc_status="fail", qc_flags="roi-outside-image"),
        _m("b0", "T0", "L1", "0.5", irradiated="false", lesion_type="none"),
        _m("b2", "T2", "L1", "10", irradiated="false", lesion_type="none"),
        _m("c2", "T2", "T8", "300", lesion_type="mixed"),
        _m("ref", "T0", "", "-1000", kind="reference-air"),
        _m("nott", "", "L3", "100", kind="reference-fat"),
    ]
    meas = MEASUREMENT_SCHEMA.validate(pd.DataFrame(rows))
    full = longitudinal_from_measurements(meas)
    assert list(full.columns) == list(LONGITUDINAL_SCHEMA.names)
    lg = full.set_index("level")
    assert set(lg.index) == {"L3", "L1", "T8"}
    l3 = lg.loc["L3"]
    assert l3["hu_T0"] == 200 and l3["hu_T2"] == 250 and np.isnan(l3["hu_T3"])
    assert l3["delta_hu_T2"] == 50 and l3["pct_delta_T2"] == pytest.approx(25.0)
    assert l3["flags"] == "qc-warn-T2;qc-fail-T3"
    assert "baseline-near-zero" in lg.loc["L1", "flags"] and np.isnan(lg.loc["L1", "pct_delta_T2"])
    assert lg.loc["L1", "delta_hu_T2"] == pytest.approx(9.5)
    assert bool(lg.loc["L1", "irradiated"]) is False
    assert lg.loc["T8", "flags"] == "no-baseline"


def test_duplicate_usable_rois_are_an_error() -> None:
    rows = [_m("x", "T0", "L3", "200"), _m("y", "T0", "L3", "210")]
    meas = MEASUREMENT_SCHEMA.validate(pd.DataFrame(rows))
    with pytest.raises(SchemaError, match="roi_id 'x', 'y'"):
        longitudinal_from_measurements(meas)


def test_measurement_bad_value_names_roi_and_column() -> None:
    with pytest.raises(SchemaError, match=r"roi_id=P01-T0-L3\), column 'mean_hu': got 'abc'"):
        MEASUREMENT_SCHEMA.validate(pd.DataFrame([_m("P01-T0-L3", "T0", "L3", "abc")]))
    with pytest.raises(SchemaError, match="column 'timepoint': got 'T9'"):
        MEASUREMENT_SCHEMA.validate(pd.DataFrame([_m("r", "T9", "L3", "1")]))


def _doc_columns(section: str) -> list[str]:
    text = (ROOT / "docs" / "csv_schemas.md").read_text(encoding="utf-8")
    part = text.split(f"<!-- schema:{section} -->")[1].split("<!-- /schema -->")[0]
    return re.findall(r"^\| `([^`]+)` \|", part, flags=re.M)


@pytest.mark.parametrize(
    ("section", "schema"),
    [
        ("measurement", MEASUREMENT_SCHEMA),
        ("longitudinal", LONGITUDINAL_SCHEMA),
        ("clinical", CLINICAL_SCHEMA),
    ],
)
def test_docs_list_the_declared_columns(section: str, schema: object) -> None:
    assert _doc_columns(section) == list(schema.names)  # type: ignore[attr-defined]


def test_zero_byte_csv_is_refused_but_header_only_is_an_empty_table(tmp_path: Path) -> None:
    empty = tmp_path / "measurements.csv"
    empty.write_bytes(b"")
    with pytest.raises(SchemaError, match="is empty"):
        MEASUREMENT_SCHEMA.read_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(MEASUREMENT_SCHEMA.names) + "\n")
    assert len(MEASUREMENT_SCHEMA.read_csv(header_only)) == 0


def test_every_problem_is_listed_one_per_line_up_to_twenty_lines() -> None:
    """25 bad cells: the heading, 18 problems, then the count of the rest -- 20 lines, each
    one problem, also when a key holds a line break (shown escaped)."""
    rows = [_m(f"r{i}", "T0", "L3", f"x{i}") for i in range(24)]
    rows.append(_m("forged\nhu-roi: 0 rows", "T0", "L3", "y"))
    with pytest.raises(SchemaError) as ei:
        MEASUREMENT_SCHEMA.validate(pd.DataFrame(rows))
    lines = str(ei.value).splitlines()
    assert len(lines) == 20
    assert lines[0].startswith("measurement CSV: 25 invalid value(s)")
    assert lines[1] == ("  row 2 (roi_id=r0), column 'mean_hu': got 'x0', expected a number (HU).")
    assert all(ln.startswith("  row ") for ln in lines[1:19])
    assert lines[19] == "  ... and 7 more"


def test_expectation_of_a_text_column_says_text() -> None:
    with pytest.raises(SchemaError) as ei:
        MEASUREMENT_SCHEMA.validate(pd.DataFrame([_m("r", "T0", "L3", "1", patient_id="")]))
    assert (
        "column 'patient_id': value is missing; expected text (Pseudonymous patient identifier)."
        in str(ei.value)
    )
    assert "expected a number" not in str(ei.value)


def test_rows_read_from_a_file_are_named_by_their_line(tmp_path: Path) -> None:
    """A quoted cell with a line break and a blank line: the line, not the row count."""
    p = tmp_path / "m.csv"
    cols = ["roi_id", "patient_id", "timepoint", "level", "irradiated", "lesion_type", "kind",
            "mean_hu", "qc_status"]  # fmt: skip
    p.write_text(
        ",".join(cols) + "\n"
        + 'a,P01,T0,L1,true,none,target,1,"pass"\n\n'
        + 'b,"P\n02",T0,L1,true,none,target,abc,pass\n'
    )  # fmt: skip
    with pytest.raises(SchemaError, match=r"line 4 \(roi_id=b\), column 'mean_hu': got 'abc'"):
        MEASUREMENT_SCHEMA.read_csv(p)
