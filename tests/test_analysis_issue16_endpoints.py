"""Issue 16 endpoints: conventions as options, within-arm pseudo-medians, R's interval,
KM at 3/6 months, log-rank O/E, fractures with patient IDs and height loss, heights from
measurement rows, the measurement CSV's arm column, HU after death, the tidy endpoints file.

References: tests/data/r_reference/issue16_reference.json (make_reference_issue16.R, R 4.2.2)
for every statistic; hand-made rows with the answers worked out in the comments.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from r_reference import load_reference

from hu_roi.analysis.clinical import CLINICAL_SCHEMA, survival_months, validate_clinical
from hu_roi.analysis.endpoints import (
    Conventions,
    analyze,
    fracture_patients,
    hu_table,
    overall_survival,
)
from hu_roi.analysis.schemas import (
    LONGITUDINAL_SCHEMA,
    MEASUREMENT_SCHEMA,
    longitudinal_from_measurements,
)
from hu_roi.errors import SchemaError

ROOT = Path(__file__).resolve().parents[1]


REF = load_reference("issue16_reference.json")


def _hu_frame(imrt: list[float], crt: list[float]) -> pd.DataFrame:
    """One row per patient with the change T0-T2 (HU) given per arm."""
    n = len(imrt) + len(crt)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "arm": ["IMRT"] * len(imrt) + ["3DCRT"] * len(crt),
            "hu_T0": 100.0,
            "hu_T2": np.nan,
            "hu_T3": np.nan,
            "delta_hu_T2": imrt + crt,
            "pct_delta_T2": np.nan,
            "delta_hu_T3": np.nan,
            "pct_delta_T3": np.nan,
        }
    )


def _approx(got: float, want: float, scale: float = 1.0) -> None:
    assert got == pytest.approx(want, rel=1e-7, abs=1e-7 * scale)


@pytest.mark.parametrize("within", ["r-default", "r-normal", "sas"])
def test_hu_table_within_arm_pseudo_median_and_test_match_r(within: str) -> None:
    a, b = REF["within_arm"][0], REF["within_arm"][1]
    t = hu_table(_hu_frame(a["x"], b["x"]), conventions=Conventions(within_test=within))
    row = t.set_index("quantity").loc["HU T0-T2"]
    for prefix, case in (("imrt", a), ("crt", b)):
        r = case["r_normal" if within == "r-normal" else "r_default"]
        scale = float(np.max(np.abs(case["x"])))
        _approx(row[f"{prefix}_pseudomedian"], r["estimate"], scale)
        _approx(row[f"{prefix}_pseudomedian_low"], r["ci_low"], scale)
        _approx(row[f"{prefix}_pseudomedian_high"], r["ci_high"], scale)
        want = case["sas"] if within == "sas" else r
        _approx(row[f"{prefix}_p_within"], want["p_value"])
        _approx(row[f"{prefix}_stat_within"], want["statistic"])
    assert row["within_test"] == within
    # no within-arm test on the level rows
    assert np.isnan(t.set_index("quantity").loc["HU baseline", "imrt_p_within"])


def test_hu_table_between_arm_r_interval_matches_r() -> None:
    case = REF["between_arm"][0]
    r = case["r"]
    t = hu_table(_hu_frame(case["x"], case["y"]), conventions=Conventions(between="r"))
    row = t.set_index("quantity").loc["HU T0-T2"]
    assert row["hl_of"] == "IMRT - 3DCRT" and row["between_test"] == "r"
    for col, key in (("hl", "estimate"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                     ("w", "statistic"), ("p_between", "p_value")):  # fmt: skip
        _approx(row[col], r[key], 100.0)
    sas = hu_table(_hu_frame(case["x"], case["y"])).set_index("quantity").loc["HU T0-T2"]
    assert sas["between_test"] == "sas" and sas["ci_low"] != row["ci_low"]


def _row(pid: str, **kw: object) -> dict[str, object]:
    r: dict[str, object] = {c: "" for c in CLINICAL_SCHEMA.names}
    r.update(
        patient_id=pid, arm="IMRT", age="66", sex="male", kps="70", weight_kg="80",
        height_cm="175", primary_site="lung", localisation="thoracic", n_metastases="1",
        vas_T0="6", omed_T0="30", date_diagnosis="2016-01-10", date_rt="2017-01-02",
        date_last_contact="2018-01-01",
    )  # fmt: skip
    r.update(kw)
    return r


def _clinical(*rows: dict[str, object]) -> pd.DataFrame:
    return validate_clinical(pd.DataFrame(list(rows), dtype=object))


def test_survival_landmarks_and_observed_expected_match_r() -> None:
    """OS entered as os_months/os_event (origin 'columns'): KM at 3 and 6 months per arm
    equals R's summary(survfit(...), times=c(3, 6)) of the same times."""
    cases = [c for c in REF["km_at"] if 3.0 in c["times"] and 6.0 in c["times"]][:2]
    assert len(cases) == 2
    rows = []
    for arm, case in zip(("IMRT", "3DCRT"), cases, strict=True):
        for i, (t, e) in enumerate(zip(case["time"], case["event"], strict=True)):
            rows.append(_row(f"{arm}{i}", arm=arm, os_months=str(t), os_event=str(int(e))))
    clin = _clinical(*rows)
    with pytest.raises(SchemaError, match="os_months and os_event"):
        overall_survival(clin.drop(columns=["os_months"]), origin="columns")
    res = overall_survival(clin, origin="columns")
    lm = res.landmarks.set_index(["arm", "months"])
    for arm, case in zip(("IMRT", "3DCRT"), cases, strict=True):
        r = case["r"]
        for m in (3.0, 6.0):
            k = r["time"].index(m)
            got = lm.loc[(arm, m)]
            assert got["survival"] == pytest.approx(r["survival"][k], rel=1e-12)
            assert got["ci_low"] == pytest.approx(r["lower"][k], rel=1e-9)
            assert got["ci_high"] == pytest.approx(r["upper"][k], rel=1e-9)
            assert got["n_risk"] == r["n_risk"][k]
    tab = res.table.set_index("arm")
    assert tab["observed"].sum() == sum(sum(c["event"]) for c in cases)
    assert tab["observed"].sum() == pytest.approx(tab["expected"].sum())
    assert (tab["origin"] == "columns").all()


def test_os_origin_rt_counts_from_the_start_of_rt() -> None:
    clin = _clinical(_row("A", date_death="2017-03-01", date_last_contact="2017-03-01"))
    # diagnosis 2016-01-10 -> 2017-03-01 = 416 days; RT 2017-01-02 -> 58 days
    assert survival_months(clin)["os_months"].iloc[0] == pytest.approx(416 / 30.4375)
    assert survival_months(clin, "rt")["os_months"].iloc[0] == pytest.approx(58 / 30.4375)


def test_os_columns_may_replace_diagnosis_and_last_contact_dates() -> None:
    clin = _clinical(_row("A", date_diagnosis="", date_last_contact="", os_months="7.5",
                          os_event="1"))  # fmt: skip
    s = survival_months(clin, "columns")
    assert s["os_months"].iloc[0] == 7.5 and bool(s["death"].iloc[0])
    with pytest.raises(SchemaError, match="without date_diagnosis"):
        survival_months(clin, "diagnosis")
    dates_only = _clinical(_row("E"))
    with pytest.raises(SchemaError, match="no patient has them"):
        survival_months(dates_only, "columns")
    with pytest.raises(SchemaError, match="column 'date_diagnosis': value is missing"):
        _clinical(_row("B", date_diagnosis=""))
    with pytest.raises(SchemaError, match="give both or neither"):
        _clinical(_row("C", os_months="3"))
    with pytest.raises(SchemaError, match="0 \\(censored\\) but date_death"):
        _clinical(_row("D", os_months="3", os_event="0", date_death="2017-04-01",
                       date_last_contact="2017-04-01"))  # fmt: skip


def test_fracture_patients_name_ids_and_height_loss() -> None:
    base = {"height_ant_T0_mm": "25", "height_mid_T0_mm": "24", "height_post_T0_mm": "27"}
    clin = _clinical(
        _row("A", **base, height_ant_T2_mm="20", height_mid_T2_mm="24", height_post_T2_mm="27"),
        _row(
            "B",
            arm="3DCRT",
            **base,
            height_ant_T2_mm="25",
            height_mid_T2_mm="19",
            height_post_T2_mm="27",
        ),  # fmt: skip
        _row("C", fracture_T0="true", fracture_T2="false"),
    )
    fp = fracture_patients(clin)
    assert fp[["patient_id", "timepoint"]].values.tolist() == [["C", "T0"], ["B", "T2"]]
    b = fp.iloc[1]
    # B: middle 24 -> 19 mm = 20.83 % loss (> 20 %: VCF); A: anterior exactly 20 %: no VCF
    assert bool(b["vcf"]) and b["loss_mid_pct"] == pytest.approx(100 * 5 / 24)
    assert b["max_loss_pct"] == pytest.approx(100 * 5 / 24) and b["loss_ant_pct"] == 0
    ep = analyze(LONGITUDINAL_SCHEMA.empty(), clin)
    t4 = ep.tables["table4_fractures"].set_index("timepoint")
    assert t4.loc["T2", "crt_patients"] == "B" and t4.loc["T0", "imrt_patients"] == "C"


def _meas(rows: list[dict[str, object]]) -> pd.DataFrame:
    full = []
    for r in rows:
        base = {"roi_id": f"{r['patient_id']}-{r['timepoint']}-{r.get('kind', 'target')}",
                "level": "L3", "irradiated": "true", "lesion_type": "mixed", "kind": "target",
                "qc_status": "pass", "qc_flags": "", "reader": "R1", "mean_hu": ""}  # fmt: skip
        base.update(r)
        full.append(base)
    return MEASUREMENT_SCHEMA.validate(pd.DataFrame(full, dtype=object))


def _hu_rows(pid: str, hu: tuple[float, float, float], **kw: object) -> list[dict[str, object]]:
    return [{"patient_id": pid, "timepoint": tp, "mean_hu": str(v), **kw}
            for tp, v in zip(("T0", "T2", "T3"), hu, strict=True)]  # fmt: skip


def test_hu_after_death_is_left_out_by_default_and_can_be_included() -> None:
    # D died 2017-03-01: day 58 after RT, before the nominal T2 (day 91) and T3 (day 182)
    clin = _clinical(_row("A"), _row("D", date_death="2017-03-01", date_last_contact="2017-03-01"))
    meas = _meas(_hu_rows("A", (100, 120, 130)) + _hu_rows("D", (100, 150, 160)))
    long = longitudinal_from_measurements(meas)
    ep = analyze(long, clin, measurements=meas)
    t2 = ep.tables["table2_hu_irradiated"].set_index("quantity")
    assert t2.loc["HU T2", "imrt_n"] == 1 and t2.loc["HU T2", "imrt_median"] == 120
    assert any("T2 after the patient's death" in n and "D" in n for n in ep.notes)
    settings = ep.tables["analysis_settings"].set_index("setting")
    assert settings.loc["hu_after_death", "value"] == "excluded"
    inc = analyze(long, clin, measurements=meas, hu_after_death=True)
    t2i = inc.tables["table2_hu_irradiated"].set_index("quantity")
    assert t2i.loc["HU T2", "imrt_n"] == 2 and t2i.loc["HU T2", "imrt_median"] == 135
    assert inc.tables["analysis_settings"].set_index("setting").loc["hu_after_death",
                                                                     "value"] == "included"  # fmt: skip


def test_measurement_arm_column_is_checked_against_clinical() -> None:
    clin = _clinical(_row("A"), _row("B", arm="3DCRT"))
    ok = _meas(_hu_rows("A", (1, 2, 3), arm="IMRT") + _hu_rows("B", (1, 2, 3), arm="3D-CRT"))
    analyze(longitudinal_from_measurements(ok), clin, measurements=ok)
    bad = _meas(_hu_rows("A", (1, 2, 3), arm="IMRT") + _hu_rows("B", (1, 2, 3), arm="IMRT"))
    with pytest.raises(SchemaError, match=r"3 row\(s\) whose arm.*patient B\): arm 'IMRT'"):
        analyze(longitudinal_from_measurements(bad), clin, measurements=bad)


def _height_rows(pid: str, tp: str, mm: tuple[float, float, float], level: str = "L3") -> list:
    kinds = ("height-anterior", "height-middle", "height-posterior")
    return [{"patient_id": pid, "timepoint": tp, "kind": k, "level": level, "length_mm": str(v),
             "roi_id": f"{pid}-{tp}-{k}-{level}"} for k, v in zip(kinds, mm, strict=True)]  # fmt: skip


def test_heights_from_measurement_rows_fill_the_clinical_heights() -> None:
    clin = _clinical(_row("A"), _row("B", height_ant_T0_mm="30"))
    rows = (_hu_rows("A", (100, 110, 120)) + _hu_rows("B", (100, 110, 120))
            + _height_rows("A", "T0", (25, 24, 27)) + _height_rows("A", "T2", (25, 19, 27))
            + _height_rows("B", "T0", (25, 24, 27)) + _height_rows("B", "T2", (25, 24, 27))
            + _height_rows("B", "T2", (9, 9, 9), level="L1"))  # fmt: skip
    meas = _meas(rows)
    ep = analyze(longitudinal_from_measurements(meas), clin, measurements=meas)
    fp = ep.tables["fracture_patients"]
    # A: middle 24 -> 19 mm from the measured rows: VCF with 20.8 % loss
    assert fp["patient_id"].tolist() == ["A"]
    assert fp["max_loss_pct"].iloc[0] == pytest.approx(100 * 5 / 24)
    notes = " | ".join(ep.notes)
    assert "vertebral height(s) taken from the measurement CSV" in notes
    # B: clinical anterior T0 30 mm vs measured 25 mm -> named; clinical kept
    assert "B height_ant_T0_mm clinical 30 vs measured 25.0" in notes
    assert "not at the patient's irradiated index vertebra, not used: B L1" in notes
    t4 = ep.tables["table4_fractures"].set_index("timepoint")
    assert t4.loc["T2", "imrt_vcf"] == 1 and t4.loc["T2", "imrt_patients"] == "A"


def test_tidy_endpoints_hold_the_table_numbers_and_the_conventions() -> None:
    a, b = REF["between_arm"][1]["x"], REF["between_arm"][1]["y"]
    rows = [_row(f"I{i}") for i in range(len(a))] + [
        _row(f"C{i}", arm="3DCRT") for i in range(len(b))
    ]
    clin = _clinical(*rows)
    meas_rows = []
    for pid, d in zip([r["patient_id"] for r in rows], list(a) + list(b), strict=True):
        meas_rows += _hu_rows(str(pid), (200.0, 200.0 + d, 200.0))
    meas = _meas(meas_rows)
    ep = analyze(longitudinal_from_measurements(meas), clin, between="r", within_test="sas")
    tidy = ep.tables["endpoints"]
    assert list(tidy.columns) == ["endpoint", "group", "timepoint", "statistic", "value",
                                  "ci_low", "ci_high", "n", "method"]  # fmt: skip
    hl = tidy.loc[(tidy["endpoint"] == "Table 2: All metastases: HU T0-T2")
                  & (tidy["statistic"] == "HL shift IMRT - 3DCRT")].iloc[0]  # fmt: skip
    r = REF["between_arm"][1]["r"]
    _approx(hl["value"], r["estimate"], 100)
    _approx(hl["ci_low"], r["ci_low"], 100)
    assert hl["n"] == len(a) + len(b) and hl["method"] == "Wilcoxon rank-sum (r)"
    w = tidy.loc[(tidy["endpoint"] == "Table 2: All metastases: HU T0-T2")
                 & (tidy["statistic"] == "W")]  # fmt: skip
    _approx(w["value"].iloc[0], r["statistic"])
    within = tidy.loc[tidy["method"] == "Wilcoxon signed-rank (sas)"]
    assert set(within["group"]) == {"IMRT", "3DCRT"}
    assert "Overall survival (origin diagnosis)" in set(tidy["endpoint"])
    assert {"3 months", "6 months"} <= set(tidy["timepoint"])
    # every p-value of Table 2 is in the tidy file
    t2 = ep.tables["table2_hu_irradiated"]
    ps = set(np.round(tidy.loc[tidy["statistic"].str.startswith("p"), "value"].astype(float), 12))
    for v in pd.concat([t2["p_between"], t2["imrt_p_within"], t2["crt_p_within"]]).dropna():
        assert round(float(v), 12) in ps
    assert any("IMRT - 3DCRT" in m for m in ep.methods)


def _clinical_csv(path: Path, *rows: dict[str, object]) -> Path:
    pd.DataFrame(list(rows), dtype=object).to_csv(path, index=False)
    return path


def _four_patient_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Clinical and measurement CSVs of 4 patients (2 per arm), HU at T0, T2, T3."""
    clin = _clinical_csv(tmp_path / "c.csv", _row("A"), _row("B", arm="3DCRT"),
                         _row("C"), _row("D", arm="3DCRT"))  # fmt: skip
    mrows = []
    for pid, hu in (("A", (100, 130, 140)), ("B", (100, 90, 95)), ("C", (100, 125, 150)),
                    ("D", (100, 80, 70))):  # fmt: skip
        mrows += _hu_rows(pid, hu)
    meas = pd.DataFrame([{**{"level": "L3", "irradiated": "true", "lesion_type": "mixed",
                             "kind": "target", "qc_status": "pass", "reader": "R1"},
                          "roi_id": f"{r['patient_id']}{r['timepoint']}", **r} for r in mrows])  # fmt: skip
    mpath = tmp_path / "m.csv"
    meas.to_csv(mpath, index=False)
    return clin, mpath


def test_cli_options_reach_the_outputs(tmp_path: Path) -> None:
    from hu_roi.analysis.cli import add_analyze_parser

    clin, mpath = _four_patient_inputs(tmp_path)
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers())
    out = tmp_path / "out"
    argv = ["analyze", "--measurements", str(mpath), "--clinical", str(clin), "--out", str(out),
            "--quiet", "--within-test", "r-normal", "--between", "r", "--os-origin", "rt",
            "--include-hu-after-death"]  # fmt: skip
    for _ in range(2):  # the second run replaces the folder it wrote
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    settings = pd.read_csv(out / "analysis_settings.csv")
    assert settings.iloc[:, 1].tolist()[:4] == ["r-normal", "r", "rt", "included"]
    tidy = pd.read_csv(out / "endpoints.csv")
    assert "Overall survival (origin rt)" in set(tidy["endpoint"])
    assert (out / "survival_landmarks.csv").is_file() and (out / "fracture_patients.csv").is_file()


def test_cli_refuses_an_unknown_convention_and_a_wrong_arm(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "analyze", "--measurements", "m.csv",
         "--clinical", "c.csv", "--out", "o", "--between", "spss"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "--between" in r.stderr
    clin = _clinical_csv(tmp_path / "c.csv", _row("A"))
    pd.DataFrame([{"roi_id": "x", "patient_id": "A", "timepoint": "T0", "level": "L3",
                   "irradiated": "true", "lesion_type": "mixed", "kind": "target",
                   "mean_hu": "100", "qc_status": "pass", "arm": "3DCRT"}]).to_csv(
        tmp_path / "m.csv", index=False)  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "analyze", "--measurements", "m.csv",
         "--clinical", str(clin), "--out", "o"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("hu-roi analyze: error: measurement CSV: 1 row(s) whose arm")
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_docs_list_every_accepted_clinical_value_and_alias() -> None:
    from hu_roi.analysis.clinical import accepted_values_markdown

    text = (ROOT / "docs" / "csv_schemas.md").read_text(encoding="utf-8")
    part = text.split("<!-- accepted:clinical -->\n")[1].split("<!-- /accepted -->")[0]
    assert part.strip() == accepted_values_markdown().strip()
    for col in CLINICAL_SCHEMA.columns:
        for alias in col.aliases:
            assert f"`{alias}`" in part, (col.name, alias)
        if col.dtype == "bool":
            assert f"`{col.name}`" in part
    # every documented alias is read as documented
    t = _clinical(_row("A", arm="3d crt", sex="W", primary_site="Prostata", localisation="sacral"))
    assert t.loc[0, ["arm", "sex", "primary_site", "localisation"]].tolist() == [
        "3DCRT", "female", "prostate", "sacrum"]  # fmt: skip


@pytest.mark.parametrize("how", ["lsc", "precision"])
def test_report_states_the_lsc_when_one_is_given(tmp_path: Path, how: str) -> None:
    """Issue 14 item 8: `analyze --lsc HU` or `--precision reliability.csv` puts the LSC
    and its source in the report's Methods; without either, no LSC sentence."""
    from hu_roi.analysis.cli import add_analyze_parser

    clin, mpath = _four_patient_inputs(tmp_path)
    rel = tmp_path / "reliability.csv"
    rel.write_text("statistic,estimate,ci_low,ci_high,n\nprecision_sd,4.5,,,30\nlsc,12.465,,,30\n")
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers())
    base = ["analyze", "--measurements", str(mpath), "--clinical", str(clin), "--quiet"]
    extra = ["--lsc", "12.465"] if how == "lsc" else ["--precision", str(rel)]
    args = parser.parse_args([*base, "--out", str(tmp_path / "with"), *extra])
    assert args.func(args) == 0
    page = (tmp_path / "with" / "report.html").read_text(encoding="utf-8")
    assert "Least significant change (LSC) of the reading: 12.465 HU" in page
    assert ("reliability.csv" in page) is (how == "precision")
    args = parser.parse_args([*base, "--out", str(tmp_path / "without")])
    assert args.func(args) == 0
    assert "Least significant change" not in (tmp_path / "without" / "report.html").read_text(
        encoding="utf-8"
    )
