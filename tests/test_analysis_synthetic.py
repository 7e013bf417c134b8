"""The whole analysis on the deterministic synthetic 60-patient trial.

References: the paper's printed counts and p-values (tests/data/paper/), and R 4.2
(`wilcox.test`, `survival::survdiff`/`survfit`) run on the tables this analysis wrote, with
the calls quoted next to the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from hu_roi.analysis.cli import add_analyze_parser, run_analyze

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "tests" / "data" / "paper"


def _load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_trial", ROOT / "scripts" / "make_synthetic_trial.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Synthetic trial written by the script, analysed through the CLI function."""
    mod = _load_script()
    data = tmp_path_factory.mktemp("trial")
    assert mod.main(["--out", str(data)]) == 0
    out = data / "analysis"
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["analyze", "--measurements", str(data / "measurements.csv"), "--clinical", str(data / "clinical.csv"),
         "--out", str(out), "--quiet"]
    )  # fmt: skip
    t0 = time.perf_counter()
    rc = args.func(args)
    elapsed = time.perf_counter() - t0
    return {"rc": rc, "out": out, "data": data, "elapsed": elapsed, "mod": mod}


def _csv(trial: dict[str, object], name: str) -> pd.DataFrame:
    """A table CSV with the machine column names behind its human headers."""
    from hu_roi.analysis.report import machine_name

    t = pd.read_csv(Path(trial["out"]) / f"{name}.csv")  # type: ignore[arg-type]
    return t.rename(columns=lambda h: machine_name(h, name))


def test_generator_is_deterministic(trial: dict[str, object]) -> None:
    mod = trial["mod"]
    m1, c1 = mod.make_trial()  # type: ignore[attr-defined]
    m2, c2 = mod.make_trial()  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(m1, m2)
    pd.testing.assert_frame_equal(c1, c2)
    assert len(c1) == 60 and (c1["arm"] == "IMRT").sum() == 30
    written = pd.read_csv(Path(trial["data"]) / "measurements.csv")  # type: ignore[arg-type]
    assert list(written.columns[:27]) == list(m1.columns[:27])


def test_runs_in_seconds_and_writes_everything(trial: dict[str, object]) -> None:
    assert trial["rc"] == 0
    # the analysis itself takes ~1-2 s (plus imports); generous bound for a loaded CI machine
    assert trial["elapsed"] < 30.0
    out = Path(trial["out"])  # type: ignore[arg-type]
    for name in ("table1_baseline", "consort", "table2_hu_irradiated", "table3_hu_by_lesion",
                 "hu_unirradiated", "table4_fractures", "table5_pain_response", "pain_over_time",
                 "survival"):  # fmt: skip
        assert (out / f"{name}.csv").is_file(), name
    for fig in ("fig2_overall_survival", "fig3_vas_omed", "fig_hu_over_time"):
        assert (out / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_is_self_contained_with_tables_and_figures(trial: dict[str, object]) -> None:
    html = (Path(trial["out"]) / "report.html").read_text(encoding="utf-8")  # type: ignore[arg-type]
    for k in range(1, 6):
        assert f"Table {k}." in html, k
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)) == 3
    assert not re.search(r'(src|href)="https?:', html)
    assert "OMED conversion table" in html and "CDC 2016" in html
    assert "Software" in html and "pandas" in html and "Methods" in html


def test_counts_match_the_paper(trial: dict[str, object]) -> None:
    ref = json.loads((PAPER / "counts.json").read_text())
    consort = _csv(trial, "consort").set_index(["arm", "timepoint"])
    for arm in ("IMRT", "3DCRT"):
        assert consort.loc[(arm, "T2"), "deaths_since_previous"] == ref["deaths_by_T2"][arm]
        assert consort.loc[(arm, "T3"), "deaths_since_previous"] == ref["deaths_T2_to_T3"][arm]
        assert consort.loc[(arm, "T2"), "alive"] == ref["alive"]["T2"][arm]
        assert consort.loc[(arm, "T3"), "hu_measured"] == ref["alive"]["T3"][arm]
    t2 = _csv(trial, "table2_hu_irradiated").set_index("quantity")
    assert t2.loc[["HU baseline", "HU T2", "HU T3"], "imrt_n"].tolist() == ref["table2_n"]["IMRT"]
    assert t2.loc[["HU baseline", "HU T2", "HU T3"], "crt_n"].tolist() == ref["table2_n"]["3DCRT"]
    t3 = _csv(trial, "table3_hu_by_lesion")
    for arm, p in (("IMRT", "imrt"), ("3DCRT", "crt")):
        for lesion, ns in ref["table3_n"][arm].items():
            d = t3.loc[t3["subgroup"] == lesion.capitalize()].set_index("quantity")
            assert d.loc[["HU baseline", "HU T2", "HU T3"], f"{p}_n"].tolist() == ns, (arm, lesion)
    # Table 3 baseline medians per arm and lesion type are the printed ones
    mixed = t3.loc[(t3["subgroup"] == "Mixed") & (t3["quantity"] == "HU baseline")].iloc[0]
    assert (mixed["imrt_median"], mixed["crt_median"]) == (242.0, 230.5)


def test_printed_p_values_reproduced_on_synthetic_trial(trial: dict[str, object]) -> None:
    t4 = _csv(trial, "table4_fractures").set_index("timepoint")
    ref4 = pd.read_csv(PAPER / "table4_fractures.csv").set_index("timepoint")
    for tp in ("T0", "T2", "T3"):
        assert (
            t4.loc[tp, ["imrt_n", "imrt_yes", "crt_n", "crt_yes"]].tolist()
            == ref4.loc[tp, ["imrt_n", "imrt_yes", "crt_n", "crt_yes"]].tolist()
        )
        assert round(t4.loc[tp, "p_value"], 3) == ref4.loc[tp, "printed_p"]
    assert t4["imrt_vcf"].sum() >= 1  # one fracture is found only from vertebral heights
    t5 = _csv(trial, "table5_pain_response")
    ref5 = pd.read_csv(PAPER / "table5_pain.csv")
    m = t5.merge(ref5, on=["timepoint", "category"], suffixes=("", "_paper"))
    assert (m["imrt_n"] == m["imrt_n_paper"]).all() and (m["crt_n"] == m["crt_n_paper"]).all()
    pp = m.dropna(subset=["printed_p"])
    assert (pp["p_value"].round(3) == pp["printed_p"]).all()
    t1 = _csv(trial, "table1_baseline")
    printed = {"Gender": 0.795, "Localisation of the metastasis": 0.261, "Number of metastases": 0.140,
               "Visceral": 0.292, "Hormone therapy": 0.091, "Chemotherapy": 0.118, "NSAID": 0.260,
               "Weight (kg)": 0.929, "Height (cm)": 0.790}  # fmt: skip
    for var, p in printed.items():
        got = t1.loc[(t1["variable"] == var) & t1["p_value"].notna(), "p_value"].iloc[0]
        assert got == pytest.approx(p, abs=0.0015), var


def test_statistics_agree_with_r_on_written_tables(trial: dict[str, object]) -> None:
    """R 4.2.2 on patient_hu_irradiated.csv / the OS times of the synthetic trial.

    a <- d[d$arm=="IMRT",]; b <- d[d$arm=="3DCRT",]
    wilcox.test(a$hu_T0, b$hu_T0, exact=FALSE, correct=TRUE)$p.value            0.1957907584
    wilcox.test(a$pct_delta_T2, b$pct_delta_T2, exact=FALSE, correct=TRUE)$p.value 0.1188980993
    wilcox.test(a$pct_delta_T2)$p.value                                          0.002325057983
    wilcox.test(a$pct_delta_T3)$p.value                                          0.04827880859
    survdiff(Surv(os_months, death) ~ arm)$chisq                                 0.8959924136
    survfit(...): IMRT median 45.0 (29.0, 56.4); 3DCRT 36.5 (31.0, 50.7)
    """
    t2 = _csv(trial, "table2_hu_irradiated").set_index("quantity")
    assert t2.loc["HU baseline", "p_between"] == pytest.approx(0.1957907584, abs=1e-8)
    assert t2.loc["HU T0-T2 (%)", "p_between"] == pytest.approx(0.1188980993, abs=1e-8)
    assert t2.loc["HU T0-T2 (%)", "imrt_p_within"] == pytest.approx(0.002325057983, abs=1e-9)
    assert t2.loc["HU T0-T3 (%)", "imrt_p_within"] == pytest.approx(0.04827880859, abs=1e-9)
    s = _csv(trial, "survival").set_index("arm")
    assert s.loc["IMRT", "statistic"] == pytest.approx(0.8959924136, abs=1e-8)
    assert (round(s.loc["IMRT", "median_lower"], 1), round(s.loc["IMRT", "median_upper"], 1)) == (
        29.0,
        56.4,
    )
    assert (
        round(s.loc["3DCRT", "median_months"], 1),
        round(s.loc["3DCRT", "median_upper"], 1),
    ) == (36.5, 50.7)


def test_cli_errors_are_one_line_exit_2(
    trial: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = Path(trial["data"])  # type: ignore[arg-type]
    clin = pd.read_csv(data / "clinical.csv", dtype=str, keep_default_na=False)
    clin.loc[3, "vas_T2"] = "severe"
    bad = tmp_path / "clinical.csv"
    clin.to_csv(bad, index=False)
    ns = argparse.Namespace(
        measurements=data / "measurements.csv", clinical=bad, out=tmp_path / "o", quiet=True
    )
    assert run_analyze(ns) == 2
    err = capsys.readouterr().err
    assert f"patient_id={clin.loc[3, 'patient_id']}), column 'vas_T2': got 'severe'" in err
    ns = argparse.Namespace(
        measurements=tmp_path / "missing.csv", clinical=bad, out=tmp_path / "o", quiet=True
    )
    assert run_analyze(ns) == 2


def test_repeated_measures_option(trial: dict[str, object]) -> None:
    from hu_roi.analysis.clinical import read_clinical
    from hu_roi.analysis.endpoints import analyze
    from hu_roi.analysis.schemas import longitudinal_from_measurements, read_measurements

    data = Path(trial["data"])  # type: ignore[arg-type]
    lg = longitudinal_from_measurements(read_measurements(data / "measurements.csv"))
    ep = analyze(lg, read_clinical(data / "clinical.csv"), repeated_measures=True)
    rm = ep.tables["hu_repeated_measures"].set_index("term")
    assert {"C(arm)[T.IMRT]", "omed", "C(arm)[T.IMRT]:C(timepoint)[T.T3]"} <= set(rm.index)
    assert ((rm["ci_low"] <= rm["estimate"]) & (rm["estimate"] <= rm["ci_high"])).all()
