"""Reading hu-roi's tables: one strict reader, dates out of range, the formula escape.

- A measurement CSV written by ``hu-roi measure`` from real DICOM files (written here with
  pydicom) whose rows are then cut or lengthened is refused by ``longitudinal`` and
  ``analyze`` alike, naming the line; nothing is written.
- A DICOM StudyDate of 99991231 (a common "unknown") measures and then goes through
  ``longitudinal``: ``study_date`` is descriptive, so the date is read as missing with a
  warning naming line and column (docs/csv_schemas.md).  The HU values are the ones
  written into the pixels (reference: the phantom's known HU).
- :func:`hu_roi.csvtext.escape_cell` / :func:`~hu_roi.csvtext.unescape_cell`: exact round
  trip for every string, numbers never changed, and the readers give back the cells a
  writer escaped.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.analysis.schemas import (
    LONGITUDINAL_SCHEMA,
    MEASUREMENT_SCHEMA,
    read_longitudinal,
    read_measurements,
)
from hu_roi.csvtext import (
    FORMULA_TRIGGERS,
    escape_cell,
    is_number,
    read_csv_rows,
    unescape_cell,
)
from hu_roi.errors import SchemaError
from hu_roi.longitudinal import read_measurement_targets

#: HU written into the pixels of the two timepoints (the reference values).
HU_T0, HU_T1 = 150.0, 120.0


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hu-roi measure`` output for one patient at T0 (StudyDate 20200101) and T1
    (StudyDate 99991231), one L1 target each and one air reference ROI."""
    root = tmp_path_factory.mktemp("measured")
    uids = {"T0": "1.2.826.0.1.3680043.10.1234.11.1", "T1": "1.2.826.0.1.3680043.10.1234.11.2"}
    for tp, hu, date in (("T0", HU_T0, "20200101"), ("T1", HU_T1, "99991231")):
        write_ct_series(
            root / "dicom" / tp,
            np.full((4, 24, 24), hu),
            pixel_spacing=(0.8, 0.8),
            series_uid=uids[tp],
            extra_tags={"PatientID": "P01", "StudyDate": date},
        )
    shape = {"type": "circle", "center_mm": [9.2, 9.2, 1.0], "radius_mm": 5}
    rois = [
        {"roi_id": f"P01-{tp}-L1", "patient_id": "P01", "timepoint": tp,
         "series_instance_uid": uid, "level": "L1", "irradiated": True,
         "lesion_type": "osteolytic", "kind": "target", "shape": shape}
        for tp, uid in uids.items()
    ] + [{"roi_id": "P01-T0-air", "patient_id": "P01", "timepoint": "T0",
          "series_instance_uid": uids["T0"], "kind": "reference-air", "shape": shape}]  # fmt: skip
    (root / "p.rois.json").write_text(
        json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": rois})
    )
    out = root / "m.csv"
    proc = run_main("measure", "--dicom", str(root / "dicom"), "--rois",
                    str(root / "p.rois.json"), "--out", str(out), "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_measured_table_is_as_expected(measured: Path) -> None:
    """The premise of the tests below: 3 rows, the T1 study date is the placeholder."""
    rows = list(csv.DictReader(measured.open(encoding="utf-8")))
    assert [r["roi_id"] for r in rows] == ["P01-T0-L1", "P01-T1-L1", "P01-T0-air"]
    assert [r["study_date"] for r in rows] == ["2020-01-01", "9999-12-31", "2020-01-01"]
    assert [float(r["mean_hu"]) for r in rows] == [HU_T0, HU_T1, HU_T0]


def test_placeholder_study_date_is_read_as_missing(measured: Path, tmp_path: Path) -> None:
    out = tmp_path / "long.csv"
    # a subprocess: the warning goes through the CLI's logging to stderr
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "longitudinal", str(measured), "--out", str(out),
         "--quiet"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="default"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    t = read_longitudinal(out)
    assert len(t) == 1
    assert (t.loc[0, "hu_T0"], t.loc[0, "hu_T1"]) == (HU_T0, HU_T1)
    assert t.loc[0, "delta_hu_T1"] == HU_T1 - HU_T0
    # the warning names the column, the line and the value
    warn = [ln for ln in proc.stderr.splitlines() if "study_date" in ln]
    assert len(warn) == 1, proc.stderr
    assert "line 3 (roi_id=P01-T1-L1)" in warn[0] and "'9999-12-31'" in warn[0]
    assert "read as missing" in warn[0]
    m = read_measurements(measured)
    assert m["study_date"].isna().tolist() == [False, True, False]
    assert m.loc[0, "study_date"] == pd.Timestamp("2020-01-01")


def _cut(line: str, n: int) -> str:
    return ",".join(next(csv.reader([line]))[:n])


@pytest.mark.parametrize(
    ("change", "line", "fields"),
    [
        ("cut the T0 row to 5 fields", 2, 5),
        ("one field more on the first data row", 2, 45),
        ("one field more on the last row", 4, 45),
        ("the air row cut to 26 fields", 4, 26),
    ],
)
def test_row_with_wrong_field_count_is_refused(
    measured: Path, tmp_path: Path, change: str, line: int, fields: int
) -> None:
    lines = _lines(measured)
    n = len(next(csv.reader([lines[0]])))
    assert n == 44  # the measurement CSV header (with length_mm and the dose columns)
    if fields < n:
        lines[line - 1] = _cut(lines[line - 1], fields)
    else:
        lines[line - 1] += ",extra"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    want = f"line {line}: {fields} field(s)"
    out = tmp_path / "long.csv"
    proc = run_main("longitudinal", str(bad), "--out", str(out))
    assert proc.returncode == 2, change
    assert proc.stderr.startswith("hu-roi longitudinal: error: measurement CSV"), proc.stderr
    assert want in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("patient_id\nP01\n")
    folder = tmp_path / "analysis"
    proc = run_main("analyze", "--measurements", str(bad), "--clinical", str(clinical),
                    "--out", str(folder), "--quiet")  # fmt: skip
    assert proc.returncode == 2, change
    assert want in proc.stderr, proc.stderr
    assert not folder.exists()
    for read in (read_measurement_targets, read_measurements):
        with pytest.raises(SchemaError, match=re.escape(want)):
            read(bad)


def test_strict_reader_rules(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    # blank lines are skipped; a quoted cell may hold a line break (row named by its start)
    p.write_bytes(b'\xef\xbb\xbfa,b\r\n\r\n1,"x\r\ny"\r\n2,3\r\n')
    t = read_csv_rows(p, "test CSV")
    assert t.header == ["a", "b"] and t.rows == [["1", "x\r\ny"], ["2", "3"]]
    assert t.lines == [3, 5]
    for text, error in [
        ("a,b\n1,2,3\n4\n", "2 row\\(s\\)[^\n]*\n  line 2: 3 field\\(s\\)\n  line 3: 1 field"),
        ('a,b\n1,"x\n2,3\n', "line 2: malformed CSV"),
        ('a,b\n1,"x"y\n', "line 2: malformed CSV"),
        ("a,a\n1,2\n", "named more than once in the header: 'a'"),
        ("", "is empty"),
        ("\n\n", "is empty"),
    ]:
        p.write_text(text)
        with pytest.raises(SchemaError, match=error):
            read_csv_rows(p, "test CSV")
    with pytest.raises(SchemaError, match="does not exist"):
        read_csv_rows(tmp_path / "missing.csv", "test CSV")
    with pytest.raises(SchemaError, match="not a regular file"):
        read_csv_rows(tmp_path, "test CSV")


def test_many_bad_rows_fit_in_twenty_lines(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b\n" + "1\n" * 30)
    with pytest.raises(SchemaError) as info:
        read_csv_rows(p, "test CSV")
    msg = str(info.value).splitlines()
    assert len(msg) == 20
    assert msg[1] == "  line 2: 1 field(s)" and msg[-1] == "  ... and 12 more"


# ---------------------------------------------------------------------------------------
# spreadsheet-formula escape
# ---------------------------------------------------------------------------------------
def test_escape_cell_policy() -> None:
    for t in ("=1+1", "+41 61 555", "-x", "@SUM(A1)", "\tx", "\rx", "-", "-inf", "=", "'=x"):
        assert escape_cell(t) == "'" + t, t
    # numbers (negative HU!) and ordinary text are never changed
    for t in ("-129.5", "+3", "-1e-05", "1E+300", ".5", "-0", "", "text", "'quoted'", "a=b"):
        assert escape_cell(t) == t, t
        assert unescape_cell(t) == t, t
    assert unescape_cell("'=1+1") == "=1+1" and unescape_cell("''=x") == "'=x"
    assert is_number("-129.5") and not is_number("-129.5 HU")


def test_escape_round_trip_for_every_string() -> None:
    rng = random.Random(11)
    alphabet = sorted(FORMULA_TRIGGERS) + ["'", "a", "1", ".", "e", " ", "\n"]
    for _ in range(20_000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        e = escape_cell(t)
        assert unescape_cell(e) == t, (t, e)
        # what reaches a spreadsheet never starts with a trigger, unless it is a number
        assert not e or e[0] not in FORMULA_TRIGGERS or is_number(e), (t, e)


def _write(path: Path, header: list[str], rows: list[list[str]], text_cols: set[str]) -> None:
    """Write like hu-roi's writers: text columns escaped, numbers as they are."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow(
                [escape_cell(v) if c in text_cols else v for c, v in zip(header, r, strict=True)]
            )


FORMULAS = ['=HYPERLINK("http://x")', "-R1", "@SUM(A1)", "+x", "\tx", "'=already"]
#: Declared text columns are read with surrounding white space removed.
STRIPPED = [f.strip() for f in FORMULAS]


def test_measurement_cells_read_back_as_written(tmp_path: Path) -> None:
    header = list(MEASUREMENT_SCHEMA.names) + ["detail"]
    text_cols = {c.name for c in MEASUREMENT_SCHEMA.columns if c.dtype in ("str", "category")}
    text_cols.add("detail")
    rows = []
    for i, f in enumerate(FORMULAS):
        r = {c: "" for c in header}
        r.update(roi_id=f + str(i), patient_id="-P01", timepoint="T0", level=f"L{i % 5 + 1}",
                 irradiated="true", lesion_type="none", kind="target", mean_hu=f"-12{i}.5",
                 min_hu="-1000", qc_status="pass", reader=f"{f}", qc_flags=f, detail=f)  # fmt: skip
        rows.append([r[c] for c in header])
    p = tmp_path / "m.csv"
    _write(p, header, rows, text_cols)
    raw = p.read_text()
    assert "'=HYPERLINK" in raw and ",-120.5," in raw, "the premise: escaped text, plain numbers"
    for read in (read_measurements, read_measurement_targets):
        m = read(p)
        assert m["roi_id"].tolist() == [f + str(i) for i, f in enumerate(STRIPPED)]
        assert m["reader"].tolist() == STRIPPED and m["qc_flags"].tolist() == STRIPPED
        assert m["detail"].tolist() == FORMULAS, "undeclared columns: exactly as written"
        assert (m["patient_id"] == "-P01").all()
        assert m["mean_hu"].tolist() == [-120.5 - i * 1.0 for i in range(len(FORMULAS))]


def test_longitudinal_and_clinical_cells_read_back_as_written(tmp_path: Path) -> None:
    from hu_roi.analysis.clinical import CLINICAL_SCHEMA, read_clinical

    header = list(LONGITUDINAL_SCHEMA.names)
    text_cols = {c.name for c in LONGITUDINAL_SCHEMA.columns if c.dtype in ("str", "category")}
    rows = []
    for i, f in enumerate(FORMULAS):
        r = {c: "" for c in header}
        r.update(patient_id=f"-P{i}", level="L1", kind="target", reader=f, irradiated="false",
                 lesion_type="mixed", hu_T0="-50.25", hu_T2="-60.25", delta_hu_T2="-10.0",
                 flags=f)  # fmt: skip
        rows.append([r[c] for c in header])
    p = tmp_path / "long.csv"
    _write(p, header, rows, text_cols)
    t = read_longitudinal(p)
    assert t["patient_id"].tolist() == [f"-P{i}" for i in range(len(FORMULAS))]
    assert t["reader"].tolist() == STRIPPED and t["flags"].tolist() == STRIPPED
    assert (t["hu_T0"] == -50.25).all() and (t["delta_hu_T2"] == -10.0).all()

    # clinical: the text columns and an extra column
    header = list(CLINICAL_SCHEMA.names) + ["note"]
    text_cols = {c.name for c in CLINICAL_SCHEMA.columns if c.dtype in ("str", "category")}
    text_cols.add("note")
    from test_analysis_clinical import _row

    rows = []
    for i, f in enumerate(FORMULAS):
        r = {c: "" if v is None else str(v) for c, v in _row(f"-P{i}").items()}
        r["note"] = f
        rows.append([r.get(c, "") for c in header])
    p = tmp_path / "clinical.csv"
    _write(p, header, rows, text_cols)
    c = read_clinical(p)
    assert c["patient_id"].tolist() == [f"-P{i}" for i in range(len(FORMULAS))]
    assert c["note"].tolist() == FORMULAS


def test_formula_text_through_measure_and_longitudinal(tmp_path: Path) -> None:
    """End to end on pydicom-written CT: text that looks like a formula (an ROI id, a
    patient ID, a reader) is escaped by the writers and read back exactly by the readers,
    while the negative HU stays a number."""
    uid = "1.2.826.0.1.3680043.10.1234.77.1"
    write_ct_series(tmp_path / "dicom", np.full((4, 24, 24), -130.0), pixel_spacing=(0.8, 0.8),
                    series_uid=uid, extra_tags={"PatientID": "-P01", "StudyDate": "20200101"})  # fmt: skip
    roi = {"roi_id": "=P01.T0-L1", "patient_id": "-P01", "timepoint": "T0",
           "series_instance_uid": uid, "level": "L1", "irradiated": True,
           "lesion_type": "none", "kind": "target",
           "shape": {"type": "circle", "center_mm": [9.2, 9.2, 1.0], "radius_mm": 5}}  # fmt: skip
    rois = tmp_path / "r.rois.json"
    rois.write_text(json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "@R1",
                                "rois": [roi]}))  # fmt: skip
    m, lg = tmp_path / "m.csv", tmp_path / "l.csv"
    for args in (["measure", "--dicom", str(tmp_path / "dicom"), "--rois", str(rois), "--out",
                  str(m)], ["longitudinal", str(m), "--out", str(lg)]):  # fmt: skip
        proc = run_main(*args, "--quiet")
        assert proc.returncode == 0, proc.stderr
    assert "'=P01.T0-L1,'-P01," in m.read_text(), "the writer escaped the text cells"
    got = read_measurements(m).loc[0]
    assert (got["roi_id"], got["patient_id"], got["reader"]) == ("=P01.T0-L1", "-P01", "@R1")
    assert got["mean_hu"] == -130.0
    t = read_longitudinal(lg).loc[0]
    assert (t["patient_id"], t["reader"], t["hu_T0"]) == ("-P01", "@R1", -130.0)
