"""Issue 16 statistics against R: SAS's signed-rank rule, within-arm pseudo-medians,
R's between-arm interval, Kaplan-Meier at 3 and 6 months, Cochran's rule with Fisher's p.

Reference: tests/data/r_reference/issue16_reference.json, written by
tests/data/r_reference/make_reference_issue16.R (R 4.2.2, survival 3.5-3).  R is not
needed to run these tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from r_reference import load_reference

from hu_roi.analysis import stats

REF = load_reference("issue16_reference.json")


def _vec(v: Any) -> list[float]:
    return list(v) if isinstance(v, list) else [v]


@pytest.mark.parametrize("case", REF["signed_rank_sas"])
def test_signed_rank_sas_matches_r(case: dict[str, Any]) -> None:
    res = stats.signed_rank_sas(_vec(case["x"]))
    r = case["r"]
    assert res.statistic == pytest.approx(r["statistic"], abs=1e-9)
    assert res.p_value == pytest.approx(r["p_value"], rel=1e-9)
    assert res.n == r["n"] and res.n_zeros == r["n_zeros"]
    assert res.exact is r["exact"]


def test_signed_rank_sas_cases_cover_every_branch() -> None:
    hows = {c["r"]["how"] for c in REF["signed_rank_sas"]}
    assert hows == {"enumeration", "psignrank", "t"}


@pytest.mark.parametrize("case", REF["within_arm"])
def test_within_arm_pseudo_median_matches_r(case: dict[str, Any]) -> None:
    x = _vec(case["x"])
    for key, kw in (("r_default", {}), ("r_normal", {"exact": False, "correct": True})):
        res = stats.signed_rank(x, **kw)  # type: ignore[arg-type]
        r = case[key]
        scale = float(np.max(np.abs(x)))
        assert res.statistic == pytest.approx(r["statistic"])
        assert res.p_value == pytest.approx(r["p_value"], rel=1e-9)
        for got, want in ((res.estimate, r["estimate"]), (res.ci_low, r["ci_low"]),
                          (res.ci_high, r["ci_high"])):  # fmt: skip
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * scale)
        assert res.method == r["method"]
    sas = stats.signed_rank_sas(x)
    assert sas.p_value == pytest.approx(case["sas"]["p_value"], rel=1e-9)


@pytest.mark.parametrize("case", REF["between_arm"])
def test_between_arm_r_interval_matches_r(case: dict[str, Any]) -> None:
    res = stats.rank_sum(_vec(case["x"]), _vec(case["y"]))
    r = case["r"]
    assert res.statistic == pytest.approx(r["statistic"])
    assert res.p_value == pytest.approx(r["p_value"], rel=1e-9)
    for got, want in ((res.estimate, r["estimate"]), (res.ci_low, r["ci_low"]),
                      (res.ci_high, r["ci_high"])):  # fmt: skip
        assert got == pytest.approx(want, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("case", REF["km_at"])
def test_survival_at_times_matches_r_summary(case: dict[str, Any]) -> None:
    km = stats.kaplan_meier(_vec(case["time"]), _vec(case["event"]))
    res = stats.survival_at(km, _vec(case["times"]))
    r = case["r"]
    np.testing.assert_allclose(res.time, _vec(r["time"]))
    np.testing.assert_allclose(res.survival, _vec(r["survival"]), rtol=1e-12)
    np.testing.assert_allclose(res.std_err, _vec(r["std_err"]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.lower, _vec(r["lower"]), rtol=1e-9)
    np.testing.assert_allclose(res.upper, _vec(r["upper"]), rtol=1e-9)
    np.testing.assert_array_equal(res.n_risk, _vec(r["n_risk"]))
    np.testing.assert_array_equal(res.n_event, _vec(r["n_event_cum"]))


def test_survival_after_last_time_is_not_estimable() -> None:
    km = stats.kaplan_meier([1, 2, 4], [1, 0, 0])
    res = stats.survival_at(km, [3, 5])
    assert res.survival[0] == pytest.approx(2 / 3) and res.n_risk[0] == 1
    assert math.isnan(res.survival[1]) and res.n_risk[1] == 0


@pytest.mark.parametrize("case", REF["cochran"])
def test_cochran_rule_and_fisher_match_r(case: dict[str, Any]) -> None:
    table = np.array(case["table"], dtype=float)
    ok, msg = stats.cochran_rule(table)
    assert ok is case["r"]["ok"]
    assert (msg == "") is ok
    if not ok:
        assert msg.startswith(f"{case['r']['n_below_5']} of {table.size} expected counts below 5")
    assert stats.fisher_exact(table).p_value == pytest.approx(case["r"]["fisher_p"], rel=1e-9)


def test_cochran_cases_hold_both_outcomes() -> None:
    assert {c["r"]["ok"] for c in REF["cochran"]} == {True, False}
