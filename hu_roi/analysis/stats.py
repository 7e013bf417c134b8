"""Statistics of the trial, computed exactly as R (and, where asked, SAS) computes them.

Plain functions on numbers; each returns a small frozen result object and names, in its
docstring, the R or SAS call it reproduces.  The tests (``tests/test_stats.py``) compare
every function with numbers R produced (``tests/data/r_reference/``).

Why this module exists
----------------------
No Python library computes the Wilcoxon tests as R's ``wilcox.test`` does: scipy's
``mannwhitneyu``/``wilcoxon`` give no Hodges–Lehmann estimate or interval, and their
normal approximations differ from R's in how the interval is found (R inverts the
continuity-corrected statistic with ``uniroot``, a Brent search on a step function whose
result depends on the exact path of the search).  The code below therefore mirrors
R 4.2's ``stats:::wilcox.test.default`` line by line, R's ``zeroin.c`` (the root finder
behind ``uniroot``) and R's ``nmath`` exact distributions (``pwilcox``, ``qwilcox``,
``psignrank``, ``qsignrank``), so that the results agree with R to rounding error.

This module imports only numpy and scipy.special at import time (no DICOM, no ROI code);
pandas and statsmodels are imported inside :func:`repeated_measures` only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from hu_roi.errors import HuRoiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "StatsInputError",
    "RankSumResult",
    "SignedRankResult",
    "ContingencyResult",
    "KaplanMeierResult",
    "LogrankResult",
    "rank_sum",
    "signed_rank",
    "signed_rank_sas",
    "SignedRankSasResult",
    "chi_square",
    "cochran_rule",
    "survival_at",
    "SurvivalAtResult",
    "fisher_exact",
    "kaplan_meier",
    "logrank",
    "repeated_measures",
]

logger = logging.getLogger(__name__)
#: Logged when the requested confidence level cannot be reached (R warns likewise).
_CONF_NOT_ACHIEVED = "requested conf.level not achievable; result.conf_level is the achieved one"

_DBL_EPSILON = float(np.finfo(float).eps)
_ALTERNATIVES = ("two.sided", "less", "greater")


class StatsInputError(HuRoiError, ValueError):
    """The numbers given to a statistics function cannot be analysed as asked."""


# ---------------------------------------------------------------------------
# Small numeric helpers mirroring R
# ---------------------------------------------------------------------------


def _pnorm(z: float, lower_tail: bool = True) -> float:
    """R ``pnorm(z, lower.tail=)``."""
    return float(special.ndtr(z if lower_tail else -z))


def _qnorm(p: float, lower_tail: bool = True) -> float:
    """R ``qnorm(p, lower.tail=)``."""
    return (
        float(special.ndtri(p if lower_tail else 1.0 - p))
        if lower_tail
        else -float(special.ndtri(p))
    )


def _rank(values: np.ndarray) -> np.ndarray:
    """R ``rank(values)`` (ties get the average rank); float64 array of the same length."""
    v = np.asarray(values, dtype=float)
    n = v.size
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    ranks = np.empty(n, dtype=float)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j + 2) / 2.0
        i = j + 1
    return ranks


def _tie_sum(ranks: np.ndarray) -> float:
    """R ``sum(NTIES^3 - NTIES)`` with ``NTIES <- table(ranks)``."""
    _, counts = np.unique(ranks, return_counts=True)
    c = counts.astype(float)
    return float(np.sum(c**3 - c))


def _median(values: np.ndarray) -> float:
    """R ``median()`` of a non-empty vector."""
    s = np.sort(np.asarray(values, dtype=float))
    n = s.size
    half = (n + 1) // 2
    if n % 2 == 1:
        return float(s[half - 1])
    return float((s[half - 1] + s[half]) / 2.0)


def _signif(x: float, digits: int) -> float:
    """R ``signif(x, digits)`` for a positive finite number."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits - 1}e}")


def _zeroin2(
    f: Any,
    ax: float,
    bx: float,
    fa: float,
    fb: float,
    tol: float,
    maxit: int = 1000,
) -> float:
    """Brent's root finder exactly as R's ``R_zeroin2`` (``src/library/stats/src/zeroin.c``).

    Used by ``uniroot``.  Mirrored step by step because the Wilcoxon statistics are step
    functions: any other root finder stops at another point of the flat piece.
    """
    a, b = ax, bx
    c, fc = a, fa
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(maxit + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2.0 * _DBL_EPSILON * abs(b) + tol / 2.0
        new_step = (c - b) / 2.0
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0.0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2.0) and p < abs(prev_step * q / 2.0):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0.0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    logger.warning("uniroot-like search did not converge in %d iterations", maxit)
    return b


def _uniroot(
    f: Any,
    lower: float,
    upper: float,
    tol: float,
    f_lower: float | None = None,
    f_upper: float | None = None,
) -> float:
    """R ``uniroot(f, lower=, upper=, f.lower=, f.upper=, tol=)$root`` (extendInt = "no")."""
    if not lower < upper:
        raise StatsInputError(
            f"cannot search a root in [{lower}, {upper}]: the interval is empty; this happens "
            "when all observations are tied"
        )
    fl = f(lower) if f_lower is None else f_lower
    fu = f(upper) if f_upper is None else f_upper
    if math.isnan(fl) or math.isnan(fu):
        raise StatsInputError(
            "the rank statistic is undefined at the ends of the search interval "
            "(all observations tied or zero); no estimate or interval can be computed"
        )
    if np.sign(fl) * np.sign(fu) > 0:
        raise StatsInputError("rank statistic has no sign change on the search interval")
    return _zeroin2(f, lower, upper, fl, fu, tol)


# ---------------------------------------------------------------------------
# Exact null distributions (R nmath wilcox.c / signrank.c)
# ---------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _wilcox_counts(m: int, n: int) -> tuple[float, ...]:
    """Counts of the Mann–Whitney statistic W = 0..m*n (R ``cwilcox``), as floats.

    Coefficients of the Gaussian binomial [m+n choose m]_q, computed with exact integers.
    """
    size = m * n + 1
    poly = [0] * size
    poly[0] = 1
    for i in range(1, m + 1):
        # multiply by (1 - q^(n+i)), then divide by (1 - q^i)
        step = n + i
        for k in range(size - 1, step - 1, -1):
            poly[k] -= poly[k - step]
        for k in range(i, size):
            poly[k] += poly[k - i]
    return tuple(float(c) for c in poly)


@lru_cache(maxsize=64)
def _signrank_counts(n: int) -> tuple[float, ...]:
    """Counts of the signed-rank statistic V = 0..n(n+1)/2 (R ``csignrank``), as floats."""
    size = n * (n + 1) // 2 + 1
    poly = [0] * size
    poly[0] = 1
    top = 0
    for i in range(1, n + 1):
        top += i
        for k in range(top, i - 1, -1):
            poly[k] += poly[k - i]
    return tuple(float(c) for c in poly)


def _choose(n: int, k: int) -> float:
    return float(math.comb(n, k))


def _pwilcox(q: float, m: int, n: int, lower_tail: bool = True) -> float:
    """R ``pwilcox(q, m, n, lower.tail=)``."""
    q = math.floor(q + 1e-7)
    if q < 0:
        return 0.0 if lower_tail else 1.0
    if q >= m * n:
        return 1.0 if lower_tail else 0.0
    counts = _wilcox_counts(m, n)
    c = _choose(m + n, n)
    p = 0.0
    if q <= m * n / 2:
        for i in range(int(q) + 1):
            p += counts[i] / c
    else:
        q = m * n - q
        for i in range(int(q)):
            p += counts[i] / c
        lower_tail = not lower_tail
    return p if lower_tail else 0.5 - p + 0.5


def _qwilcox(x: float, m: int, n: int) -> int:
    """R ``qwilcox(x, m, n)`` (lower tail)."""
    if x == 0:
        return 0
    if x == 1:
        return m * n
    counts = _wilcox_counts(m, n)
    c = _choose(m + n, n)
    p = 0.0
    q = 0
    if x <= 0.5:
        x = x - 10 * _DBL_EPSILON
        while True:
            p += counts[q] / c
            if p >= x:
                break
            q += 1
    else:
        x = 1 - x + 10 * _DBL_EPSILON
        while True:
            p += counts[q] / c
            if p > x:
                q = m * n - q
                break
            q += 1
    return q


def _psignrank(x: float, n: int, lower_tail: bool = True) -> float:
    """R ``psignrank(x, n, lower.tail=)``."""
    x = math.floor(x + 1e-7)
    if x < 0:
        return 0.0 if lower_tail else 1.0
    if x >= n * (n + 1) / 2:
        return 1.0 if lower_tail else 0.0
    counts = _signrank_counts(n)
    f = math.exp(-n * math.log(2.0))
    p = 0.0
    if x <= n * (n + 1) / 4:
        for i in range(int(x) + 1):
            p += counts[i] * f
    else:
        x = n * (n + 1) / 2 - x
        for i in range(int(x)):
            p += counts[i] * f
        lower_tail = not lower_tail
    return p if lower_tail else 0.5 - p + 0.5


def _qsignrank(x: float, n: int) -> int:
    """R ``qsignrank(x, n)`` (lower tail)."""
    if x == 0:
        return 0
    if x == 1:
        return n * (n + 1) // 2
    counts = _signrank_counts(n)
    f = math.exp(-n * math.log(2.0))
    p = 0.0
    q = 0
    if x <= 0.5:
        x = x - 10 * _DBL_EPSILON
        while True:
            p += counts[q] * f
            if p >= x:
                break
            q += 1
    else:
        x = 1 - x + 10 * _DBL_EPSILON
        while True:
            p += counts[q] * f
            if p > x:
                q = n * (n + 1) // 2 - q
                break
            q += 1
    return q


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _as_sample(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise StatsInputError(
            f"'{name}' must be a sequence of numbers; received {values!r}"
        ) from exc
    if np.any(np.isinf(arr)):
        raise StatsInputError(f"'{name}' contains infinite values; remove them first")
    return arr


def _check_common(alternative: str, conf_level: float) -> None:
    if alternative not in _ALTERNATIVES:
        raise StatsInputError(
            f"alternative must be one of {_ALTERNATIVES}; received {alternative!r}"
        )
    if not (math.isfinite(conf_level) and 0 < conf_level < 1):
        raise StatsInputError(
            f"conf_level must be a number strictly between 0 and 1; received {conf_level!r}"
        )


# ---------------------------------------------------------------------------
# Wilcoxon rank-sum
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RankSumResult:
    """Result of :func:`rank_sum`.

    Attributes
    ----------
    statistic : float
        R mode: W, the Mann–Whitney U of ``x`` (rank sum of x minus n_x(n_x+1)/2).
        SAS mode: S, the Wilcoxon rank sum of SAS's reference group (see ``estimate_of``).
    p_value : float
    estimate : float
        Hodges–Lehmann location shift (same unit as the data), of ``estimate_of``.
    ci_low, ci_high : float
        Confidence limits of the shift (±inf for one-sided alternatives).
    conf_level : float
        Confidence level actually achieved (R lowers it and warns when the requested
        level is not achievable).
    method : str
        R's method string (e.g. ``"Wilcoxon rank sum exact test"``) or the SAS description.
    alternative : str
        ``"two.sided"``, ``"less"`` or ``"greater"``.
    conf_level_requested : float
    estimate_of : str
        ``"x - y"`` (R mode; SAS mode when x is SAS's reference group) or ``"y - x"``.
    se : float
        SAS mode: asymptotic standard error of the shift, (upper − lower)/(2 z); else nan.
    exact : bool
        Whether the exact distribution was used.
    """

    statistic: float
    p_value: float
    estimate: float
    ci_low: float
    ci_high: float
    conf_level: float
    method: str
    alternative: str = "two.sided"
    conf_level_requested: float = 0.95
    estimate_of: str = "x - y"
    se: float = float("nan")
    exact: bool = False


def rank_sum(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    exact: bool | None = None,
    correct: bool = True,
    conf_level: float = 0.95,
    alternative: str = "two.sided",
    method: str = "R",
) -> RankSumResult:
    """Wilcoxon rank-sum test with the Hodges–Lehmann shift of ``x`` relative to ``y``.

    Reproduces R (4.2) ``wilcox.test(x, y, alternative=, exact=, correct=, conf.int=TRUE,
    conf.level=)`` — ``stats:::wilcox.test.default`` mirrored line by line, including

    - the exact branch (no ties, both n < 50 when ``exact`` is None): exact p-value from
      the Wilcoxon distribution (``pwilcox``) and the interval from ``qwilcox`` quantiles
      of the sorted pairwise differences; conf_level is lowered to the achieved level when
      the requested one cannot be reached;
    - the normal branch (ties, or n ≥ 50): tie-corrected variance, continuity correction,
      the interval found by inverting the corrected statistic with ``uniroot``
      (tol = 1e-4, Brent's method as in R's zeroin.c) and clamped to
      [min(x) − max(y), max(x) − min(y)] when no root exists; the estimate is the root of
      the uncorrected statistic.

    No Python library computes this as R does (scipy has no Hodges–Lehmann interval and no
    uniroot inversion), which is why it is written here.

    With ``method="SAS"`` it reproduces SAS PROC NPAR1WAY ``WILCOXON HL(REFCLASS=default)``
    with ``ALPHA = 1 - conf_level``: the shift is the median of the pairwise differences
    *reference group minus other group*, where the reference group is the smaller group,
    or ``x`` when both have the same size (SAS: the first CLASS level); the asymptotic
    (Moses) limits are the order statistics D(C) and D(mn + 1 − C) of the mn differences
    with C = floor(mn/2 − z·σ), σ the tie-corrected SD of the rank sum; the asymptotic SE
    is (upper − lower)/(2z); the p-value is the two-sided continuity-corrected normal
    (Z) test of the rank sum S of the reference group (``statistic`` = S).

    Parameters
    ----------
    x, y : sequence of float, shape (n_x,), (n_y,)
        The two samples (e.g. HU or %ΔHU of the two arms).  NaN values are dropped, as R
        drops NA.
    exact : bool or None
        Exact p-value and interval; None means "when both samples have < 50 values";
        never exact with ties (R falls back to the normal branch and warns).
    correct : bool
        Continuity correction in the normal approximation (SAS mode: ``CORRECT=YES``).
    conf_level : float
        Requested confidence level of the interval, in (0, 1) (SAS: 1 − ALPHA).
    alternative : {"two.sided", "less", "greater"}
        R mode only; SAS mode is two-sided.
    method : {"R", "SAS"}
        SAS mode is two-sided and asymptotic only (SAS's exact Moses interval is not
        implemented).  When C < 1 (tiny samples) the limits are the extreme differences.

    Returns
    -------
    RankSumResult

    Raises
    ------
    StatsInputError
        Empty sample, infinite values, bad option values; in R mode also when all
        observations are tied (R's ``wilcox.test`` stops with an error there).
    """
    _check_common(alternative, conf_level)
    xa = _as_sample(x, "x")
    ya = _as_sample(y, "y")
    xa = xa[~np.isnan(xa)]
    ya = ya[~np.isnan(ya)]
    if xa.size < 1:
        raise StatsInputError("not enough (non-missing) 'x' observations: need at least 1")
    if ya.size < 1:
        raise StatsInputError("not enough (non-missing) 'y' observations: need at least 1")
    if method == "SAS":
        if alternative != "two.sided" or exact:
            raise StatsInputError(
                "SAS mode gives the two-sided asymptotic test and Moses interval only; "
                f"received alternative={alternative!r}, exact={exact!r} (use method='R')"
            )
        return _rank_sum_sas(xa, ya, conf_level, correct)
    if method != "R":
        raise StatsInputError(f"method must be 'R' or 'SAS'; received {method!r}")
    return _rank_sum_r(xa, ya, exact, correct, conf_level, alternative)


def _rank_sum_r(
    x: np.ndarray,
    y: np.ndarray,
    exact: bool | None,
    correct: bool,
    conf_level: float,
    alternative: str,
) -> RankSumResult:
    requested = conf_level
    method = "Wilcoxon rank sum test"
    if exact and math.comb(x.size + y.size, y.size) > 1e300:
        raise StatsInputError(
            f"exact=True with n_x={x.size}, n_y={y.size}: the exact distribution is too "
            "large to count; use exact=None (normal approximation for n >= 50)"
        )
    r = _rank(np.concatenate([x, y]))
    n_x = float(x.size)
    n_y = float(y.size)
    nx, ny = x.size, y.size
    if exact is None:
        exact = (n_x < 50) and (n_y < 50)
    statistic = float(np.sum(r[:nx])) - n_x * (n_x + 1) / 2
    ties = np.unique(r).size != r.size
    if exact and not ties:
        method = "Wilcoxon rank sum exact test"
        if alternative == "two.sided":
            if statistic > n_x * n_y / 2:
                p = _pwilcox(statistic - 1, nx, ny, lower_tail=False)
            else:
                p = _pwilcox(statistic, nx, ny)
            p_value = min(2 * p, 1.0)
        elif alternative == "greater":
            p_value = _pwilcox(statistic - 1, nx, ny, lower_tail=False)
        else:
            p_value = _pwilcox(statistic, nx, ny)
        alpha = 1 - conf_level
        diffs = np.sort(np.subtract.outer(x, y).ravel())
        if alternative == "two.sided":
            qu = _qwilcox(alpha / 2, nx, ny)
            if qu == 0:
                qu = 1
            ql = nx * ny - qu
            achieved = 2 * _pwilcox(math.trunc(qu) - 1, nx, ny)
            lo, hi = float(diffs[qu - 1]), float(diffs[ql])
        elif alternative == "greater":
            qu = _qwilcox(alpha, nx, ny)
            if qu == 0:
                qu = 1
            achieved = _pwilcox(math.trunc(qu) - 1, nx, ny)
            lo, hi = float(diffs[qu - 1]), math.inf
        else:
            qu = _qwilcox(alpha, nx, ny)
            if qu == 0:
                qu = 1
            ql = nx * ny - qu
            achieved = _pwilcox(math.trunc(qu) - 1, nx, ny)
            lo, hi = -math.inf, float(diffs[ql])
        if achieved - alpha > alpha / 2:
            logger.info(_CONF_NOT_ACHIEVED)
            conf_level = 1 - achieved
        estimate = _median(diffs)
        return RankSumResult(
            statistic=statistic,
            p_value=float(p_value),
            estimate=estimate,
            ci_low=lo,
            ci_high=hi,
            conf_level=float(conf_level),
            method=method,
            alternative=alternative,
            conf_level_requested=requested,
            exact=True,
        )

    # normal approximation
    if np.all(r == r[0]):
        raise StatsInputError(
            f"all {r.size} observations are tied (value {x[0]!r}); there is no rank "
            "information, so no p-value, estimate or interval (R's wilcox.test stops too)"
        )
    z = statistic - n_x * n_y / 2
    sigma = math.sqrt(
        (n_x * n_y / 12) * ((n_x + n_y + 1) - _tie_sum(r) / ((n_x + n_y) * (n_x + n_y - 1)))
    )
    correction = 0.0
    if correct:
        correction = _continuity(z, alternative)
        method = method + " with continuity correction"
    zs = (z - correction) / sigma if sigma > 0 else math.nan
    p_value = _normal_p(zs, alternative)

    alpha = 1 - conf_level
    mumin = float(np.min(x) - np.max(y))
    mumax = float(np.max(x) - np.min(y))

    def w_stat(d: float, use_correct: bool) -> float:
        dr = _rank(np.concatenate([x - d, y]))
        dz = float(np.sum(dr[:nx])) - n_x * (n_x + 1) / 2 - n_x * n_y / 2
        corr = _continuity(dz, alternative) if use_correct else 0.0
        sig = math.sqrt(
            (n_x * n_y / 12) * ((n_x + n_y + 1) - _tie_sum(dr) / ((n_x + n_y) * (n_x + n_y - 1)))
        )
        if sig == 0:
            logger.warning("cannot compute confidence interval when all observations are tied")
            return _safe_div(dz - corr, sig)
        return (dz - corr) / sig

    w_min = w_stat(mumin, correct)
    w_max = w_stat(mumax, correct)

    def root(zq: float) -> float:
        f_lower = w_min - zq
        if f_lower <= 0:
            return mumin
        f_upper = w_max - zq
        if f_upper >= 0:
            return mumax
        return _uniroot(lambda d: w_stat(d, correct) - zq, mumin, mumax, 1e-4, f_lower, f_upper)

    if alternative == "two.sided":
        lo = root(_qnorm(alpha / 2, lower_tail=False))
        hi = root(_qnorm(alpha / 2))
    elif alternative == "greater":
        lo = root(_qnorm(alpha, lower_tail=False))
        hi = math.inf
    else:
        lo = -math.inf
        hi = root(_qnorm(alpha))
    estimate = _uniroot(lambda d: w_stat(d, False), mumin, mumax, 1e-4)
    if exact and ties:
        # R warns; here the method string says so (analyze would print it for every tied row)
        logger.info("cannot compute exact p-value with ties; used the normal approximation")
    return RankSumResult(
        statistic=statistic,
        p_value=float(p_value),
        estimate=float(estimate),
        ci_low=float(lo),
        ci_high=float(hi),
        conf_level=float(conf_level),
        method=method,
        alternative=alternative,
        conf_level_requested=requested,
        exact=False,
    )


def _widen_alpha(
    alpha: float, conf_level: float, too_narrow: Callable[[float], bool]
) -> tuple[float, float]:
    """R's ``repeat { ...; if (too narrow) alpha <- alpha * 2 else break }`` of the
    asymptotic one-sample interval, then the achieved confidence level.

    Returns the widened ``alpha`` and the confidence level to report (lowered, with a
    log message, when the requested one cannot be reached).
    """
    while too_narrow(alpha):
        alpha = alpha * 2
    if alpha >= 1 or 1 - conf_level < alpha * 0.75:
        conf_level = 1 - min(1.0, alpha)
        logger.info(_CONF_NOT_ACHIEVED)
    return alpha, conf_level


def _safe_div(a: float, b: float) -> float:
    """IEEE division as R does it (x/0 = ±Inf, 0/0 = NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _continuity(z: float, alternative: str) -> float:
    if alternative == "two.sided":
        return float(np.sign(z)) * 0.5
    return 0.5 if alternative == "greater" else -0.5


def _normal_p(z: float, alternative: str) -> float:
    if math.isnan(z):
        return math.nan
    if alternative == "less":
        return _pnorm(z)
    if alternative == "greater":
        return _pnorm(z, lower_tail=False)
    return 2 * min(_pnorm(z), _pnorm(z, lower_tail=False))


def _rank_sum_sas(x: np.ndarray, y: np.ndarray, conf_level: float, correct: bool) -> RankSumResult:
    """SAS PROC NPAR1WAY WILCOXON + HL (asymptotic Moses limits)."""
    if y.size < x.size:
        ref, other, estimate_of = y, x, "y - x"
    else:
        ref, other, estimate_of = x, y, "x - y"
    m, n = ref.size, other.size
    r = _rank(np.concatenate([ref, other]))
    s = float(np.sum(r[:m]))
    expected = m * (m + n + 1) / 2.0
    big_n = m + n
    var = m * n / (big_n * (big_n - 1)) * (float(np.sum(r**2)) - big_n * (big_n + 1) ** 2 / 4)
    sd = math.sqrt(var)
    diff = s - expected
    cc = 0.5 if correct else 0.0
    # SAS: 0.5 towards the expected value (rank sums are multiples of 0.5, so the
    # corrected difference never changes sign)
    zc = 0.0 if diff == 0 else (diff - math.copysign(cc, diff)) / sd
    p_value = 2 * _pnorm(-abs(zc))
    diffs = np.sort(np.subtract.outer(ref, other).ravel())
    mn = m * n
    estimate = _median(diffs)
    alpha = 1 - conf_level
    zq = _qnorm(alpha / 2, lower_tail=False)
    c_alpha = math.floor(mn / 2 - zq * sd)
    if c_alpha < 1:
        lo, hi = float(diffs[0]), float(diffs[-1])
    else:
        lo, hi = float(diffs[c_alpha - 1]), float(diffs[mn - c_alpha])
    se = (hi - lo) / (2 * zq)
    return RankSumResult(
        statistic=s,
        p_value=float(p_value),
        estimate=estimate,
        ci_low=lo,
        ci_high=hi,
        conf_level=conf_level,
        method="SAS NPAR1WAY Wilcoxon two-sample test (continuity-corrected Z) with "
        "Hodges-Lehmann shift and asymptotic (Moses) limits",
        alternative="two.sided",
        conf_level_requested=conf_level,
        estimate_of=estimate_of,
        se=float(se),
        exact=False,
    )


# ---------------------------------------------------------------------------
# Wilcoxon signed-rank
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRankResult:
    """Result of :func:`signed_rank`.

    Attributes
    ----------
    statistic : float
        R's V: the sum of the ranks of |x − mu| over the positive differences (zeros
        dropped).
    p_value : float
    estimate : float
        Pseudo-median (Hodges–Lehmann one-sample estimate) of x (or of x − y when paired);
        in the degenerate case where R gives the midrange, the midrange.
    ci_low, ci_high : float
        Confidence limits (±inf one-sided; nan when R cannot compute them).
    conf_level : float
        Achieved confidence level (lowered when the requested one is not achievable,
        0 when no interval could be computed).
    method : str
        R's method string.
    alternative : str
    conf_level_requested : float
    n_zeros : int
        Number of zero differences dropped.
    exact : bool
    """

    statistic: float
    p_value: float
    estimate: float
    ci_low: float
    ci_high: float
    conf_level: float
    method: str
    alternative: str = "two.sided"
    conf_level_requested: float = 0.95
    n_zeros: int = 0
    exact: bool = False


def signed_rank(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray | None = None,
    *,
    mu: float = 0.0,
    exact: bool | None = None,
    correct: bool = True,
    conf_level: float = 0.95,
    alternative: str = "two.sided",
) -> SignedRankResult:
    """Wilcoxon signed-rank test (one-sample, or paired when ``y`` is given).

    Reproduces R (4.2) ``wilcox.test(x, mu=, exact=, correct=, conf.int=TRUE,
    conf.level=)`` or, with ``y``, ``wilcox.test(x, y, paired=TRUE, ...)``, mirroring
    ``stats:::wilcox.test.default`` line by line: zero differences are dropped (and force
    the normal branch); the exact branch uses ``psignrank``/``qsignrank`` and the sorted
    Walsh averages, and lowers ``conf_level`` to ``1 - signif(achieved alpha, 2)`` when the
    requested level cannot be reached; the normal branch uses the tie-corrected variance,
    the continuity correction, and ``uniroot`` (tol 1e-4) on the corrected statistic for
    the interval (doubling alpha while the interval would fall outside the data range, as
    R does) and on the uncorrected one for the pseudo-median.  No Python library computes
    this as R does, which is why it is written here.

    Parameters
    ----------
    x : sequence of float, shape (n,)
        Sample (or first member of the pairs).  NaN dropped (pairwise when paired).
    y : sequence of float, shape (n,), optional
        Second member of the pairs: the test is on ``x - y``.
    mu : float
        Location under the null hypothesis (same unit as x).
    exact, correct, conf_level, alternative
        As in :func:`rank_sum`.

    Returns
    -------
    SignedRankResult
    """
    _check_common(alternative, conf_level)
    if not math.isfinite(mu):
        raise StatsInputError(f"'mu' must be a single finite number; received {mu!r}")
    xa = _as_sample(x, "x")
    if y is not None:
        ya = _as_sample(y, "y")
        if ya.size != xa.size:
            raise StatsInputError(
                f"'x' and 'y' must have the same length for a paired test; received "
                f"{xa.size} and {ya.size}"
            )
        ok = ~(np.isnan(xa) | np.isnan(ya))
        xa = xa[ok] - ya[ok]
    xa = xa[~np.isnan(xa)]
    if xa.size < 1:
        raise StatsInputError("not enough (non-missing) 'x' observations: need at least 1")
    requested = conf_level
    method = "Wilcoxon signed rank test"
    xs = xa - mu
    zero_mask = xs == 0
    n_zeros = int(np.sum(zero_mask))
    zeroes = n_zeros > 0
    if zeroes:
        xs = xs[~zero_mask]
    n = float(xs.size)
    ni = xs.size
    if exact is None:
        exact = n < 50
    r = _rank(np.abs(xs))
    statistic = float(np.sum(r[xs > 0]))
    ties = np.unique(r).size != r.size
    if exact and not ties and not zeroes:
        method = "Wilcoxon signed rank exact test"
        if alternative == "two.sided":
            if statistic > n * (n + 1) / 4:
                p = _psignrank(statistic - 1, ni, lower_tail=False)
            else:
                p = _psignrank(statistic, ni)
            p_value = min(2 * p, 1.0)
        elif alternative == "greater":
            p_value = _psignrank(statistic - 1, ni, lower_tail=False)
        else:
            p_value = _psignrank(statistic, ni)
        xc = xs + mu
        alpha = 1 - conf_level
        iu = np.triu_indices(ni)
        walsh = np.sort(np.add.outer(xc, xc)[iu]) / 2
        total = ni * (ni + 1) // 2
        if alternative == "two.sided":
            qu = _qsignrank(alpha / 2, ni)
            if qu == 0:
                qu = 1
            ql = total - qu
            achieved = 2 * _psignrank(math.trunc(qu) - 1, ni)
            lo, hi = float(walsh[qu - 1]), float(walsh[ql])
        elif alternative == "greater":
            qu = _qsignrank(alpha, ni)
            if qu == 0:
                qu = 1
            achieved = _psignrank(math.trunc(qu) - 1, ni)
            lo, hi = float(walsh[qu - 1]), math.inf
        else:
            qu = _qsignrank(alpha, ni)
            if qu == 0:
                qu = 1
            ql = total - qu
            achieved = _psignrank(math.trunc(qu) - 1, ni)
            lo, hi = -math.inf, float(walsh[ql])
        if achieved - alpha > alpha / 2:
            logger.info(_CONF_NOT_ACHIEVED)
            conf_level = 1 - _signif(achieved, 2)
        return SignedRankResult(
            statistic=statistic,
            p_value=float(p_value),
            estimate=_median(walsh),
            ci_low=lo,
            ci_high=hi,
            conf_level=float(conf_level),
            method=method,
            alternative=alternative,
            conf_level_requested=requested,
            n_zeros=n_zeros,
            exact=True,
        )

    # normal approximation
    z = statistic - n * (n + 1) / 4
    sigma = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - _tie_sum(r) / 48)
    correction = 0.0
    if correct:
        correction = _continuity(z, alternative)
        method = method + " with continuity correction"
    zs = _safe_div(z - correction, sigma)
    p_value = _normal_p(zs, alternative)

    xc = xs + mu
    alpha = 1 - conf_level

    def w_stat(d: float, use_correct: bool) -> float:
        xd = xc - d
        xd = xd[xd != 0]
        nx = float(xd.size)
        dr = _rank(np.abs(xd))
        zd = float(np.sum(dr[xd > 0])) - nx * (nx + 1) / 4
        sig = math.sqrt(max(nx * (nx + 1) * (2 * nx + 1) / 24 - _tie_sum(dr) / 48, 0.0))
        corr = _continuity(zd, alternative) if use_correct else 0.0
        return _safe_div(zd - corr, sig)

    lo = hi = math.nan
    estimate = math.nan
    if ni > 0:
        mumin = float(np.min(xc))
        mumax = float(np.max(xc))
        w_min = w_stat(mumin, correct)
        w_max = w_stat(mumax, correct) if math.isfinite(w_min) else math.nan
    if ni == 0 or not math.isfinite(w_max):
        lo = -math.inf if alternative == "less" else math.nan
        hi = math.inf if alternative == "greater" else math.nan
        conf_level = 0.0
        estimate = (mumin + mumax) / 2 if ni > 0 else math.nan
        logger.warning("cannot compute confidence interval when all observations are zero or tied")
    else:

        def root(zq: float) -> float:
            return _uniroot(
                lambda d: w_stat(d, correct) - zq,
                mumin,
                mumax,
                1e-4,
                w_min - zq,
                w_max - zq,
            )

        if alternative == "two.sided":
            alpha, conf_level = _widen_alpha(
                alpha,
                conf_level,
                lambda a: w_min - _qnorm(a / 2, lower_tail=False) < 0 or w_max - _qnorm(a / 2) > 0,
            )
            if alpha < 1:
                lo = root(_qnorm(alpha / 2, lower_tail=False))
                hi = root(_qnorm(alpha / 2))
            else:
                lo = hi = _median(xc)
        elif alternative == "greater":
            alpha, conf_level = _widen_alpha(
                alpha, conf_level, lambda a: w_min - _qnorm(a, lower_tail=False) < 0
            )
            lo = root(_qnorm(alpha, lower_tail=False)) if alpha < 1 else _median(xc)
            hi = math.inf
        else:  # R uses alpha/2 here too
            alpha, conf_level = _widen_alpha(alpha, conf_level, lambda a: w_max - _qnorm(a / 2) > 0)
            lo = -math.inf
            hi = root(_qnorm(alpha)) if alpha < 1 else _median(xc)
        estimate = _uniroot(lambda d: w_stat(d, False), mumin, mumax, 1e-4)
    return SignedRankResult(
        statistic=statistic,
        p_value=float(p_value),
        estimate=float(estimate),
        ci_low=float(lo),
        ci_high=float(hi),
        conf_level=float(conf_level),
        method=method,
        alternative=alternative,
        conf_level_requested=requested,
        n_zeros=n_zeros,
        exact=False,
    )


@dataclass(frozen=True)
class SignedRankSasResult:
    """Result of :func:`signed_rank_sas`.

    Attributes
    ----------
    statistic : float
        SAS's S = V − n(n + 1)/4 (V the sum of the positive signed ranks, n the number of
        non-zero differences).
    p_value : float
        Two-sided ``Pr >= |S|``.
    n : int
        Number of non-zero differences used.
    n_zeros : int
        Zero differences dropped.
    exact : bool
        Exact distribution (n ≤ 20) or Student-t approximation (n > 20).
    t : float
        The t statistic of the approximation (nan when exact).
    method : str
    """

    statistic: float
    p_value: float
    n: int
    n_zeros: int
    exact: bool
    t: float
    method: str


#: SAS PROC UNIVARIATE uses the exact distribution of S up to this many non-zero values.
SAS_SIGNED_RANK_EXACT_MAX_N = 20


def signed_rank_sas(x: Sequence[float] | np.ndarray, *, mu: float = 0.0) -> SignedRankSasResult:
    """Wilcoxon signed-rank test as SAS PROC UNIVARIATE (``MU0=``) reports it.

    SAS's rule: zero differences are dropped; S = Σ_{x_i > mu} r_i − n(n + 1)/4 with
    average ranks r_i of |x_i − mu|; for n ≤ 20 the two-sided p-value ``Pr >= |S|`` comes
    from the exact permutation distribution of S (all 2^n sign patterns of the observed,
    possibly tied, ranks); for n > 20 from Student's t with n − 1 degrees of freedom,
    t = S·sqrt((n − 1)/(n·V − S²)), V = n(n + 1)(2n + 1)/24 − Σ(t_j³ − t_j)/48 (t_j the
    sizes of the tie groups).  SAS gives no Hodges–Lehmann interval here; use
    :func:`signed_rank` (R) for the pseudo-median.

    Parameters
    ----------
    x : sequence of float, shape (n,)
        Differences (e.g. change of HU vs baseline).  NaN dropped.
    mu : float
        Location under the null hypothesis (same unit as x).

    Returns
    -------
    SignedRankSasResult

    Raises
    ------
    StatsInputError
        No non-missing value, or infinite values.
    """
    xa = _as_sample(x, "x")
    xa = xa[~np.isnan(xa)]
    if xa.size < 1:
        raise StatsInputError("not enough (non-missing) 'x' observations: need at least 1")
    d = xa - mu
    n_zeros = int(np.sum(d == 0))
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return SignedRankSasResult(0.0, 1.0, 0, n_zeros, True, math.nan,
                                   "SAS UNIVARIATE signed rank (all differences zero)")  # fmt: skip
    r = _rank(np.abs(d))
    s = float(np.sum(r[d > 0])) - n * (n + 1) / 4.0
    if n <= SAS_SIGNED_RANK_EXACT_MAX_N:
        # doubled average ranks are whole numbers: distribution of the sum of the doubled
        # positive ranks over all 2^n sign patterns by convolution
        r2 = np.rint(2 * r).astype(np.int64)
        dist = np.zeros(int(r2.sum()) + 1)
        dist[0] = 1.0
        for k in r2:
            shifted = np.zeros_like(dist)
            shifted[k:] = dist[: dist.size - k]
            dist = (dist + shifted) / 2.0
        sums = np.arange(dist.size) / 2.0 - n * (n + 1) / 4.0
        p = float(np.sum(dist[np.abs(sums) >= abs(s) - 1e-9]))
        return SignedRankSasResult(
            s, min(1.0, p), n, n_zeros, True, math.nan,
            "SAS UNIVARIATE signed rank, exact distribution (n <= 20)",
        )  # fmt: skip
    v = n * (n + 1) * (2 * n + 1) / 24.0 - _tie_sum(r) / 48.0
    denom = n * v - s * s
    t = math.copysign(math.inf, s) if denom <= 0 else s * math.sqrt((n - 1) / denom)
    p = float(2 * special.stdtr(n - 1, -abs(t)))
    return SignedRankSasResult(
        s, min(1.0, p), n, n_zeros, False, t,
        "SAS UNIVARIATE signed rank, Student t approximation (n > 20)",
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Contingency tables
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ContingencyResult:
    """Result of :func:`chi_square` and :func:`fisher_exact`.

    Attributes
    ----------
    statistic : float
        Pearson X² (chi_square) or the probability of the observed table under the null
        hypothesis (fisher_exact).
    p_value : float
    dof : int or None
        Degrees of freedom (r − 1)(c − 1) for chi_square; None for fisher_exact.
    method : str
    """

    statistic: float
    p_value: float
    dof: int | None
    method: str


def _as_table(table: Any) -> np.ndarray:
    try:
        t = np.asarray(table, dtype=float)
    except (TypeError, ValueError) as exc:
        raise StatsInputError(f"table must be a 2-D array of counts; received {table!r}") from exc
    if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 2:
        raise StatsInputError(
            f"table must be 2-D with at least 2 rows and 2 columns; received shape {t.shape}"
        )
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise StatsInputError("all entries of the table must be non-negative finite counts")
    return t


def chi_square(table: Any, *, correct: bool = False) -> ContingencyResult:
    """Pearson's chi-square test of independence for an r×c table of counts.

    Reproduces R ``chisq.test(table, correct=)``: expected counts
    E = row total × column total / N, X² = Σ (|O − E| − Y)² / E with Y = min(0.5, |O − E|)
    (Yates) only for a 2×2 table with ``correct=True``, else Y = 0; p from the chi-square
    distribution with (r − 1)(c − 1) degrees of freedom.  Note R's default is
    ``correct=TRUE``; here the default is ``False`` (plain Pearson), as SAS PROC FREQ
    reports it.

    Parameters
    ----------
    table : array-like, shape (r, c)
        Counts, r, c ≥ 2.
    correct : bool

    Returns
    -------
    ContingencyResult
    """
    t = _as_table(table)
    n = float(np.sum(t))
    sr = t.sum(axis=1)
    sc = t.sum(axis=0)
    if np.any(sr == 0) or np.any(sc == 0):
        raise StatsInputError(
            "the table has a row or column with total 0; chi-square is undefined "
            f"(row totals {sr.tolist()}, column totals {sc.tolist()}); drop that row/column"
        )
    e = np.outer(sr, sc) / n
    method = "Pearson's Chi-squared test"
    yates = 0.0
    if correct and t.shape == (2, 2):
        yates = float(min(0.5, float(np.min(np.abs(t - e)))))
        if yates > 0:
            method += " with Yates' continuity correction"
    stat = float(np.sum((np.abs(t - e) - yates) ** 2 / e))
    dof = (t.shape[0] - 1) * (t.shape[1] - 1)
    return ContingencyResult(
        statistic=stat,
        p_value=float(special.chdtrc(dof, stat)),
        dof=dof,
        method=method,
    )


def cochran_rule(table: Any) -> tuple[bool, str]:
    """Cochran's rule for the chi-square approximation of an r×c table.

    The approximation is trusted when no expected count is below 1 and at most 20 % of
    the expected counts are below 5 (Cochran 1954; the rule of SAS PROC FREQ's warning
    and of R's "Chi-squared approximation may be incorrect" for 2×2 tables).

    Parameters
    ----------
    table : array-like, shape (r, c)
        Counts with no empty row or column.

    Returns
    -------
    (ok, message) : tuple of (bool, str)
        ``ok`` False when the rule is broken; ``message`` says why ("" when ok).
    """
    t = _as_table(table)
    n = float(np.sum(t))
    e = np.outer(t.sum(axis=1), t.sum(axis=0)) / n if n > 0 else np.zeros_like(t)
    small = int(np.sum(e < 5))
    tiny = int(np.sum(e < 1))
    if tiny or small > 0.2 * e.size:
        return False, (
            f"{small} of {e.size} expected counts below 5"
            + (f" ({tiny} below 1)" if tiny else "")
            + "; the chi-square approximation may be poor (Cochran's rule)"
        )
    return True, ""


_FISHER_MAX_TABLES = 20_000_000


def fisher_exact(table: Any) -> ContingencyResult:
    """Fisher's exact test for an r×c table of counts (two-sided).

    Reproduces the p-value of R ``fisher.test(table)``: the sum of the null probabilities
    (multivariate hypergeometric, margins fixed) of all tables whose probability is at
    most that of the observed table times (1 + 1e-7).  The tables are enumerated column
    by column (no network algorithm), which is fast for the trial's sizes (two arms of 30
    and a handful of categories); tables with more than ~2e7 configurations are refused.

    Parameters
    ----------
    table : array-like, shape (r, c)
        Counts (whole numbers), r, c ≥ 2.

    Returns
    -------
    ContingencyResult
        ``statistic`` is the probability of the observed table; ``dof`` is None.
    """
    t = _as_table(table)
    if np.any(t != np.round(t)):
        raise StatsInputError("Fisher's exact test needs whole-number counts; round them first")
    ti = t.astype(np.int64)
    # Permuting rows/columns leaves every probability unchanged; putting the largest row
    # and column last (they are determined by the others) keeps the enumeration small.
    ti = ti[np.argsort(ti.sum(axis=1), kind="stable")]
    ti = ti[:, np.argsort(ti.sum(axis=0), kind="stable")]
    rows = ti.sum(axis=1)
    cols = ti.sum(axis=0)
    n_total = int(ti.sum())
    lf = special.gammaln(np.arange(n_total + 2, dtype=float) + 1.0)
    const = float(np.sum(lf[rows]) + np.sum(lf[cols]) - lf[n_total])
    log_obs = const - float(np.sum(lf[ti]))
    nr = ti.shape[0]
    # Enumerate column by column: states = remaining row totals, with accumulated
    # sum of -log(cell!).
    rem = rows[np.newaxis, :].copy()
    acc = np.zeros(1)
    for j in range(ti.shape[1] - 1):
        cj = int(cols[j])
        # fill rows 0..nr-2 of column j, last row takes the rest
        left = np.full(rem.shape[0], cj, dtype=np.int64)
        new_rem = rem.copy()
        for i in range(nr - 1):
            upper = np.minimum(new_rem[:, i], left)
            counts = upper + 1
            total = int(counts.sum())
            if total > _FISHER_MAX_TABLES:
                raise StatsInputError(
                    "table too large for exact enumeration "
                    f"(margins rows={rows.tolist()}, cols={cols.tolist()}); use chi_square"
                )
            idx = np.repeat(np.arange(counts.size), counts)
            starts = np.cumsum(counts) - counts
            v = np.arange(total) - np.repeat(starts, counts)
            new_rem = new_rem[idx]
            new_rem[:, i] -= v
            left = left[idx] - v
            acc = acc[idx] - lf[v]
        last = new_rem[:, nr - 1]
        ok = left <= last
        new_rem = new_rem[ok]
        left = left[ok]
        acc = acc[ok] - lf[left]
        new_rem[:, nr - 1] -= left
        rem = new_rem
    # last column is determined: cells = remaining row totals
    acc = acc - np.sum(lf[rem], axis=1)
    logp = const + acc
    probs = np.exp(logp)
    p_obs = math.exp(log_obs)
    p_value = float(np.sum(probs[probs <= p_obs * (1 + 1e-7)]))
    return ContingencyResult(
        statistic=p_obs,
        p_value=max(0.0, min(1.0, p_value)),
        dof=None,
        method="Fisher's Exact Test for Count Data",
    )


# ---------------------------------------------------------------------------
# Survival
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class KaplanMeierResult:
    """Result of :func:`kaplan_meier`; arrays have shape (n_times,), one entry per
    distinct observed time (event or censoring), as R's ``survfit`` stores them.

    Attributes
    ----------
    time : ndarray
        Distinct times (unit of the input, e.g. months).
    n_risk, n_event, n_censor : ndarray of int
    survival : ndarray
        Kaplan–Meier estimate S(t).
    std_err : ndarray
        Standard error of S(t) (Greenwood), as ``summary(survfit(...))$std.err``.
    std_err_log : ndarray
        Standard error of −log S(t), as ``survfit(...)$std.err``.
    lower, upper : ndarray
        Pointwise confidence limits with R's default ``conf.type = "log"``
        (nan where S = 0).
    conf_level : float
    median, median_lower, median_upper : float
        Median survival and its limits with R's rule (``quantile.survfit``): the
        smallest time with S ≤ 0.5; when S equals 0.5 (within sqrt(machine eps)) on an
        interval, the midpoint of that time and the next event time (or the last time).
        nan when not reached.
    """

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    n_censor: np.ndarray
    survival: np.ndarray
    std_err: np.ndarray
    std_err_log: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    conf_level: float
    median: float
    median_lower: float
    median_upper: float

    def to_frame(self) -> pd.DataFrame:
        """The curve as a table (one row per distinct time)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "time": self.time,
                "n_risk": self.n_risk,
                "n_event": self.n_event,
                "n_censor": self.n_censor,
                "survival": self.survival,
                "std_err": self.std_err,
                "lower": self.lower,
                "upper": self.upper,
            }
        )


def _survival_input(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_sample(time, "time")
    e = np.asarray(event).ravel()
    if e.size != t.size:
        raise StatsInputError(
            f"'time' and 'event' must have the same length; received {t.size} and {e.size}"
        )
    try:
        ev = e.astype(float)
    except (TypeError, ValueError) as exc:
        raise StatsInputError("'event' must be 0/1 or boolean") from exc
    ok = ~(np.isnan(t) | np.isnan(ev))
    t, ev = t[ok], ev[ok]
    if not np.all((ev == 0) | (ev == 1)):
        raise StatsInputError(
            f"'event' must be 0 (censored) or 1 (event); received values {np.unique(ev)}"
        )
    if t.size == 0:
        raise StatsInputError("no (non-missing) observations in 'time'")
    if np.any(t < 0):
        raise StatsInputError("'time' must be non-negative")
    return t, ev.astype(bool)


def _findq(x: np.ndarray, y: np.ndarray, p: float, tol: float) -> float:
    """survival:::findq for a single probability p (x times, y = 1 - S, leading 0s)."""
    if np.nanmax(y) < p:
        return math.nan
    xmax = x[-1]
    keep = np.ones(y.size, dtype=bool)
    seen: set[float] = set()
    for i, v in enumerate(y):
        key = float(v)
        if key in seen:
            keep[i] = False
        seen.add(key)
    xs, ys = x[keep], y[keep]
    n = ys.size
    idx = np.arange(1, n + 1, dtype=float)

    def approx_const(xv: np.ndarray, v: float) -> float:
        if v < xv[0] or v > xv[-1]:
            return math.nan
        i, j = 0, xv.size - 1
        while i < j - 1:
            ij = (i + j) // 2
            if v < xv[ij]:
                j = ij
            else:
                i = ij
        if v == xv[j]:
            return idx[j]
        if v == xv[i]:
            return idx[i]
        return idx[j]

    i1 = approx_const(ys + tol, p)
    i2 = approx_const(ys - tol, p)
    x1 = math.nan if math.isnan(i1) else float(xs[int(i1) - 1])
    x2 = math.nan if math.isnan(i2) else float(xs[int(i2) - 1])
    quant = (x1 + x2) / 2
    if p == 0:
        quant = float(xs[0])
    if not math.isnan(ys[-1]) and abs(p - ys[-1]) < tol:
        # S reaches p exactly at the last distinct value: midpoint with the last time
        quant = (x1 + float(xmax)) / 2
    return float(quant)


def kaplan_meier(time: Any, event: Any, *, conf_level: float = 0.95) -> KaplanMeierResult:
    """Kaplan–Meier estimate with Greenwood errors, log-type limits and R's median.

    Reproduces R ``survival::survfit(Surv(time, event) ~ 1)`` (``conf.type = "log"``,
    ``conf.int = 0.95``): S(t) = Π (1 − d/n); std.err of −log S = sqrt(Σ d/(n(n − d)));
    limits exp(log S ± z·se) with the upper limit capped at 1; and the median of
    ``quantile(fit, 0.5)`` / ``print(fit)`` (survival:::findq with tolerance
    sqrt(.Machine$double.eps)).

    Parameters
    ----------
    time : sequence of float, shape (n,)
        Follow-up time (any unit, e.g. months), ≥ 0.
    event : sequence of {0, 1} or bool, shape (n,)
        1 = event (e.g. death), 0 = censored.
    conf_level : float

    Returns
    -------
    KaplanMeierResult
    """
    t, ev = _survival_input(time, event)
    times = np.unique(t)
    n_event = np.array([int(np.sum(ev & (t == u))) for u in times])
    n_obs = np.array([int(np.sum(t == u)) for u in times])
    n_risk = np.array([int(np.sum(t >= u)) for u in times])
    n_censor = n_obs - n_event
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - n_event / n_risk)
        hvar = np.cumsum(
            np.where(n_event > 0, n_event / (n_risk * (n_risk - n_event).astype(float)), 0.0)
        )
        se_log = np.sqrt(hvar)
        z = _qnorm(1 - (1 - conf_level) / 2)
        s_nan = np.where(surv == 0, np.nan, surv)
        lower = np.exp(np.log(s_nan) - z * se_log)
        upper = np.minimum(np.exp(np.log(s_nan) + z * se_log), 1.0)
        se_s = se_log * surv
    tol = math.sqrt(_DBL_EPSILON)
    x0 = np.concatenate([[0.0], times])
    med = _findq(x0, np.concatenate([[0.0], 1 - surv]), 0.5, tol)
    # R's quantile.survfit: the limits of the median are where the lower / upper
    # confidence curves cross 0.5
    med_lo = _findq(x0, np.concatenate([[0.0], 1 - lower]), 0.5, tol)
    med_hi = _findq(x0, np.concatenate([[0.0], 1 - upper]), 0.5, tol)
    return KaplanMeierResult(
        time=times,
        n_risk=n_risk,
        n_event=n_event,
        n_censor=n_censor,
        survival=surv,
        std_err=se_s,
        std_err_log=se_log,
        lower=lower,
        upper=upper,
        conf_level=conf_level,
        median=med,
        median_lower=med_lo,
        median_upper=med_hi,
    )


@dataclass(frozen=True, eq=False)
class SurvivalAtResult:
    """Result of :func:`survival_at`; arrays of shape (n_times,).

    Attributes
    ----------
    time : ndarray
        The requested times.
    survival, std_err, lower, upper : ndarray
        S(t), its Greenwood standard error and the log-type limits; nan after the last
        observed time (not estimable, R's ``summary(..., extend=FALSE)`` drops them).
    n_risk : ndarray of int
        Number of subjects still under observation at t (time ≥ t).
    n_event : ndarray of int
        Events up to and including t.
    """

    time: np.ndarray
    survival: np.ndarray
    std_err: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray


def survival_at(km: KaplanMeierResult, times: Sequence[float]) -> SurvivalAtResult:
    """Kaplan–Meier survival at given times with CI and number at risk.

    Reproduces R ``summary(survfit(Surv(time, event) ~ 1), times=)`` (``extend=FALSE``):
    S(t) is the estimate at the last observed time ≤ t (1 before the first one, with
    limits 1 and standard error 0); ``n.risk`` is the number with time ≥ t; times after
    the last observed time are not estimable (nan survival, 0 at risk).

    Parameters
    ----------
    km : KaplanMeierResult
        From :func:`kaplan_meier`.
    times : sequence of float
        Times in the unit of the curve (e.g. months: 3 and 6).

    Returns
    -------
    SurvivalAtResult
    """
    tt = np.asarray(list(times), dtype=float)
    k = tt.size
    surv = np.full(k, np.nan)
    se = np.full(k, np.nan)
    lo = np.full(k, np.nan)
    hi = np.full(k, np.nan)
    nr = np.zeros(k, dtype=int)
    ne = np.zeros(k, dtype=int)
    tmax = float(km.time[-1]) if km.time.size else -math.inf
    for i, t in enumerate(tt):
        after = np.nonzero(km.time >= t)[0]
        nr[i] = int(km.n_risk[after[0]]) if after.size else 0
        upto = np.nonzero(km.time <= t)[0]
        ne[i] = int(np.sum(km.n_event[upto])) if upto.size else 0
        if t > tmax:
            continue
        if upto.size == 0:
            surv[i], se[i], lo[i], hi[i] = 1.0, 0.0, 1.0, 1.0
        else:
            j = int(upto[-1])
            surv[i], se[i] = km.survival[j], km.std_err[j]
            lo[i], hi[i] = km.lower[j], km.upper[j]
    return SurvivalAtResult(tt, surv, se, lo, hi, nr, ne)


@dataclass(frozen=True, eq=False)
class LogrankResult:
    """Result of :func:`logrank`.

    Attributes
    ----------
    statistic : float
        Log-rank chi-square.
    dof : int
    p_value : float
    groups : tuple
        Group labels, sorted as R sorts factor levels.
    observed, expected : ndarray, shape (n_groups,)
        Observed and expected numbers of events per group.
    """

    statistic: float
    dof: int
    p_value: float
    groups: tuple[Any, ...]
    observed: np.ndarray
    expected: np.ndarray


def logrank(time: Any, event: Any, group: Any) -> LogrankResult:
    """Log-rank test comparing survival between groups.

    Reproduces R ``survival::survdiff(Surv(time, event) ~ group)`` (rho = 0): observed
    and expected events per group, hypergeometric variance, chi-square
    = (O − E)' V⁻¹ (O − E) over the groups with positive expected count minus the first,
    dof = number of such groups − 1.

    Parameters
    ----------
    time, event : as in :func:`kaplan_meier`, shape (n,)
    group : sequence, shape (n,)
        Group label of each subject (e.g. "IMRT", "3DCRT").

    Returns
    -------
    LogrankResult
    """
    g = np.asarray(group, dtype=object).ravel()
    traw = _as_sample(time, "time")
    if g.size != traw.size:
        raise StatsInputError(
            f"'group' must have one label per subject; received {g.size} labels for "
            f"{traw.size} times"
        )
    e_raw = np.asarray(event, dtype=float).ravel()
    ok = ~(np.isnan(traw) | np.isnan(e_raw)) & np.array([v is not None for v in g])
    t, ev = _survival_input(traw[ok], e_raw[ok])
    g = g[ok]
    labels = tuple(sorted(set(g.tolist())))
    k = len(labels)
    if k < 2:
        raise StatsInputError(f"logrank needs at least 2 groups; received {labels}")
    gi = np.array([labels.index(v) for v in g])
    obs = np.zeros(k)
    exp_ = np.zeros(k)
    var = np.zeros((k, k))
    for u in np.unique(t[ev]):
        at_risk = t >= u
        n_t = float(np.sum(at_risk))
        died = ev & (t == u)
        d_t = float(np.sum(died))
        n_g = np.array([float(np.sum(at_risk & (gi == j))) for j in range(k)])
        d_g = np.array([float(np.sum(died & (gi == j))) for j in range(k)])
        obs += d_g
        exp_ += d_t * n_g / n_t
        if n_t > 1:
            f = d_t * (n_t - d_t) / (n_t - 1)
            var += f * (np.diag(n_g / n_t) - np.outer(n_g, n_g) / n_t**2)
    use = exp_ > 0
    dof = int(np.sum(use)) - 1
    if dof < 1:
        stat = 0.0
    else:
        diff = (obs - exp_)[use][1:]
        vv = var[np.ix_(use, use)][1:, 1:]
        stat = float(np.sum(np.linalg.solve(vv, diff) * diff))
    return LogrankResult(
        statistic=stat,
        dof=dof,
        p_value=float(special.chdtrc(dof, stat)) if dof >= 1 else math.nan,
        groups=labels,
        observed=obs,
        expected=exp_,
    )


# ---------------------------------------------------------------------------
# Repeated measures
# ---------------------------------------------------------------------------


REPEATED_MEASURES_COLUMNS = ("term", "estimate", "se", "z", "p_value", "ci_low", "ci_high")


def repeated_measures(
    df: pd.DataFrame,
    *,
    value: str = "hu",
    time: str = "timepoint",
    group: str = "arm",
    subject: str = "patient_id",
    covariates: Sequence[str] = ("analgesics",),
    interaction: bool = True,
) -> pd.DataFrame:
    """The paper's "analysis of covariance with repeated measurements".

    HU over time with treatment group as factor and pain medication as covariate, fitted
    as a linear mixed model with a random intercept per patient (statsmodels ``MixedLM``,
    REML):  ``value ~ C(group) * C(time) + covariates``, groups = ``subject``.  This is
    the analogue of SAS ``PROC MIXED; CLASS subject group time; MODEL value = group time
    group*time covariates; RANDOM intercept / SUBJECT=subject;`` and of R
    ``nlme::lme(value ~ group * time + covariates, random = ~ 1 | subject)``.

    Parameters
    ----------
    df : pandas.DataFrame
        Long table, one row per patient × timepoint (rows with missing values in the
        used columns are dropped).
    value, time, group, subject : str
        Column names (value e.g. HU or %ΔHU).
    covariates : sequence of str
        Covariate columns (e.g. analgesic use 0/1).
    interaction : bool
        Include the group × time interaction.

    Returns
    -------
    pandas.DataFrame
        Columns ``term, estimate, se, z, p_value, ci_low, ci_high`` (95 % Wald limits),
        one row per fixed effect (random-effect variance excluded).
    """
    import pandas as pd
    import statsmodels.formula.api as smf

    needed = [value, time, group, subject, *covariates]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise StatsInputError(
            f"repeated_measures: columns {missing} not in the table (has {list(df.columns)})"
        )
    data = df[needed].dropna().copy()
    if data[subject].nunique() < 2:
        raise StatsInputError("repeated_measures needs at least two subjects")
    rhs = f"C({group}) * C({time})" if interaction else f"C({group}) + C({time})"
    if covariates:
        rhs += " + " + " + ".join(covariates)
    model = smf.mixedlm(f"{value} ~ {rhs}", data, groups=data[subject])
    fit = model.fit(reml=True)
    names = list(fit.model.exog_names)
    params = fit.fe_params
    bse = fit.bse_fe
    zval = params / bse
    pval = 2 * special.ndtr(-np.abs(zval))
    q = _qnorm(0.975)
    return pd.DataFrame(
        {
            "term": names,
            "estimate": params.to_numpy(),
            "se": bse.to_numpy(),
            "z": zval.to_numpy(),
            "p_value": np.asarray(pval),
            "ci_low": (params - q * bse).to_numpy(),
            "ci_high": (params + q * bse).to_numpy(),
        }
    )
