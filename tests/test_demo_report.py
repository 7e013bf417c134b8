"""``hu-roi demo`` as one chain, DICOM -> measurements -> longitudinal -> statistics, and
its reports saying that every patient is synthetic (issue 16, item 20)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
import pytest

from hu_roi.demo import SAMPLE_DIR, run_demo

DOI = "10.1186/s13014-018-1161-4"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SAMPLE_DIR / "dicom").is_dir():
        pytest.skip("sample_dicom/ not present")
    out = tmp_path_factory.mktemp("demo") / "out"
    args = argparse.Namespace(out=str(out), sample=str(SAMPLE_DIR), quiet=True, verbose=False)
    assert run_demo(args) == 0
    return out


def test_trial_report_says_synthetic_and_cites_the_trial(demo: Path) -> None:
    html = (demo / "trial" / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html)
    assert title is not None and "SYNTHETIC" in title.group(1) and "60" in title.group(1)
    assert re.search(r"<h1>SYNTHETIC DATA[^<]*60 synthetic patients", html)
    banner = re.search(r'<div class="banner" role="note">(.*?)</div>', html)
    assert banner is not None
    assert "60 patients" in banner.group(1) and "invented" in banner.group(1)
    assert "NCT02832830" in banner.group(1) and DOI in banner.group(1)
    assert "Sprave" in html and "Radiation Oncology 2018;13:212" in html


def test_demo_analyses_its_own_measurements(demo: Path) -> None:
    """The HU the demo measured from DICOM reach the statistics unchanged."""
    long = pd.read_csv(demo / "longitudinal.csv")
    clin = pd.read_csv(demo / "sample_clinical.csv")
    assert sorted(clin["patient_id"]) == sorted(set(long["patient_id"])) == ["P01", "P02", "P03"]
    assert set(clin["arm"]) == {"IMRT", "3DCRT"}
    out = demo / "sample_analysis"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in html and 'class="banner"' in html
    assert str(demo / "longitudinal.csv") in html  # the input listed with its checksum
    used = pd.read_csv(out / "patient_hu_irradiated.csv").set_index("patient_id")
    irr = long.loc[long["irradiated"].astype(str).str.lower() == "true"].set_index("patient_id")
    for pid in ("P01", "P02", "P03"):
        for tp in ("T0", "T2", "T3"):
            assert used.loc[pid, f"hu_{tp}"] == pytest.approx(irr.loc[pid, f"hu_{tp}"], abs=1e-6)
    t2 = pd.read_csv(out / "table2_hu_irradiated.csv").set_index(
        "Quantity (HU, or % for relative change)"
    )
    arms = clin.set_index("patient_id")["arm"]
    n_imrt = int((arms == "IMRT").sum())
    assert t2.loc["HU baseline", "IMRT n"] == n_imrt
    assert t2.loc["HU baseline", "3DCRT n"] == 3 - n_imrt
    for fig in ("fig_hu_over_time", "fig2_overall_survival", "fig3_vas_omed"):
        assert (out / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_measures_the_plan_dose(demo: Path) -> None:
    """The sample's RT doses reach the measurement CSV: 30 Gy on the irradiated level's
    baseline ROI, 1.5 Gy on the others (the generator's dose profile), and the ROIs'
    irradiated labels agree with 50 % of the 30 Gy prescription."""
    m = pd.read_csv(demo / "measurements.csv", keep_default_na=False)
    t0 = m[(m["kind"] == "target") & (m["timepoint"] == "T0")]
    assert len(t0) == 9
    for _, r in t0.iterrows():
        want = 30.0 if str(r["irradiated"]).lower() == "true" else 1.5
        assert float(r["dose_mean_gy"]) == pytest.approx(want, abs=1e-9), r["roi_id"]
        assert float(r["dose_min_gy"]) == float(r["dose_max_gy"]) == pytest.approx(want)
    follow = m[(m["kind"] == "target") & (m["timepoint"] != "T0")]
    assert (follow["dose_mean_gy"] == "").all()  # other Frames of Reference: no dose
    flags = ";".join(m["qc_flags"])
    assert "irradiated-mismatch" not in flags and "dose-outside-grid" not in flags


def test_longitudinal_carries_the_planning_dose(demo: Path) -> None:
    long = pd.read_csv(demo / "longitudinal.csv")
    assert list(long.columns[:7]) == [
        "patient_id", "level", "kind", "reader", "irradiated", "lesion_type", "dose_mean_gy",
    ]  # fmt: skip
    for _, r in long.iterrows():  # the T0 dose, although T2 and T3 have none
        want = 30.0 if bool(r["irradiated"]) else 1.5
        assert r["dose_mean_gy"] == pytest.approx(want), (r["patient_id"], r["level"])
