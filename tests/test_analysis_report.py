"""The trial report as people read it: human headers, "not recorded", "not reached", one
log-rank line, Hodges-Lehmann direction, figure numbering, figures with n and number at
risk (issue 16, items 11-17).

The data are the deterministic synthetic trial (hu_roi.analysis.synthetic), changed per
test where a case needs it; everything is read back from the files write_outputs writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hu_roi.analysis.clinical import read_clinical
from hu_roi.analysis.endpoints import analyze
from hu_roi.analysis.report import (
    HU_TABLES,
    NOT_REACHED,
    NOT_RECORDED,
    TRIAL_CITATION,
    at_risk,
    human_header,
    machine_name,
    write_outputs,
)
from hu_roi.analysis.schemas import longitudinal_from_measurements, read_measurements
from hu_roi.analysis.stats import kaplan_meier
from hu_roi.analysis.synthetic import make_trial

#: Machine names that must not reach a person (issue 16, item 11).
MACHINE = re.compile(r"\b(imrt_\w+|crt_\w+|median_lower|median_upper|hl_of|p_value)\b")


def _machine_cells(header: list[str]) -> list[str]:
    """Header cells that are a machine name (snake_case, or a bare "statistic")."""
    return [h for h in header if "_" in h or h.strip().lower() in ("statistic", "hl", "n_risk")]


def _run(tmp: Path, clinical: pd.DataFrame | None = None, **kw: object) -> Path:
    meas, clin = make_trial()
    if clinical is not None:
        clin = clinical
    mp, cp = tmp / "measurements.csv", tmp / "clinical.csv"
    meas.to_csv(mp, index=False)
    clin.to_csv(cp, index=False)
    ep = analyze(longitudinal_from_measurements(read_measurements(mp)), read_clinical(cp))
    out = tmp / "out"
    write_outputs(ep, out, inputs={"measurements": mp, "clinical": cp}, **kw)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("report"))


def _html(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def _text(html: str) -> str:
    """Visible text: tags and embedded images removed."""
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]*"', "", html))


# --------------------------------------------------------------------------- item 11


def test_table_csvs_and_report_have_human_headers(report: Path) -> None:
    for name in ("table1_baseline", "consort", *HU_TABLES, "table4_fractures",
                 "table5_pain_response", "pain_over_time", "survival"):  # fmt: skip
        header = list(pd.read_csv(report / f"{name}.csv", nrows=0).columns)
        assert not _machine_cells(header), (name, header)
    t2 = pd.read_csv(report / "table2_hu_irradiated.csv")
    assert {"IMRT n", "IMRT median", "3DCRT SD", "p between arms (Wilcoxon rank-sum)"} <= set(
        t2.columns
    )
    surv = pd.read_csv(report / "survival.csv")
    assert list(surv.columns[:4]) == [
        "Arm",
        "Patients",
        "Deaths",
        "Median overall survival (months)",
    ]
    # the per-patient tables keep machine names (they are data, not a table to read)
    assert "hu_T0" in pd.read_csv(report / "patient_hu_irradiated.csv").columns
    html = _html(report)
    text = _text(html)
    assert not MACHINE.search(text), MACHINE.search(text)
    assert not _machine_cells(re.findall(r"<th[^>]*>(.*?)</th>", html))


def test_headers_read_back_to_machine_names() -> None:
    for table, col in (("survival", "median_lower"), ("table2_hu_irradiated", "imrt_p_within"),
                       ("consort", "hu_measured"), ("pain_over_time", "crt_q3"),
                       ("table4_fractures", "imrt_vcf"), ("table1_baseline", "statistic")):  # fmt: skip
        assert machine_name(human_header(col, table), table) == col
    # a column no table has yet is spelled out, never shown as is
    assert human_header("imrt_km_survival_T2") == "IMRT Kaplan-Meier survival T2"
    assert human_header("crt_w") == "3DCRT W"


def _with_blank(column: str, arm: str | None = None) -> pd.DataFrame:
    _, clin = make_trial()
    clin = clin.copy()
    sel = clin["arm"] == arm if arm else slice(None)
    clin[column] = clin[column].astype(object)
    clin.loc[sel, column] = ""
    return clin


def test_table1_variable_not_supplied_reads_not_recorded(tmp_path: Path) -> None:
    out = _run(tmp_path, _with_blank("mets_brain"))
    t1 = pd.read_csv(out / "table1_baseline.csv", dtype=str, keep_default_na=False)
    row = t1.loc[t1["Variable"] == "Brain"].iloc[0]
    assert row["IMRT n (%) or mean (SD)"] == NOT_RECORDED
    assert row["3DCRT n (%) or mean (SD)"] == NOT_RECORDED
    assert row["IMRT n"] == "" and row["3DCRT n"] == "" and row["p-value"] == ""
    html = _html(out)
    brain = re.search(r"<tr><td>Brain</td>(.*?)</tr>", html)
    assert brain is not None
    cells = re.findall(r"<td>(.*?)</td>", brain.group(1))
    assert cells.count(NOT_RECORDED) == 2 and "0" not in cells, cells
    # another variable of the same data still has its counts
    assert re.search(r"<tr><td>Visceral</td><td></td><td>\d+</td>", html)


def test_table1_one_arm_not_recorded_other_arm_counts(tmp_path: Path) -> None:
    out = _run(tmp_path, _with_blank("kps", arm="IMRT"))
    t1 = pd.read_csv(out / "table1_baseline.csv", dtype=str, keep_default_na=False)
    row = t1.loc[t1["Variable"] == "Karnofsky performance status"].iloc[0]
    assert row["IMRT n (%) or mean (SD)"] == NOT_RECORDED
    assert re.fullmatch(r"\d+\.\d \(\d+\.\d\)", row["3DCRT n (%) or mean (SD)"])


# --------------------------------------------------------------------------- item 12


def test_survival_not_reached_and_log_rank_once(tmp_path: Path) -> None:
    _, clin = make_trial()
    clin = clin.copy()
    imrt = clin["arm"] == "IMRT"
    # IMRT: only 5 of 30 die, the others are censored at last contact: median not reached
    keep = clin.loc[imrt & (clin["date_death"].astype(str) != "")].index[:5]
    clin.loc[imrt & ~clin.index.isin(keep), "date_death"] = ""
    out = _run(tmp_path, clin)
    surv = pd.read_csv(out / "survival.csv", dtype=str, keep_default_na=False).set_index("Arm")
    assert surv.loc["IMRT", "Median overall survival (months)"] == NOT_REACHED
    assert surv.loc["IMRT", "Median 95% CI upper (months)"] == NOT_REACHED
    assert float(surv.loc["3DCRT", "Median overall survival (months)"]) > 0
    # the log-rank test once, on the first row, not on each arm's row
    assert (
        surv.loc["IMRT", "Log-rank p-value"] != "" and surv.loc["3DCRT", "Log-rank p-value"] == ""
    )
    html = _html(out)
    table = re.search(
        r"<caption>Overall survival.*?</table>(<p class=\"note\">.*?</p>)", html, re.S
    )
    assert table is not None
    assert re.search(r"<tr><td>IMRT</td><td>30</td><td>5</td><td>not reached</td>"
                     r"<td>(?:[\d.]+|not reached) to not reached</td>", table.group(0))  # fmt: skip
    assert table.group(0).count("Log-rank") == 1
    assert "Log-rank" not in re.sub(r"<p class=\"note\">.*", "", table.group(0))


# --------------------------------------------------------------------------- item 13


def test_number_at_risk_is_patients_still_followed() -> None:
    # R: summary(survfit(Surv(t, e) ~ 1), times = c(0, 2, 5))$n.risk -> 6 5 2
    km = kaplan_meier(np.array([1.0, 2, 2, 3, 5, 8]), np.array([1, 1, 0, 1, 0, 1]))
    assert at_risk(km, [0.0, 2.0, 5.0, 8.0, 10.0]) == [6, 5, 2, 1, 0]


def test_number_at_risk_under_the_plot_matches_the_landmark_table(tmp_path: Path) -> None:
    """The figure's counts are those of R summary(survfit, times=) (stats.survival_at, checked
    against R) at every tick, for the synthetic trial's curves."""
    from hu_roi.analysis.stats import survival_at

    meas, clin = make_trial()
    meas.to_csv(tmp_path / "m.csv", index=False)
    clin.to_csv(tmp_path / "c.csv", index=False)
    ep = analyze(
        longitudinal_from_measurements(read_measurements(tmp_path / "m.csv")),
        read_clinical(tmp_path / "c.csv"),
    )
    ticks = [0.0, 3.0, 6.0, 12.0, 24.0, 36.0, 48.0, 60.0, 72.0]
    for km in ep.survival.curves.values():
        assert at_risk(km, ticks) == survival_at(km, ticks).n_risk.tolist()


# --------------------------------------------------------------------------- items 15-17


def test_figures_numbered_in_order_with_n(report: Path) -> None:
    html = _html(report)
    headings = re.findall(r"<h2[^>]*>Figure (\d)", html)
    captions = re.findall(r"<figcaption>Fig\. (\d)", html)
    assert headings == ["1", "2", "3"] and captions == ["1", "2", "3"]
    # each figure follows its own heading
    for k in ("1", "2", "3"):
        assert html.index(f">Figure {k}") < html.index(f"<figcaption>Fig. {k}")
    assert "n = IMRT / 3DCRT" in html


def test_hl_shift_is_imrt_minus_3dcrt_stated_once(report: Path) -> None:
    t2 = pd.read_csv(report / "table2_hu_irradiated.csv").set_index(
        "Quantity (HU, or % for relative change)"
    )
    pat = pd.read_csv(report / "patient_hu_irradiated.csv")
    for quantity, col in (("HU baseline", "hu_T0"), ("HU T2", "hu_T2"), ("HU T3", "hu_T3")):
        a = pat.loc[pat["arm"] == "IMRT", col].dropna().to_numpy()
        b = pat.loc[pat["arm"] == "3DCRT", col].dropna().to_numpy()
        # Hodges-Lehmann shift of IMRT - 3DCRT: median of all pairwise differences
        hl = float(np.median(np.subtract.outer(a, b)))
        row = t2.loc[quantity]
        assert row["Hodges-Lehmann shift IMRT - 3DCRT"] == pytest.approx(hl, abs=1e-6), quantity
        lo, hi = row["Shift IMRT - 3DCRT 95% CI lower"], row["Shift IMRT - 3DCRT 95% CI upper"]
        assert lo <= hl <= hi
    assert "hl_of" not in t2.columns and "HL of" not in _html(report)
    # VAS / OMED: the same direction, no column naming it per row
    pain = pd.read_csv(report / "pain_over_time.csv")
    assert "Hodges-Lehmann shift IMRT - 3DCRT" in pain.columns
    assert not [c for c in pain.columns if c.endswith(" of")]
    assert "Difference (IMRT - 3DCRT)" in _html(report)
    html = _html(report)
    t2_html = html[html.index("<caption>Table 2.") : html.index("</table>", html.index("Table 2."))]
    assert t2_html.count("IMRT - 3DCRT") == 1


# --------------------------------------------------------------------------- items 14, 20


def test_banner_title_citation_and_sections(tmp_path: Path) -> None:
    out = _run(tmp_path, title="SYNTHETIC DATA - demo", banner="The 60 patients are synthetic.")
    html = _html(out)
    assert (
        "<title>SYNTHETIC DATA - demo</title>" in html and "<h1>SYNTHETIC DATA - demo</h1>" in html
    )
    assert '<div class="banner" role="note">The 60 patients are synthetic.</div>' in html
    assert "doi:10.1186/s13014-018-1161-4" in TRIAL_CITATION and "NCT02832830" in TRIAL_CITATION
    assert "Radiation Oncology 2018;13:212" in html
    for anchor in ("consort", "table1", "table2", "table3", "fig1", "table4", "fig2", "table5",
                   "fig3", "methods"):  # fmt: skip
        assert f'<h2 id="{anchor}">' in html and f'href="#{anchor}"' in html
    assert not re.search(r'(src|href)="https?:', html)


def test_without_banner_no_banner(report: Path) -> None:
    assert 'class="banner"' not in _html(report)


def test_further_tables_rendered_with_human_headers(tmp_path: Path) -> None:
    import dataclasses

    meas, clin = make_trial()
    mp, cp = tmp_path / "m.csv", tmp_path / "c.csv"
    meas.to_csv(mp, index=False)
    clin.to_csv(cp, index=False)
    ep = analyze(longitudinal_from_measurements(read_measurements(mp)), read_clinical(cp))
    extra = pd.DataFrame({"timepoint": ["T2"], "imrt_km_survival": [0.8], "crt_km_survival": [0.7]})
    ep = dataclasses.replace(ep, tables={**ep.tables, "km_landmarks": extra})
    write_outputs(ep, tmp_path / "o")
    html = _html(tmp_path / "o")
    assert '<h2 id="further">Further endpoints</h2>' in html
    assert '<th colspan="1">IMRT Kaplan-Meier survival</th>' in html
    assert "Kaplan-Meier landmarks" in html
