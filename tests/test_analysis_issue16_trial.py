"""The issue-16 statistics of a whole analysis against R, end to end.

Inputs: tests/data/r_reference/issue16_trial/ (the deterministic synthetic trial of
scripts/make_synthetic_trial.py, committed so the reference cannot drift).  Reference:
tests/data/r_reference/issue16_trial_reference.json, written from those inputs by
tests/data/r_reference/make_trial_reference_issue16.R (R 4.2.2, survival 3.5-3), which
prepares the data itself (index ROI, changes, alive rule) and calls wilcox.test, survfit,
survdiff, fisher.test.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from r_reference import R_REFERENCE_DIR, load_reference

from hu_roi.analysis.clinical import read_clinical
from hu_roi.analysis.endpoints import TrialEndpoints, analyze
from hu_roi.analysis.schemas import longitudinal_from_measurements, read_measurements

REF = load_reference("issue16_trial_reference.json")
ROWS = {"delta_hu_T2": "HU T0-T2", "pct_delta_T2": "HU T0-T2 (%)",
        "delta_hu_T3": "HU T0-T3", "pct_delta_T3": "HU T0-T3 (%)"}  # fmt: skip


def _run(**kw: Any) -> TrialEndpoints:
    meas = read_measurements(R_REFERENCE_DIR / "issue16_trial" / "measurements.csv")
    clin = read_clinical(R_REFERENCE_DIR / "issue16_trial" / "clinical.csv")
    return analyze(longitudinal_from_measurements(meas), clin, measurements=meas, **kw)


@pytest.fixture(scope="module")
def r_conventions() -> TrialEndpoints:
    return _run(between="r", os_origin="rt")


@pytest.fixture(scope="module")
def r_normal() -> TrialEndpoints:
    return _run(within_test="r-normal")


def _close(got: object, want: float, scale: float = 1.0) -> None:
    assert float(got) == pytest.approx(want, rel=1e-7, abs=1e-7 * scale)  # type: ignore[arg-type]


@pytest.mark.parametrize("col", list(ROWS))
@pytest.mark.parametrize("convention", ["r_default", "r_normal"])
def test_within_arm_pseudo_medians_match_r(
    col: str, convention: str, r_conventions: TrialEndpoints, r_normal: TrialEndpoints
) -> None:
    ep = r_conventions if convention == "r_default" else r_normal
    row = ep.tables["table2_hu_irradiated"].set_index("quantity").loc[ROWS[col]]
    for arm, prefix in (("IMRT", "imrt"), ("3DCRT", "crt")):
        r = REF["hu"][col][arm][convention]
        assert row[f"{prefix}_n"] == r["n"]
        _close(row[f"{prefix}_stat_within"], r["statistic"])
        _close(row[f"{prefix}_p_within"], r["p_value"])
        _close(row[f"{prefix}_pseudomedian"], r["estimate"], 100)
        _close(row[f"{prefix}_pseudomedian_low"], r["ci_low"], 100)
        _close(row[f"{prefix}_pseudomedian_high"], r["ci_high"], 100)


@pytest.mark.parametrize("col", list(ROWS))
def test_between_arm_r_convention_matches_r(col: str, r_conventions: TrialEndpoints) -> None:
    row = r_conventions.tables["table2_hu_irradiated"].set_index("quantity").loc[ROWS[col]]
    r = REF["hu"][col]["between_r"]
    assert row["hl_of"] == "IMRT - 3DCRT"
    for c, k in (("hl", "estimate"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                 ("w", "statistic"), ("p_between", "p_value")):  # fmt: skip
        _close(row[c], r[k], 100)


def test_vas_and_omed_shifts_match_r(r_conventions: TrialEndpoints) -> None:
    pot = r_conventions.tables["pain_over_time"]
    checked = 0
    for rec in pot.to_dict("records"):
        r = REF["pain"][f"{rec['measure']}_{rec['timepoint']}"]
        for c, k in (("hl", "estimate"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                     ("w", "statistic"), ("p_value", "p_value")):  # fmt: skip
            _close(rec[c], r[k], 100)
        checked += 1
    assert checked == 8


@pytest.mark.parametrize("origin", ["diagnosis", "rt"])
def test_survival_landmarks_and_logrank_observed_expected_match_r(
    origin: str, r_conventions: TrialEndpoints
) -> None:
    ep = r_conventions if origin == "rt" else _run()
    ref = REF["survival"][origin]
    lm = ep.tables["survival_landmarks"].set_index(["arm", "months"])
    for arm in ("IMRT", "3DCRT"):
        r = ref[arm]
        for i, m in enumerate(r["times"]):
            got = lm.loc[(arm, float(m))]
            _close(got["survival"], r["survival"][i])
            if not math.isnan(got["ci_low"]) or r["lower"][i] != "NaN":
                _close(got["ci_low"], r["lower"][i])
                _close(got["ci_high"], r["upper"][i])
            assert got["n_risk"] == r["n_risk"][i]
    tab = ep.tables["survival"].set_index("arm")
    lr = ref["logrank"]
    for g, o, e in zip(lr["groups"], lr["observed"], lr["expected"], strict=True):
        _close(tab.loc[g, "observed"], o)
        _close(tab.loc[g, "expected"], e)
    _close(tab["statistic"].iloc[0], lr["statistic"])
    assert (tab["origin"] == origin).all()


def test_fracture_patients_and_fisher_match_r(r_conventions: TrialEndpoints) -> None:
    t4 = r_conventions.tables["table4_fractures"].set_index("timepoint")
    for tp, r in REF["fractures"].items():
        assert t4.loc[tp, "imrt_patients"].split(";") == r["patients_imrt"]
        assert t4.loc[tp, "crt_patients"].split(";") == r["patients_crt"]
        _close(t4.loc[tp, "fisher_p"], r["fisher_p"])
        assert (t4.loc[tp, "small_expected"] == "") is r["cochran_ok"]


def test_tidy_file_repeats_the_r_checked_numbers(r_conventions: TrialEndpoints) -> None:
    tidy = r_conventions.tables["endpoints"]
    r = REF["hu"]["pct_delta_T3"]["IMRT"]["r_default"]
    row = tidy.loc[(tidy["endpoint"] == "Table 2: All metastases: HU T0-T3 (%)")
                   & (tidy["group"] == "IMRT") & (tidy["statistic"] == "pseudo-median")]  # fmt: skip
    assert len(row) == 1
    _close(row["value"].iloc[0], r["estimate"], 100)
    _close(row["ci_low"].iloc[0], r["ci_low"], 100)
    assert int(row["n"].iloc[0]) == r["n"]
    assert isinstance(tidy, pd.DataFrame)
