"""Tests of hu_roi.analysis.stats against R (and SAS's published example).

Reference: tests/data/r_reference/stats_reference.json, written by
tests/data/r_reference/make_reference.R with R 4.2.2 and survival 3.5-3 (the versions are
recorded in the file).  R is not needed to run these tests.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from r_reference import load_reference

from hu_roi.analysis import stats
from hu_roi.analysis.stats import (
    StatsInputError,
    chi_square,
    fisher_exact,
    kaplan_meier,
    logrank,
    rank_sum,
    signed_rank,
)

RTOL = 1e-9


REF = load_reference("stats_reference.json")


def _close(
    actual: Any, expected: Any, rtol: float = RTOL, what: str = "", scale: float = 0.0
) -> None:
    """Equal within rtol, or within rtol * scale (values near 0 found by a root search)."""
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what)


def _scale(*samples: Any) -> float:
    values = np.concatenate([np.atleast_1d(np.asarray(s, dtype=float)) for s in samples])
    return float(np.max(np.abs(values)))


def _cases(key: str) -> list[Any]:
    return [pytest.param(c, id=f"{key}-{i}-{c.get('tag', '')}") for i, c in enumerate(REF[key])]


def test_reference_file_records_r_version() -> None:
    assert REF["r_version"].startswith("R version 4.")
    assert REF["survival_version"]


# --------------------------------------------------------------------------- rank-sum
def _check_rank_sum(case: dict[str, Any]) -> None:
    res = rank_sum(
        case["x"],
        case["y"],
        exact=case["exact"],
        correct=case["correct"],
        conf_level=case["conf_level"],
        alternative=case["alternative"],
    )
    r = case["r"]
    sc = _scale(case["x"], case["y"])
    _close(res.statistic, r["statistic"], what="W")
    _close(res.p_value, r["p_value"], what="p")
    _close(res.estimate, r["estimate"], what="estimate", scale=sc)
    _close([res.ci_low, res.ci_high], [r["ci_low"], r["ci_high"]], what="CI", scale=sc)
    _close(res.conf_level, r["conf_level"], what="conf_level")
    assert res.method == r["method"]


@pytest.mark.parametrize("case", _cases("rank_sum_exact"))
def test_rank_sum_exact_branch_matches_r(case: dict[str, Any]) -> None:
    # R: wilcox.test(x, y, conf.int=TRUE, ...) without ties, n < 50 -> exact branch
    _check_rank_sum(case)
    assert "exact" in case["r"]["method"]


@pytest.mark.parametrize("case", _cases("rank_sum_normal"))
def test_rank_sum_normal_branch_matches_r(case: dict[str, Any]) -> None:
    # R: ties / exact=FALSE / n >= 50 -> normal approximation, CI by uniroot
    _check_rank_sum(case)


@pytest.mark.parametrize("case", _cases("rank_sum_clamp"))
def test_rank_sum_clamped_interval_matches_r(case: dict[str, Any]) -> None:
    # R's root() returns min(x)-max(y) or max(x)-min(y) when the statistic has no root
    _check_rank_sum(case)


def test_rank_sum_clamp_cases_really_clamp() -> None:
    clamped = 0
    for case in REF["rank_sum_clamp"]:
        x, y = np.asarray(case["x"]), np.asarray(case["y"])
        bounds = {x.min() - y.max(), x.max() - y.min()}
        clamped += case["r"]["ci_low"] in bounds or case["r"]["ci_high"] in bounds
    assert clamped >= 5


def test_rank_sum_exact_lowers_unachievable_conf_level() -> None:
    # R: wilcox.test(c(1.5, 2.25), c(0.5, 3.75, 4.125), conf.int=TRUE)
    # warns "Requested conf.level not achievable" and reports 1 - achieved alpha
    lowered = [c for c in REF["rank_sum_exact"] if c["tag"] == "exact-unachievable"]
    assert lowered
    for case in lowered:
        res = rank_sum(case["x"], case["y"], conf_level=case["conf_level"])
        assert res.conf_level < case["conf_level"]
        _close(res.conf_level, case["r"]["conf_level"])


def test_rank_sum_nan_dropped_like_r_na() -> None:
    a = rank_sum([1.0, 2.5, np.nan, 3.25], [0.5, 1.75])
    b = rank_sum([1.0, 2.5, 3.25], [0.5, 1.75])
    assert a == b


def test_rank_sum_all_tied_raises_like_r() -> None:
    # R: wilcox.test(c(1, 1), c(1, 1), conf.int=TRUE) stops with an error
    with pytest.raises(StatsInputError, match="tied"):
        rank_sum([1.0, 1.0], [1.0, 1.0])
    # SAS mode still answers (p = 1, zero shift)
    res = rank_sum([1.0, 1.0], [1.0, 1.0], method="SAS")
    assert res.p_value == 1.0 and res.estimate == 0.0


def test_sas_mode_rejects_one_sided_and_exact() -> None:
    with pytest.raises(StatsInputError, match="SAS mode"):
        rank_sum([1, 2], [3, 4], method="SAS", alternative="less")
    with pytest.raises(StatsInputError, match="SAS mode"):
        rank_sum([1, 2], [3, 4], method="SAS", exact=True)


def test_sas_p_value_equals_r_normal_branch_p() -> None:
    # SAS's continuity-corrected Z is R's exact=FALSE, correct=TRUE statistic
    x, y = SAS_STIM2, SAS_STIM1
    assert rank_sum(x, y, method="SAS").p_value == pytest.approx(
        rank_sum(x, y, exact=False).p_value, rel=1e-12
    )
    assert rank_sum(x, y, method="SAS", correct=False).p_value == pytest.approx(
        rank_sum(x, y, exact=False, correct=False).p_value, rel=1e-12
    )


def test_rank_sum_rejects_bad_input() -> None:
    with pytest.raises(StatsInputError, match="'y'"):
        rank_sum([1, 2], [np.nan])
    with pytest.raises(StatsInputError, match="conf_level"):
        rank_sum([1, 2], [3, 4], conf_level=95)
    with pytest.raises(StatsInputError, match="method"):
        rank_sum([1, 2], [3, 4], method="SPSS")


# --------------------------------------------------------------------------- SAS mode
# SAS/STAT User's Guide, PROC NPAR1WAY, "Hodges-Lehmann Estimation" (data React, HL,
# ALPHA=0.02): see /work/shared/reference/sas_hodges_lehmann_example.md
SAS_STIM2 = [3.27, 3.27, 3.27, 3.70, 3.70, 3.74]
SAS_STIM1 = [1.94, 1.94, 2.92, 2.92, 2.92, 2.92, 3.27, 3.27, 3.27, 3.27, 3.70, 3.70, 3.74]


@pytest.mark.parametrize("order", ["stim2-first", "stim1-first"])
def test_sas_hodges_lehmann_example(order: str) -> None:
    x, y = (SAS_STIM2, SAS_STIM1) if order == "stim2-first" else (SAS_STIM1, SAS_STIM2)
    res = rank_sum(x, y, conf_level=0.98, method="SAS")
    # the reference group is the smaller group (Stim 2) whichever argument it is
    assert res.estimate_of == ("x - y" if order == "stim2-first" else "y - x")
    assert res.estimate == pytest.approx(0.35, abs=5e-9)
    assert round(res.ci_low, 2) == 0.00
    assert round(res.ci_high, 2) == 0.82
    assert round((res.ci_low + res.ci_high) / 2, 2) == 0.41
    assert res.se == pytest.approx(0.1762, abs=5e-5)
    assert res.statistic == pytest.approx(79.5)
    # continuity-corrected Z = (79.5 - 60 - 0.5) / 11.004784
    z = (79.5 - 60 - 0.5) / 11.004784
    assert res.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-6)


def test_sas_equal_sizes_uses_first_group() -> None:
    res = rank_sum([1.0, 2.0, 3.5], [0.25, 1.5, 2.75], method="SAS")
    assert res.estimate_of == "x - y"
    assert res.estimate == pytest.approx(
        np.median(np.subtract.outer([1, 2, 3.5], [0.25, 1.5, 2.75]))
    )


def test_sas_moses_limits_need_tie_corrected_sd() -> None:
    # with the no-ties SD the 98 % upper limit would be 1.33 (SAS note); we give 0.82
    res = rank_sum(SAS_STIM2, SAS_STIM1, conf_level=0.98, method="SAS")
    assert round(res.ci_high, 2) != 1.33


# --------------------------------------------------------------------------- signed rank
def _check_signed(case: dict[str, Any]) -> None:
    res = signed_rank(
        case["x"],
        case["y"],
        mu=case["mu"],
        exact=case["exact"],
        correct=case["correct"],
        conf_level=case["conf_level"],
        alternative=case["alternative"],
    )
    r = case["r"]
    sc = _scale(case["x"], case["y"] if case["y"] is not None else [], [case["mu"]])
    _close(res.statistic, r["statistic"], what="V")
    _close(res.p_value, r["p_value"], what="p")
    _close(res.estimate, r["estimate"], what="estimate", scale=sc)
    _close([res.ci_low, res.ci_high], [r["ci_low"], r["ci_high"]], what="CI", scale=sc)
    _close(res.conf_level, r["conf_level"], what="conf_level")
    assert res.method == r["method"]


@pytest.mark.parametrize("case", _cases("signed_rank_exact"))
def test_signed_rank_exact_branch_matches_r(case: dict[str, Any]) -> None:
    # R: wilcox.test(x, [y, paired=TRUE,] mu=, conf.int=TRUE) exact branch
    _check_signed(case)


@pytest.mark.parametrize("case", _cases("signed_rank_normal"))
def test_signed_rank_normal_branch_matches_r(case: dict[str, Any]) -> None:
    # R: ties or zeros -> normal approximation, zeros dropped, CI by uniroot
    _check_signed(case)


@pytest.mark.parametrize("case", _cases("signed_rank_lowered"))
def test_signed_rank_lowered_or_degenerate_matches_r(case: dict[str, Any]) -> None:
    # R: "requested conf.level not achievable" -> conf.level lowered (alpha doubled)
    _check_signed(case)


def test_signed_rank_zeros_are_dropped_and_counted() -> None:
    case = next(c for c in REF["signed_rank_normal"] if c["tag"] == "zeros")
    res = signed_rank(case["x"])
    assert res.n_zeros == 3
    assert not res.exact
    assert any("zeroes" in w for w in case["r"]["warnings"])


def test_signed_rank_lowered_cases_really_lowered() -> None:
    lowered = [c for c in REF["signed_rank_lowered"] if c["tag"] == "lowered"]
    for case in lowered:
        res = signed_rank(case["x"], conf_level=case["conf_level"])
        assert res.conf_level < case["conf_level"]


def test_signed_rank_paired_length_mismatch() -> None:
    with pytest.raises(StatsInputError, match="same length"):
        signed_rank([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------- tables
@pytest.mark.parametrize(
    "case", [pytest.param(c, id=f"chisq-{i}") for i, c in enumerate(REF["chi_square"])]
)
def test_chi_square_matches_r(case: dict[str, Any]) -> None:
    # R: chisq.test(table, correct=)
    res = chi_square(case["table"], correct=case["correct"])
    _close(res.statistic, case["r"]["statistic"])
    _close(res.p_value, case["r"]["p_value"])
    assert res.dof == case["r"]["dof"]
    assert res.method == case["r"]["method"]


def test_chi_square_correction_only_changes_2x2() -> None:
    t22 = [[12, 5], [4, 11]]
    assert chi_square(t22, correct=True).statistic < chi_square(t22).statistic
    t23 = [[12, 5, 3], [4, 11, 6]]
    assert chi_square(t23, correct=True).statistic == chi_square(t23).statistic


def test_chi_square_rejects_empty_margin() -> None:
    with pytest.raises(StatsInputError, match="total 0"):
        chi_square([[0, 0], [3, 4]])


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=f"fisher-{i}-{len(c['table'])}x{len(c['table'][0])}")
        for i, c in enumerate(REF["fisher"])
    ],
)
def test_fisher_matches_r(case: dict[str, Any]) -> None:
    # R: fisher.test(table)$p.value (2x2: dnhyper sum; r x c: FEXACT network algorithm)
    res = fisher_exact(case["table"])
    _close(res.p_value, case["r"]["p_value"])
    assert res.dof is None


def test_fisher_reference_covers_2x2_and_2x4() -> None:
    shapes = {np.shape(c["table"]) for c in REF["fisher"]}
    assert (2, 2) in shapes and (2, 4) in shapes


# --------------------------------------------------------------------------- survival
@pytest.mark.parametrize("case", _cases("kaplan_meier"))
def test_kaplan_meier_matches_survfit(case: dict[str, Any]) -> None:
    # R: survfit(Surv(time, event) ~ 1); summary(fit, censored=TRUE); quantile(fit, 0.5)
    res = kaplan_meier(case["time"], case["event"])
    r = case["r"]
    _close(res.time, r["time"])
    np.testing.assert_array_equal(res.n_risk, r["n_risk"])
    np.testing.assert_array_equal(res.n_event, r["n_event"])
    np.testing.assert_array_equal(res.n_censor, r["n_censor"])
    _close(res.survival, r["survival"], what="surv")
    _close(res.std_err_log, r["std_err_log"], what="std.err")
    _close(res.std_err, r["std_err"], what="summary std.err")
    _close(res.lower, r["lower"], what="lower")
    _close(res.upper, r["upper"], what="upper")
    _close(res.median, r["median"], what="median")
    _close(res.median_lower, r["median_lower"], what="median lower")
    _close(res.median_upper, r["median_upper"], what="median upper")


def test_kaplan_meier_median_midpoint_when_s_is_half() -> None:
    # S = 0.75, 0.5, 0.25, 0 at t = 1..4: R's median is (2 + 3) / 2
    assert kaplan_meier([1, 2, 3, 4], [1, 1, 1, 1]).median == 2.5
    # S = 0.5 at the last event (t=2), last time 5: R gives (2 + 5) / 2
    assert kaplan_meier([1, 2, 3, 5], [1, 1, 0, 0]).median == 3.5


def test_kaplan_meier_rejects_bad_events() -> None:
    with pytest.raises(StatsInputError, match="event"):
        kaplan_meier([1, 2], [1, 2])


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=f"logrank-{i}") for i, c in enumerate(REF["logrank"])]
)
def test_logrank_matches_survdiff(case: dict[str, Any]) -> None:
    # R: survdiff(Surv(time, event) ~ group)
    res = logrank(case["time"], case["event"], case["group"])
    r = case["r"]
    _close(res.statistic, r["statistic"])
    _close(res.p_value, r["p_value"])
    assert res.dof == r["dof"]
    _close(res.observed, r["observed"])
    _close(res.expected, r["expected"])


# --------------------------------------------------------------------------- mixed model
def test_repeated_measures_recovers_group_effect() -> None:
    # simulated: 40 patients x 3 timepoints, true group effect -30 HU, analgesic +10 HU
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(7)
    rows = []
    for p in range(40):
        arm = "IMRT" if p % 2 else "3DCRT"
        b = rng.normal(0, 15)
        anal = int(rng.integers(0, 2))
        for tp, t_eff in (("T1", 0.0), ("T2", 20.0), ("T3", 35.0)):
            hu = 150 + b + t_eff + (-30.0 if arm == "IMRT" else 0.0) + 10 * anal
            rows.append((f"P{p}", arm, tp, anal, hu + rng.normal(0, 5)))
    df = pd.DataFrame(rows, columns=["patient_id", "arm", "timepoint", "analgesics", "hu"])
    table = stats.repeated_measures(df, interaction=False)
    assert list(table.columns) == list(stats.REPEATED_MEASURES_COLUMNS)
    grp = table.loc[table["term"] == "C(arm)[T.IMRT]"].iloc[0]
    assert grp["ci_low"] < -30 < grp["ci_high"]
    assert grp["p_value"] < 1e-4
    anal = table.loc[table["term"] == "analgesics"].iloc[0]
    assert anal["estimate"] == pytest.approx(10, abs=8)


def test_repeated_measures_names_missing_column() -> None:
    pd = pytest.importorskip("pandas")
    with pytest.raises(StatsInputError, match="analgesics"):
        stats.repeated_measures(pd.DataFrame({"hu": [1.0], "timepoint": ["T0"]}))


# --------------------------------------------------------------------------- imports
def test_stats_module_imports_no_dicom_or_io() -> None:
    code = (
        "import sys, hu_roi.analysis.stats\n"
        "bad = [m for m in ('pydicom', 'SimpleITK', 'hu_roi.io', 'napari', 'pandas', "
        "'statsmodels') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
