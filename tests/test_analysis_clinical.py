"""Clinical CSV schema: typing, error messages naming patient and column, derived statuses.

References: hand-made rows with known answers (dates, heights, doses worked out below).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hu_roi.analysis.clinical import (
    CLINICAL_SCHEMA,
    alive_at,
    fracture_status,
    read_clinical,
    survival_months,
    validate_clinical,
    vertebral_compression_fracture,
)
from hu_roi.errors import SchemaError


def _row(pid: str = "P01", **kw: object) -> dict[str, object]:
    r: dict[str, object] = {c: "" for c in CLINICAL_SCHEMA.names}
    r.update(
        patient_id=pid,
        arm="IMRT",
        age="66",
        sex="male",
        kps="70",
        weight_kg="80",
        height_cm="175",
        primary_site="lung",
        localisation="thoracic",
        n_metastases="1",
        vas_T0="6",
        omed_T0="30",
        date_diagnosis="2016-01-10",
        date_rt="2017-01-02",
        date_last_contact="2018-01-01",
    )
    r.update(kw)
    return r


def _frame(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), dtype=object)


def test_valid_rows_are_typed() -> None:
    t = validate_clinical(_frame(_row(), _row("P02", arm="3dcrt", sex="F", fracture_T0="yes")))
    assert t["arm"].tolist() == ["IMRT", "3DCRT"]
    assert t["sex"].tolist() == ["male", "female"]
    assert str(t["age"].dtype) == "float64"
    assert str(t["n_metastases"].dtype) == "Int64"
    assert str(t["fracture_T0"].dtype) == "boolean"
    assert t["fracture_T0"].tolist()[1] is True
    assert pd.isna(t["fracture_T0"].iloc[0])
    assert str(t["date_rt"].dtype).startswith("datetime64")


@pytest.mark.parametrize(
    ("column", "value", "expect"),
    [
        ("vas_T2", "eleven", "patient_id=P07), column 'vas_T2': got 'eleven'"),
        ("vas_T2", "11", "column 'vas_T2': got '11', expected a number in [0, 10]"),
        ("arm", "SBRT", "column 'arm': got 'SBRT', expected one of IMRT, 3DCRT"),
        ("arm", "", "column 'arm': value is missing"),
        ("omed_T0", "-5", "column 'omed_T0': got '-5'"),
        ("date_rt", "02/31/2017", "column 'date_rt': got '02/31/2017', expected a date"),
        ("fracture_T2", "maybe", "column 'fracture_T2': got 'maybe', expected true/false"),
        ("n_metastases", "1.5", "column 'n_metastases': got '1.5', expected a whole number"),
    ],
)
def test_bad_values_name_patient_and_column(column: str, value: str, expect: str) -> None:
    with pytest.raises(SchemaError) as ei:
        validate_clinical(_frame(_row("P06"), _row("P07", **{column: value})))
    assert expect in str(ei.value)
    assert "P07" in str(ei.value)


def test_missing_column_duplicate_patient_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="required column\\(s\\) missing: vas_T3"):
        validate_clinical(_frame(_row()).drop(columns=["vas_T3"]))
    with pytest.raises(SchemaError, match="more than once[^\n]*\n  .P01."):
        validate_clinical(_frame(_row(), _row()))
    with pytest.raises(SchemaError, match="does not exist"):
        read_clinical(tmp_path / "nope.csv")
    p = tmp_path / "c.csv"
    _frame(_row(), _row("P02")).to_csv(p, index=False)
    assert len(read_clinical(p)) == 2


def test_date_consistency() -> None:
    with pytest.raises(
        SchemaError, match="patient_id=P01, column 'date_death': 2016-12-01 is before date_rt"
    ):
        validate_clinical(_frame(_row(date_death="2016-12-01")))
    with pytest.raises(
        SchemaError, match="column 'date_last_contact': 2018-01-01 is after date_death"
    ):
        validate_clinical(_frame(_row(date_death="2017-06-01")))


def test_analgesics_fill_and_check_omed() -> None:
    t = validate_clinical(_frame(_row(omed_T0="", analgesics_T0="oxycodone 40; ibuprofen 1200")))
    assert t["omed_T0"].iloc[0] == pytest.approx(60.0)
    with pytest.raises(SchemaError, match="patient_id=P01, column 'omed_T0': 30 mg/day disagrees"):
        validate_clinical(_frame(_row(analgesics_T0="oxycodone 40")))
    with pytest.raises(SchemaError, match="patient_id=P01, column 'analgesics_T2'"):
        validate_clinical(_frame(_row(analgesics_T2="tilidin 100")))


def test_alive_at_uses_nominal_days_after_rt() -> None:
    t = validate_clinical(
        _frame(
            _row("A", date_death="2017-03-01", date_last_contact="2017-03-01"),  # day 58
            _row("B", date_death="2017-04-10", date_last_contact="2017-04-10"),  # day 98
            _row("C"),
        )
    )
    assert alive_at(t, "T1").tolist() == [True, True, True]
    assert alive_at(t, "T2").tolist() == [False, True, True]
    assert alive_at(t, "T3").tolist() == [False, False, True]
    s = survival_months(t)
    assert s["death"].tolist() == [True, True, False]
    # C: 2016-01-10 -> 2018-01-01 = 722 days
    assert s["os_months"].iloc[2] == pytest.approx(722 / 30.4375)


def test_vcf_from_heights_more_than_20_percent() -> None:
    base = {"height_ant_T0_mm": "25", "height_mid_T0_mm": "24", "height_post_T0_mm": "27"}
    t = validate_clinical(
        _frame(
            _row(
                "A", **base, height_ant_T2_mm="20", height_mid_T2_mm="24", height_post_T2_mm="27"
            ),  # 20.0 %: no
            _row(
                "B", **base, height_ant_T2_mm="25", height_mid_T2_mm="19", height_post_T2_mm="27"
            ),  # 20.8 %: yes
            _row("C", **base, fracture_T2="true"),  # no follow-up heights, flag only
            _row("D", fracture_T2="false"),
            _row("E"),
        )
    )
    vcf = vertebral_compression_fracture(t, "T2")
    assert vcf.tolist()[:2] == [False, True]
    assert vcf.isna().tolist()[2:] == [True, True, True]
    status = fracture_status(t, "T2")
    assert status.tolist()[:4] == [False, True, True, False]
    assert pd.isna(status.iloc[4])
    with pytest.raises(ValueError):
        vertebral_compression_fracture(t, "T0")


def _write(path: Path, *rows: dict[str, object]) -> Path:
    _frame(*rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("value", ["9999-12-31", "99991231", "1899-12-31", "2100-01-01"])
@pytest.mark.parametrize("column", ["date_death", "date_rt"])
def test_date_outside_the_supported_range_is_refused(
    tmp_path: Path, column: str, value: str
) -> None:
    """9999-12-31 is a common 'unknown' in clinical databases: refused with the row, the
    column and what to do (an empty cell), never a traceback or a wrong survival time."""
    p = _write(tmp_path / "c.csv", _row("P01"), _row("P02", **{column: value}))
    with pytest.raises(SchemaError) as ei:
        read_clinical(p)
    lines = str(ei.value).splitlines()
    assert lines[1] == (
        f"  line 3 (patient_id=P02), column {column!r}: got {value!r}, expected a date "
        "YYYY-MM-DD from 1900-01-01 to 2099-12-31 (leave the cell empty when the date is "
        "not known)."
    )


def test_dates_are_iso_or_dicom_only() -> None:
    """01/02/2020 is January in one country and February in another: refused."""
    for value in ("01/02/2020", "2/1/2020", "Jan 5 2020", "2020", "2020-13-01"):
        with pytest.raises(SchemaError, match="column 'date_rt'"):
            validate_clinical(_frame(_row(date_rt=value)))
    t = validate_clinical(_frame(_row(date_rt="20170102"), _row("P02", date_rt="2017-1-2")))
    assert t["date_rt"].tolist() == [pd.Timestamp("2017-01-02")] * 2


@pytest.mark.parametrize(
    "value", ["99999999999999999999", "1e30", "9223372036854775808", "1" * 5000, "1e400"]
)
def test_integer_beyond_int64_is_refused(tmp_path: Path, value: str) -> None:
    p = _write(tmp_path / "c.csv", _row("P01"), _row("P02", n_metastases=value))
    with pytest.raises(SchemaError) as ei:
        read_clinical(p)
    msg = str(ei.value)
    assert "line 3 (patient_id=P02), column 'n_metastases': got " in msg
    assert "expected a whole number >= 1" in msg
    assert max(len(line) for line in msg.splitlines()) < 300, "the value is shown cut"


def test_large_integers_are_exact() -> None:
    """2**53 + 1 cannot be held by a float: read as the exact whole number."""
    t = validate_clinical(
        _frame(_row(n_metastases="9007199254740993"), _row("P02", n_metastases="3.0"))
    )
    assert t["n_metastases"].tolist() == [9007199254740993, 3]


def test_clinical_row_with_wrong_field_count_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path / "c.csv", _row("P01"), _row("P02"), _row("P03"))
    lines = p.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:5])
    lines[3] += ",extra"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError) as ei:
        read_clinical(p)
    assert str(ei.value).splitlines()[1:] == [
        "  line 3: 5 field(s)",
        f"  line 4: {len(CLINICAL_SCHEMA.names) + 1} field(s)",
    ]
