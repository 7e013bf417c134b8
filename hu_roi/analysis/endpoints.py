"""The trial's endpoints as tidy tables (Tables 1-5 of the paper, CONSORT counts, pain, OS).

Every function takes validated tables (clinical: :func:`hu_roi.analysis.clinical.read_clinical`;
HU: :func:`hu_roi.analysis.schemas.longitudinal_from_measurements`) and returns a
``pandas.DataFrame`` with documented columns; :func:`analyze` runs them all.  Tests use
:mod:`hu_roi.analysis.stats` (R / SAS conventions):

- categorical comparisons: Pearson chi-square **without** continuity correction
  (``chi_square(table, correct=False)``, SAS PROC FREQ "Chi-Square"); levels that are empty
  in both arms are dropped first.  This reproduces every printed p-value of Tables 1, 4, 5.
- HU between arms: Wilcoxon rank-sum, Hodges-Lehmann shift and asymptotic (Moses) 95 % CI
  in SAS mode (``rank_sum(..., method="SAS")``, SAS PROC NPAR1WAY WILCOXON HL).  SAS shifts
  the *reference* group (the smaller one, or IMRT when sizes are equal) against the other;
  the column ``hl_of`` says which difference the estimate is (this explains the changing
  signs in the paper's Table 2).
- HU within arm (change vs baseline): Wilcoxon signed-rank (``signed_rank``, R's
  ``wilcox.test(paired=TRUE)``).
- VAS / OMED between arms per timepoint: Wilcoxon rank-sum (SAS mode p-value).
- Table 1 continuous rows: two-sample Student t-test (pooled variance) for age, weight,
  height and BMI (reproduces the printed p-values from the printed means/SDs), Wilcoxon
  rank-sum for the Karnofsky score (the t-test on the printed KPS mean/SD gives 0.148, not
  the printed 0.283, so the paper did not use a t-test there).
- overall survival: Kaplan-Meier per arm and log-rank (``kaplan_meier``, ``logrank``).

Arms are always ``IMRT`` then ``3DCRT``; column prefixes ``imrt_`` and ``crt_``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hu_roi.analysis import stats
from hu_roi.analysis.clinical import (
    ARMS,
    BASELINE_FLAGS,
    HEIGHT_SITES,
    LOCALISATIONS,
    OS_ORIGIN_TEXT,
    OS_ORIGINS,
    PRIMARY_SITES,
    VCF_HEIGHT_LOSS,
    alive_at,
    fracture_status,
    height_loss,
    survival_months,
    vertebral_compression_fracture,
)
from hu_roi.analysis.pain import CHOW_CATEGORIES, chow_categories
from hu_roi.analysis.schemas import LEVELS, TIMEPOINTS
from hu_roi.errors import SchemaError

logger = logging.getLogger(__name__)

PREFIX = {"IMRT": "imrt", "3DCRT": "crt"}
LESION_SUBGROUPS = ("mixed", "osteolytic", "osteoblastic")
"""Table 3 subgroup order (as printed)."""
TIMEPOINT_LABEL = {"T0": "baseline", "T1": "end of RT", "T2": "3 months", "T3": "6 months"}

WITHIN_TESTS = ("r-default", "r-normal", "sas")
"""Within-arm signed-rank conventions: R ``wilcox.test`` default (exact for n < 50 without
ties or zeros), R normal approximation with continuity correction, SAS PROC UNIVARIATE."""
BETWEEN_METHODS = ("sas", "r")
"""Between-arm rank-sum conventions: SAS NPAR1WAY (asymptotic Moses interval) or R."""
SURVIVAL_LANDMARKS = (3.0, 6.0)
"""Months at which Kaplan-Meier survival is reported."""

_WITHIN_TEXT = {
    "r-default": "Wilcoxon signed-rank test as R wilcox.test(x) by default: exact p when n < 50 "
    "without ties or zero changes, else normal approximation with continuity correction",
    "r-normal": "Wilcoxon signed-rank test, R wilcox.test(x, exact=FALSE, correct=TRUE): normal "
    "approximation with continuity correction for every n",
    "sas": "Wilcoxon signed-rank test as SAS PROC UNIVARIATE: exact p for n <= 20 non-zero "
    "changes, Student t approximation above",
}
_BETWEEN_TEXT = {
    "sas": "Wilcoxon rank-sum test as SAS PROC NPAR1WAY WILCOXON HL: continuity-corrected normal "
    "p, Hodges-Lehmann shift of the reference group (the smaller arm, IMRT when equal) with "
    "asymptotic (Moses) 95% limits",
    "r": "Wilcoxon rank-sum test as R wilcox.test(IMRT, 3DCRT, conf.int=TRUE): exact p and "
    "interval when both arms have n < 50 and no ties, else normal approximation with continuity "
    "correction; Hodges-Lehmann shift IMRT - 3DCRT",
}


@dataclass(frozen=True)
class Conventions:
    """Statistical conventions of one analysis (each a CLI option of ``hu-roi analyze``).

    Attributes
    ----------
    within_test : {"r-default", "r-normal", "sas"}
        Within-arm signed-rank test (:data:`WITHIN_TESTS`).  The pseudo-median and its
        95 % CI are always R's ``wilcox.test(x, conf.int=TRUE)`` (exact or normal as R
        decides; with ``r-normal`` the normal one); SAS gives none.
    between : {"sas", "r"}
        Between-arm rank-sum test and Hodges-Lehmann interval (:data:`BETWEEN_METHODS`).
    os_origin : {"diagnosis", "rt", "columns"}
        Origin of overall survival (:data:`hu_roi.analysis.clinical.OS_ORIGINS`).
    hu_after_death : bool
        Use HU measured at a timepoint whose nominal date is after the patient's death
        (default False: such values are left out, with a note).
    """

    within_test: str = "r-default"
    between: str = "sas"
    os_origin: str = "diagnosis"
    hu_after_death: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("within_test", WITHIN_TESTS),
            ("between", BETWEEN_METHODS),
            ("os_origin", OS_ORIGINS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {allowed}; received {getattr(self, name)!r}"
                )

    def settings(self) -> pd.DataFrame:
        """The conventions as a table ``setting, value, description`` (written as
        ``analysis_settings.csv`` and stated in the report's Methods)."""
        rows = [
            ("within_test", self.within_test, _WITHIN_TEXT[self.within_test]),
            ("between", self.between, _BETWEEN_TEXT[self.between]),
            ("os_origin", self.os_origin, "overall survival " + OS_ORIGIN_TEXT[self.os_origin]),
            (
                "hu_after_death",
                "included" if self.hu_after_death else "excluded",
                "HU measured at a timepoint after the patient's death is "
                + ("used" if self.hu_after_death else "left out (not counted at that timepoint)"),
            ),
        ]
        return pd.DataFrame(rows, columns=["setting", "value", "description"])

    def methods(self) -> list[str]:
        """One sentence per convention, for the report's Methods section."""
        return [f"{d}." for d in self.settings()["description"]]


# --------------------------------------------------------------------------- helpers


def compare_counts(table: Sequence[Sequence[float]] | np.ndarray) -> stats.ContingencyResult:
    """Pearson chi-square without continuity correction on an arm x category count table.

    Rows or columns that are zero in total (a category nobody has) are dropped first, as
    SAS PROC FREQ does.

    Parameters
    ----------
    table : array-like, shape (n_arms, n_categories)
        Counts.

    Returns
    -------
    hu_roi.analysis.stats.ContingencyResult
        ``statistic``, ``p_value``, ``dof``; p is NaN when fewer than 2 rows/columns remain.
    """
    t = np.asarray(table, dtype=float)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 2:
        return stats.ContingencyResult(np.nan, np.nan, None, "not computable (one row or column)")
    return stats.chi_square(t, correct=False)


def count_test(table: Sequence[Sequence[float]] | np.ndarray) -> dict[str, object]:
    """Chi-square (:func:`compare_counts`), Fisher's exact p and Cochran's rule of a table.

    Returns
    -------
    dict
        ``statistic``, ``p_value`` (Pearson chi-square, no correction), ``fisher_p`` (R
        ``fisher.test``; NaN when not computable), ``small_expected`` (Cochran's rule
        message, "" when the chi-square approximation is trusted).
    """
    res = compare_counts(table)
    t = np.asarray(table, dtype=float)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    fisher = np.nan
    warn = ""
    if not np.isnan(res.p_value):
        ok, warn = stats.cochran_rule(t)
        try:
            fisher = stats.fisher_exact(t).p_value
        except stats.StatsInputError as exc:
            logger.info("Fisher's exact test not computed: %s", exc)
    return {
        "statistic": res.statistic,
        "p_value": res.p_value,
        "fisher_p": fisher,
        "small_expected": warn,
    }


def _arm_values(df: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    return {arm: df.loc[df["arm"] == arm, column].astype(float).dropna().to_numpy() for arm in ARMS}


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size > 1 else np.nan


def _pct(k: float, n: float) -> float:
    return 100.0 * k / n if n else np.nan


def _rank_sum_sas(a: np.ndarray, b: np.ndarray, between: str = "sas") -> stats.RankSumResult | None:
    """Rank-sum of IMRT values ``a`` vs 3DCRT values ``b`` in the ``between`` convention
    (SAS or R), or None when it cannot be computed (empty arm, all values tied)."""
    if a.size == 0 or b.size == 0:
        return None
    try:
        return stats.rank_sum(a, b, method="SAS" if between == "sas" else "R")
    except stats.StatsInputError as exc:
        logger.info("rank-sum not computed: %s", exc)
        return None


def _hl_of(r: stats.RankSumResult) -> str:
    return "IMRT - 3DCRT" if r.estimate_of == "x - y" else "3DCRT - IMRT"


def _within(x: np.ndarray, convention: str) -> dict[str, object]:
    """Within-arm signed-rank test of the changes ``x`` against 0 in ``convention``.

    Returns
    -------
    dict
        ``p``, ``statistic`` (R's V, or SAS's S), ``estimate`` (R's pseudo-median),
        ``ci_low``, ``ci_high`` (its 95 % CI, R ``wilcox.test(x, conf.int=TRUE)``),
        ``conf_level`` (achieved), ``method``; NaN where not computable.
    """
    out: dict[str, object] = {
        "p": np.nan, "statistic": np.nan, "estimate": np.nan, "ci_low": np.nan,
        "ci_high": np.nan, "conf_level": np.nan, "method": "",
    }  # fmt: skip
    if x.size == 0 or np.count_nonzero(x) == 0:
        return out
    try:
        r = stats.signed_rank(x, exact=False if convention == "r-normal" else None)
    except stats.StatsInputError as exc:
        logger.info("signed-rank not computed: %s", exc)
        return out
    out.update(
        p=r.p_value, statistic=r.statistic, estimate=r.estimate, ci_low=r.ci_low,
        ci_high=r.ci_high, conf_level=r.conf_level, method=r.method,
    )  # fmt: skip
    if convention == "sas":
        sas = stats.signed_rank_sas(x)
        out.update(p=sas.p_value, statistic=sas.statistic, method=sas.method)
    return out


def student_t_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sample Student t-test with pooled variance, two-sided.

    Same as R ``t.test(x, y, var.equal=TRUE)`` and SAS PROC TTEST "Pooled" (the stats API
    has no t-test; written here to avoid importing scipy.stats, which is slow to load).

    Returns
    -------
    (t, p) : tuple of float
        t = (mean(x) - mean(y)) / sqrt(s_p^2 (1/n_x + 1/n_y)), df = n_x + n_y - 2.
    """
    from scipy import special

    nx, ny = x.size, y.size
    df = nx + ny - 2
    if nx < 1 or ny < 1 or df < 1:
        return np.nan, np.nan
    sp2 = (
        (nx - 1) * np.var(x, ddof=1 if nx > 1 else 0)
        + (ny - 1) * np.var(y, ddof=1 if ny > 1 else 0)
    ) / df
    se = np.sqrt(sp2 * (1.0 / nx + 1.0 / ny))
    if se == 0:
        return np.nan, np.nan
    t = float((np.mean(x) - np.mean(y)) / se)
    return t, float(2.0 * special.stdtr(df, -abs(t)))


def _check_arms(clinical: pd.DataFrame) -> None:
    bad = sorted(set(clinical["arm"].dropna()) - set(ARMS))
    if bad:
        raise SchemaError(f"arm values {bad} are not one of {ARMS}")


# --------------------------------------------------------------------------- Table 1


def _n_met_group(n: object) -> str | None:
    if n is None or pd.isna(n):
        return None
    return "1" if int(n) == 1 else ("2" if int(n) == 2 else ">=3")  # type: ignore[call-overload]


def table1_baseline(clinical: pd.DataFrame, *, between: str = "sas") -> pd.DataFrame:
    """Table 1: baseline characteristics per arm with the paper's tests.

    Returns
    -------
    pandas.DataFrame
        Columns ``group, variable, level, imrt_n, imrt_pct, crt_n, crt_pct, imrt_total,
        crt_total`` (patients with a known value), ``imrt_mean, imrt_sd, crt_mean, crt_sd,
        imrt_summary,
        crt_summary, test, statistic, p_value, fisher_p, small_expected``.  Continuous rows
        have ``level`` = "mean (SD)";
        categorical variables have one row per level and the p-value on the first row;
        yes/no rows show the "yes" count (percent of patients with a known value).
    """
    _check_arms(clinical)
    rows: list[dict[str, object]] = []
    c = clinical.copy()
    c["bmi"] = c["weight_kg"] / (c["height_cm"] / 100.0) ** 2

    continuous = (
        ("age", "Age (years)", "t"),
        ("kps", "Karnofsky performance status", "wilcoxon"),
        ("weight_kg", "Weight (kg)", "t"),
        ("height_cm", "Height (cm)", "t"),
        ("bmi", "Body mass index (kg/m2)", "t"),
    )
    for col, label, test in continuous:
        v = _arm_values(c, col)
        a, b = v["IMRT"], v["3DCRT"]
        stat = p = np.nan
        if a.size >= 2 and b.size >= 2:
            if test == "t":
                stat, p = student_t_test(a, b)
                tname = "Student t-test (pooled)"
            else:
                rs = _rank_sum_sas(a, b, between)
                stat, p = (rs.statistic, rs.p_value) if rs else (np.nan, np.nan)
                tname = f"Wilcoxon rank-sum ({between.upper()})"
        else:
            tname = "not computable"
        rows.append(
            {
                "group": "",
                "variable": label,
                "level": "mean (SD)",
                "imrt_n": a.size,
                "imrt_pct": np.nan,
                "crt_n": b.size,
                "crt_pct": np.nan,
                "imrt_total": a.size,
                "crt_total": b.size,
                "imrt_mean": float(np.mean(a)) if a.size else np.nan,
                "imrt_sd": _sd(a),
                "crt_mean": float(np.mean(b)) if b.size else np.nan,
                "crt_sd": _sd(b),
                "imrt_summary": f"{np.mean(a):.1f} ({_sd(a):.1f})" if a.size else "",
                "crt_summary": f"{np.mean(b):.1f} ({_sd(b):.1f})" if b.size else "",
                "test": tname,
                "statistic": stat,
                "p_value": p,
                "fisher_p": np.nan,
                "small_expected": "",
            }
        )

    c["n_met_group"] = c["n_metastases"].map(_n_met_group)
    categorical = (
        ("sex", "Gender", ("male", "female")),
        ("primary_site", "Primary site", PRIMARY_SITES),
        ("localisation", "Localisation of the metastasis", LOCALISATIONS),
        ("n_met_group", "Number of metastases", ("1", "2", ">=3")),
    )
    for col, label, levels in categorical:
        rows += _categorical_rows(c, col, label, levels, group="")
    for col, label, group in BASELINE_FLAGS:
        rows += _categorical_rows(c, col, label, (True, False), group=group, show=(True,))
    return pd.DataFrame(rows)


def _categorical_rows(
    c: pd.DataFrame,
    col: str,
    label: str,
    levels: Sequence[object],
    *,
    group: str,
    show: Sequence[object] | None = None,
) -> list[dict[str, object]]:
    counts = np.array(
        [[int((c.loc[c["arm"] == arm, col] == lv).sum()) for lv in levels] for arm in ARMS]
    )
    res = count_test(counts)
    totals = counts.sum(axis=1)
    out = []
    shown = [i for i, lv in enumerate(levels) if show is None or lv in show]
    for j, i in enumerate(shown):
        lv = levels[i]
        out.append(
            {
                "group": group,
                "variable": label,
                "level": "yes" if lv is True else str(lv),
                "imrt_n": int(counts[0, i]),
                "imrt_pct": _pct(counts[0, i], totals[0]),
                "crt_n": int(counts[1, i]),
                "crt_pct": _pct(counts[1, i], totals[1]),
                "imrt_mean": np.nan,
                "imrt_sd": np.nan,
                "crt_mean": np.nan,
                "crt_sd": np.nan,
                "imrt_total": int(totals[0]),
                "crt_total": int(totals[1]),
                "imrt_summary": f"{counts[0, i]} ({_pct(counts[0, i], totals[0]):.1f}%)",
                "crt_summary": f"{counts[1, i]} ({_pct(counts[1, i], totals[1]):.1f}%)",
                "test": "Pearson chi-square (no correction)" if j == 0 else "",
                "statistic": res["statistic"] if j == 0 else np.nan,
                "p_value": res["p_value"] if j == 0 else np.nan,
                "fisher_p": res["fisher_p"] if j == 0 else np.nan,
                "small_expected": res["small_expected"] if j == 0 else "",
            }
        )
    return out


# --------------------------------------------------------------------------- HU per patient


def patient_hu(longitudinal: pd.DataFrame, *, irradiated: bool) -> pd.DataFrame:
    """One HU row per patient: the index vertebra (irradiated or unirradiated target).

    When a patient has several target levels of the requested kind, the first in spinal
    order (C1 ... S5) is used (for irradiated levels, preferring one with a lesion type
    other than ``none``) and a warning is logged.

    Returns
    -------
    pandas.DataFrame
        The longitudinal columns of the chosen level per patient.
    """
    irr = longitudinal["irradiated"].astype("boolean").fillna(not irradiated).astype(bool)
    lg = longitudinal.loc[(longitudinal["kind"] == "target") & (irr == irradiated)].copy()
    if lg.empty:
        return lg
    lg["_lv"] = lg["level"].map({lv: i for i, lv in enumerate(LEVELS)})
    lg["_none"] = (lg["lesion_type"] == "none") if irradiated else False
    lg = lg.sort_values(["patient_id", "_none", "_lv"])
    multi = lg["patient_id"].duplicated(keep=False)
    if multi.any():
        logger.warning(
            "patients with several %s target levels (first used): %s",
            "irradiated" if irradiated else "unirradiated",
            ", ".join(sorted(set(lg.loc[multi, "patient_id"]))),
        )
    return lg.drop_duplicates("patient_id", keep="first").drop(columns=["_lv", "_none"])


def _join_arm(hu: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
    arms = clinical[["patient_id", "arm"]]
    out = hu.merge(arms, on="patient_id", how="left")
    missing = sorted(out.loc[out["arm"].isna(), "patient_id"].astype(str))
    if missing:
        raise SchemaError(
            f"measurement CSV has patients not in the clinical CSV: {', '.join(missing)}. "
            "Every measured patient needs a clinical row (arm)."
        )
    return out


HU_ROWS = (
    ("", "HU baseline", "hu_T0", None),
    ("", "HU T2", "hu_T2", None),
    ("", "HU T3", "hu_T3", None),
    ("3 months", "HU T0-T2", "delta_hu_T2", "T2"),
    ("3 months", "HU T0-T2 (%)", "pct_delta_T2", "T2"),
    ("6 months", "HU T0-T3", "delta_hu_T3", "T3"),
    ("6 months", "HU T0-T3 (%)", "pct_delta_T3", "T3"),
)
"""(section, label, column, follow-up) of the rows of Tables 2 and 3."""

HU_TABLE_COLUMNS = (
    "subgroup",
    "section",
    "quantity",
    "imrt_n",
    "imrt_median",
    "imrt_sd",
    "imrt_p_within",
    "imrt_stat_within",
    "imrt_pseudomedian",
    "imrt_pseudomedian_low",
    "imrt_pseudomedian_high",
    "crt_n",
    "crt_median",
    "crt_sd",
    "crt_p_within",
    "crt_stat_within",
    "crt_pseudomedian",
    "crt_pseudomedian_low",
    "crt_pseudomedian_high",
    "hl",
    "hl_of",
    "ci_low",
    "ci_high",
    "w",
    "p_between",
    "within_test",
    "between_test",
)


def hu_table(
    hu: pd.DataFrame,
    *,
    subgroup: str = "All metastases",
    conventions: Conventions | None = None,
) -> pd.DataFrame:
    """Table 2 layout: HU per arm at T0/T2/T3 and change vs baseline, with tests.

    Parameters
    ----------
    hu : pandas.DataFrame
        One row per patient with ``arm`` and the longitudinal columns (``hu_T0``, ``hu_T2``,
        ``hu_T3``, ``delta_hu_T2``, ``pct_delta_T2``, ``delta_hu_T3``, ``pct_delta_T3``).
    subgroup : str
        Label written in the ``subgroup`` column.
    conventions : Conventions, optional
        Within-arm test and between-arm convention (default :class:`Conventions`()).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`HU_TABLE_COLUMNS`: per arm n, median, SD (HU or %); for the change
        rows the within-arm signed-rank p and statistic (R's V, or SAS's S) and R's
        pseudo-median (Hodges-Lehmann) with its 95 % CI; between arms the Hodges-Lehmann
        shift (``hl``, direction in ``hl_of``), its 95 % CI, the rank-sum statistic ``w``
        (R's W of IMRT, or SAS's rank sum S of the reference arm) and p; the test names.
    """
    conv = conventions or Conventions()
    rows = []
    for section, label, col, _fu in HU_ROWS:
        rec: dict[str, object] = {"subgroup": subgroup, "section": section, "quantity": label}
        v = _arm_values(hu, col) if len(hu) else {a: np.array([]) for a in ARMS}
        for arm in ARMS:
            x = v[arm]
            p = PREFIX[arm]
            rec[f"{p}_n"] = int(x.size)
            rec[f"{p}_median"] = float(np.median(x)) if x.size else np.nan
            rec[f"{p}_sd"] = _sd(x)
            change = col.startswith(("delta", "pct"))
            w = _within(x, conv.within_test) if change else _within(np.array([]), "")
            rec[f"{p}_p_within"] = w["p"]
            rec[f"{p}_stat_within"] = w["statistic"]
            rec[f"{p}_pseudomedian"] = w["estimate"]
            rec[f"{p}_pseudomedian_low"] = w["ci_low"]
            rec[f"{p}_pseudomedian_high"] = w["ci_high"]
        a, b = v["IMRT"], v["3DCRT"]
        r = _rank_sum_sas(a, b, conv.between)
        if r is not None:
            rec.update(
                hl=r.estimate,
                hl_of=_hl_of(r),
                ci_low=r.ci_low,
                ci_high=r.ci_high,
                w=r.statistic,
                p_between=r.p_value,
            )
        else:
            rec.update(
                hl=np.nan, hl_of="", ci_low=np.nan, ci_high=np.nan, w=np.nan, p_between=np.nan
            )
        rec["within_test"] = conv.within_test if col.startswith(("delta", "pct")) else ""
        rec["between_test"] = conv.between
        rows.append(rec)
    return pd.DataFrame(rows, columns=list(HU_TABLE_COLUMNS))


def hu_by_lesion_table(hu: pd.DataFrame, conventions: Conventions | None = None) -> pd.DataFrame:
    """Table 3: :func:`hu_table` for each lesion type (mixed, osteolytic, osteoblastic)."""
    parts = [
        hu_table(hu.loc[hu["lesion_type"] == lt], subgroup=lt.capitalize(), conventions=conventions)
        for lt in LESION_SUBGROUPS
    ]
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- CONSORT


def consort_counts(clinical: pd.DataFrame, hu_irr: pd.DataFrame | None = None) -> pd.DataFrame:
    """Flow counts per arm and timepoint (the CONSORT diagram's numbers).

    Returns
    -------
    pandas.DataFrame
        Columns ``arm, timepoint, randomised, deaths_cumulative, deaths_since_previous,
        alive, pct_deaths_since_previous`` (percent of those alive at the previous
        timepoint), ``hu_measured`` (irradiated index vertebra measured), ``vas_assessed``.
    """
    _check_arms(clinical)
    rows = []
    for arm in ARMS:
        c = clinical.loc[clinical["arm"] == arm]
        prev_alive = len(c)
        for tp in ("T0", "T1", "T2", "T3"):
            alive = alive_at(c, tp)
            n_alive = int(alive.sum())
            measured = np.nan
            if hu_irr is not None and len(hu_irr):
                h = hu_irr.loc[hu_irr["arm"] == arm]
                measured = int(h[f"hu_{tp}"].notna().sum())
            died = prev_alive - n_alive
            rows.append(
                {
                    "arm": arm,
                    "timepoint": tp,
                    "label": TIMEPOINT_LABEL[tp],
                    "randomised": len(c),
                    "deaths_cumulative": len(c) - n_alive,
                    "deaths_since_previous": died,
                    "pct_deaths_since_previous": _pct(died, prev_alive),
                    "alive": n_alive,
                    "hu_measured": measured,
                    "vas_assessed": int(c.loc[alive, f"vas_{tp}"].notna().sum()),
                }
            )
            prev_alive = n_alive
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Table 4


def table4_fractures(clinical: pd.DataFrame) -> pd.DataFrame:
    """Table 4: pathologic fractures (incl. VCF from heights) per arm at T0, T2, T3.

    A patient counts at Tk when alive at Tk and the fracture status is known; "yes" when
    ``fracture_Tk`` is true or (T2/T3) a vertebral compression fracture (> 20 % loss of the
    anterior, middle or posterior height vs baseline) is found.

    Returns
    -------
    pandas.DataFrame
        Columns ``timepoint, label, imrt_n, imrt_no, imrt_yes, imrt_pct_yes, imrt_vcf,
        crt_n, crt_no, crt_yes, crt_pct_yes, crt_vcf, statistic, p_value`` (Pearson
        chi-square on the 2 x 2 table, no correction), ``fisher_p`` (Fisher's exact p) and
        ``small_expected`` (Cochran's rule warning, "" when the chi-square is trusted);
        ``imrt_patients``, ``crt_patients``: the patients counted "yes" (';'-separated).
    """
    _check_arms(clinical)
    rows = []
    for tp in ("T0", "T2", "T3"):
        rec: dict[str, object] = {"timepoint": tp, "label": TIMEPOINT_LABEL[tp]}
        status = fracture_status(clinical, tp)
        vcf = (
            vertebral_compression_fracture(clinical, tp)
            if tp != "T0"
            else pd.Series(pd.NA, index=clinical.index, dtype="boolean")
        )
        alive = alive_at(clinical, tp)
        table = []
        for arm in ARMS:
            sel = (clinical["arm"] == arm) & alive & status.notna()
            yes_mask = sel & status.fillna(False).astype(bool)
            yes = int(yes_mask.sum())
            n = int(sel.sum())
            p = PREFIX[arm]
            rec.update(
                {
                    f"{p}_n": n,
                    f"{p}_no": n - yes,
                    f"{p}_yes": yes,
                    f"{p}_pct_yes": _pct(yes, n),
                    f"{p}_vcf": int(vcf[sel].fillna(False).astype(bool).sum()),
                    f"{p}_patients": ";".join(clinical.loc[yes_mask, "patient_id"].astype(str)),
                }
            )
            table.append([n - yes, yes])
        rec.update(count_test(table))
        rows.append(rec)
    return pd.DataFrame(rows)


FRACTURE_PATIENT_COLUMNS = (
    "patient_id",
    "arm",
    "timepoint",
    "fracture_reported",
    "vcf",
    "loss_ant_pct",
    "loss_mid_pct",
    "loss_post_pct",
    "max_loss_pct",
    "alive",
)


def fracture_patients(clinical: pd.DataFrame) -> pd.DataFrame:
    """Every patient with a pathologic fracture or a vertebral compression fracture.

    One row per patient and timepoint (T0, T2, T3) where ``fracture_Tk`` is true or (T2,
    T3) a VCF is found (any of the anterior, middle, posterior heights of the treated
    level more than 20 % below baseline), with the height loss per site and its maximum
    (%, positive = lower than baseline).  ``alive`` says whether the patient was alive at
    the nominal date (only those count in Table 4).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FRACTURE_PATIENT_COLUMNS`.
    """
    rows = []
    for tp in ("T0", "T2", "T3"):
        flag = clinical[f"fracture_{tp}"].astype("boolean").fillna(False).astype(bool)
        if tp == "T0":
            loss = pd.DataFrame(np.nan, index=clinical.index,
                                columns=[f"loss_{x}_pct" for x in HEIGHT_SITES] + ["max_loss_pct"])  # fmt: skip
            vcf = pd.Series(False, index=clinical.index)
        else:
            loss = height_loss(clinical, tp)
            vcf = vertebral_compression_fracture(clinical, tp).fillna(False).astype(bool)
        alive = alive_at(clinical, tp)
        for i in clinical.index[flag | vcf]:
            rows.append(
                {
                    "patient_id": clinical.at[i, "patient_id"],
                    "arm": clinical.at[i, "arm"],
                    "timepoint": tp,
                    "fracture_reported": bool(flag[i]),
                    "vcf": bool(vcf[i]),
                    **{c: float(loss.at[i, c]) for c in loss.columns},
                    "alive": bool(alive[i]),
                }
            )
    out = pd.DataFrame(rows, columns=list(FRACTURE_PATIENT_COLUMNS))
    return out.sort_values(["timepoint", "arm", "patient_id"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- pain


def pain_response(clinical: pd.DataFrame, *, tolerance_pct: float = 0.0) -> pd.DataFrame:
    """Chow category per patient at T2 and T3 (None when not evaluable or dead).

    Returns
    -------
    pandas.DataFrame
        Columns ``patient_id, arm, chow_T2, chow_T3``.
    """
    out = clinical[["patient_id", "arm"]].copy()
    for tp in ("T2", "T3"):
        cats = chow_categories(
            clinical["vas_T0"],
            clinical[f"vas_{tp}"],
            clinical["omed_T0"],
            clinical[f"omed_{tp}"],
            tolerance_pct=tolerance_pct,
        )
        alive = alive_at(clinical, tp).to_numpy()
        out[f"chow_{tp}"] = [c if a else None for c, a in zip(cats, alive, strict=True)]
    return out


def table5_pain_response(response: pd.DataFrame) -> pd.DataFrame:
    """Table 5: Chow categories per arm at 3 and 6 months with chi-square tests.

    Parameters
    ----------
    response : pandas.DataFrame
        Output of :func:`pain_response`.

    Returns
    -------
    pandas.DataFrame
        Columns ``timepoint, label, category, imrt_n, imrt_pct, imrt_total, crt_n, crt_pct,
        crt_total, statistic, p_value, fisher_p, small_expected``; categories CR, PR, PP,
        IP, Responders, Non-responders.  The tests of the 2 x 4 table are on the CR row,
        those of responders vs non-responders on the Responders row.
    """
    rows = []
    for tp in ("T2", "T3"):
        col = f"chow_{tp}"
        counts = {
            arm: [
                int((response.loc[response["arm"] == arm, col] == k).sum()) for k in CHOW_CATEGORIES
            ]
            for arm in ARMS
        }
        full = count_test([counts[a] for a in ARMS])
        resp = {a: [counts[a][0] + counts[a][1], counts[a][2] + counts[a][3]] for a in ARMS}
        rr = count_test([resp[a] for a in ARMS])
        totals = {a: sum(counts[a]) for a in ARMS}
        cats = list(CHOW_CATEGORIES) + ["Responders", "Non-responders"]
        for i, k in enumerate(cats):
            rec: dict[str, object] = {"timepoint": tp, "label": TIMEPOINT_LABEL[tp], "category": k}
            for arm in ARMS:
                n = counts[arm][i] if i < 4 else resp[arm][i - 4]
                p = PREFIX[arm]
                rec[f"{p}_n"] = n
                rec[f"{p}_pct"] = _pct(n, totals[arm])
                rec[f"{p}_total"] = totals[arm]
            res = full if k == "CR" else (rr if k == "Responders" else None)
            rec["statistic"] = res["statistic"] if res else np.nan
            rec["p_value"] = res["p_value"] if res else np.nan
            rec["fisher_p"] = res["fisher_p"] if res else np.nan
            rec["small_expected"] = res["small_expected"] if res else ""
            rows.append(rec)
    return pd.DataFrame(rows)


def pain_over_time(clinical: pd.DataFrame, *, between: str = "sas") -> pd.DataFrame:
    """VAS and OMED per arm and timepoint (the paper's Fig. 3) with rank-sum tests.

    Only patients alive at the timepoint with a value are counted.

    Parameters
    ----------
    clinical : pandas.DataFrame
    between : {"sas", "r"}
        Rank-sum convention (:data:`BETWEEN_METHODS`).

    Returns
    -------
    pandas.DataFrame
        Columns ``measure, timepoint, label`` and per arm ``n, mean, sd, median, q1, q3``
        (prefixes ``imrt_``, ``crt_``), then the Hodges-Lehmann shift ``hl`` (VAS points or
        mg/day; direction in ``hl_of``) with its 95 % CI ``ci_low``, ``ci_high``, the
        rank-sum statistic ``w``, ``p_value`` and ``between_test``.
    """
    rows = []
    for measure in ("vas", "omed"):
        for tp in TIMEPOINTS:
            alive = alive_at(clinical, tp)
            v = _arm_values(clinical.loc[alive], f"{measure}_{tp}")
            rec: dict[str, object] = {
                "measure": measure.upper(),
                "timepoint": tp,
                "label": TIMEPOINT_LABEL[tp],
            }
            for arm in ARMS:
                x = v[arm]
                p = PREFIX[arm]
                rec[f"{p}_n"] = x.size
                rec[f"{p}_mean"] = float(np.mean(x)) if x.size else np.nan
                rec[f"{p}_sd"] = _sd(x)
                rec[f"{p}_median"] = float(np.median(x)) if x.size else np.nan
                rec[f"{p}_q1"] = float(np.percentile(x, 25)) if x.size else np.nan
                rec[f"{p}_q3"] = float(np.percentile(x, 75)) if x.size else np.nan
            a, b = v["IMRT"], v["3DCRT"]
            rs = _rank_sum_sas(a, b, between)
            rec["hl"] = rs.estimate if rs else np.nan
            rec["hl_of"] = _hl_of(rs) if rs else ""
            rec["ci_low"] = rs.ci_low if rs else np.nan
            rec["ci_high"] = rs.ci_high if rs else np.nan
            rec["w"] = rs.statistic if rs else np.nan
            rec["p_value"] = rs.p_value if rs else np.nan
            rec["between_test"] = between
            rows.append(rec)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- survival


@dataclass(frozen=True, eq=False)
class SurvivalResult:
    """Overall survival per arm: Kaplan-Meier curves and log-rank test.

    Attributes
    ----------
    table : pandas.DataFrame
        Per arm: ``arm, n, deaths, median_months, median_lower, median_upper``, the
        log-rank ``observed`` and ``expected`` deaths, then the log-rank ``statistic`` and
        ``p_value`` (same on both rows) and ``origin``.
    curves : dict
        Arm -> :class:`hu_roi.analysis.stats.KaplanMeierResult` (time in months).
    logrank : hu_roi.analysis.stats.LogrankResult or None
    landmarks : pandas.DataFrame
        Kaplan-Meier survival at :data:`SURVIVAL_LANDMARKS` months per arm: ``arm, months,
        survival, ci_low, ci_high, n_risk, n_events`` (R ``summary(fit, times=)``;
        survival NaN after the last follow-up time).
    origin : str
        OS origin (:data:`hu_roi.analysis.clinical.OS_ORIGINS`).
    """

    table: pd.DataFrame
    curves: dict[str, stats.KaplanMeierResult]
    logrank: stats.LogrankResult | None
    landmarks: pd.DataFrame = field(default_factory=pd.DataFrame)
    origin: str = "diagnosis"


def overall_survival(clinical: pd.DataFrame, *, origin: str = "diagnosis") -> SurvivalResult:
    """OS (from ``origin``) to death, censored at last contact; KM per arm and log-rank."""
    s = survival_months(clinical, origin)
    curves = {}
    rows = []
    for arm in ARMS:
        g = s.loc[s["arm"] == arm]
        if len(g) == 0:
            continue
        km = stats.kaplan_meier(g["os_months"].to_numpy(), g["death"].to_numpy().astype(int))
        curves[arm] = km
        rows.append(
            {
                "arm": arm,
                "n": len(g),
                "deaths": int(g["death"].sum()),
                "median_months": km.median,
                "median_lower": km.median_lower,
                "median_upper": km.median_upper,
            }
        )
    lr = None
    if len(curves) == 2:
        lr = stats.logrank(
            s["os_months"].to_numpy(), s["death"].to_numpy().astype(int), s["arm"].to_numpy()
        )
    table = pd.DataFrame(rows)
    if lr is not None:
        oe = {g: (lr.observed[i], lr.expected[i]) for i, g in enumerate(lr.groups)}
        table["observed"] = [oe[a][0] for a in table["arm"]]
        table["expected"] = [oe[a][1] for a in table["arm"]]
    else:
        table["observed"] = np.nan
        table["expected"] = np.nan
    table["statistic"] = lr.statistic if lr else np.nan
    table["p_value"] = lr.p_value if lr else np.nan
    table["origin"] = origin
    marks = []
    for arm, km in curves.items():
        at = stats.survival_at(km, SURVIVAL_LANDMARKS)
        for i, m in enumerate(at.time):
            marks.append(
                {
                    "arm": arm,
                    "months": float(m),
                    "survival": at.survival[i],
                    "ci_low": at.lower[i],
                    "ci_high": at.upper[i],
                    "n_risk": int(at.n_risk[i]),
                    "n_events": int(at.n_event[i]),
                }
            )
    landmarks = pd.DataFrame(
        marks, columns=["arm", "months", "survival", "ci_low", "ci_high", "n_risk", "n_events"]
    )
    return SurvivalResult(
        table=table, curves=curves, logrank=lr, landmarks=landmarks, origin=origin
    )


# --------------------------------------------------------------------------- ANCOVA


def hu_repeated_measures(hu: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
    """The paper's "ANCOVA with repeated measurements" of HU (optional, needs statsmodels).

    Linear mixed model ``hu ~ arm * timepoint + omed`` with a random intercept per patient
    (:func:`hu_roi.analysis.stats.repeated_measures`; SAS PROC MIXED analogue) on the index
    vertebra's HU at T0, T2, T3 with the OMED (mg/day) at the same timepoint as covariate
    ("pain medication as covariate").  Reference levels: arm 3DCRT, timepoint T0.

    Returns
    -------
    pandas.DataFrame
        ``term, estimate, se, z, p_value, ci_low, ci_high``; empty when it cannot be fitted.
    """
    cols = ["patient_id", "arm"]
    rows = []
    omed = clinical.set_index("patient_id")
    for _, r in hu[cols + ["hu_T0", "hu_T2", "hu_T3"]].iterrows():
        for tp in ("T0", "T2", "T3"):
            o = omed.at[r["patient_id"], f"omed_{tp}"] if r["patient_id"] in omed.index else np.nan
            if pd.notna(r[f"hu_{tp}"]) and pd.notna(o):
                rows.append(
                    {"patient_id": r["patient_id"], "arm": r["arm"], "timepoint": tp,
                     "hu": float(r[f"hu_{tp}"]), "omed": float(o)}
                )  # fmt: skip
    empty = pd.DataFrame(columns=["term", "estimate", "se", "z", "p_value", "ci_low", "ci_high"])
    df = pd.DataFrame(rows)
    if df.empty or df["arm"].nunique() < 2:
        return empty
    try:
        return stats.repeated_measures(
            df,
            value="hu",
            time="timepoint",
            group="arm",
            subject="patient_id",
            covariates=("omed",),
        )
    except (stats.StatsInputError, ValueError, np.linalg.LinAlgError) as exc:
        logger.warning("repeated-measures model not fitted: %s", exc)
        return empty


# --------------------------------------------------------------------------- everything


# --------------------------------------------------------------------------- heights

HEIGHT_KINDS = {"height-anterior": "ant", "height-middle": "mid", "height-posterior": "post"}
"""Measurement CSV ``kind`` of a vertebral body height row (``length_mm``) -> site."""
HEIGHT_TOLERANCE_MM = 0.5
"""Clinical and measured heights further apart than this are named in a note."""


def heights_from_measurements(
    measurements: pd.DataFrame, index_levels: Mapping[str, str]
) -> tuple[pd.DataFrame, list[str]]:
    """Vertebral body heights (mm) of each patient's index vertebra from measurement rows.

    Rows of kind ``height-anterior``, ``height-middle``, ``height-posterior`` with a
    ``length_mm`` value (``hu-roi measure``), not ``qc_status=fail``, at the patient's
    irradiated index level (the level of Table 2) and timepoint T0, T2 or T3.  Several
    readers' values of the same height are averaged.

    Parameters
    ----------
    measurements : pandas.DataFrame
        Validated measurement table (extra column ``length_mm``).
    index_levels : mapping
        patient_id -> level of the irradiated index vertebra.

    Returns
    -------
    (heights, notes) : tuple
        ``heights``: columns ``patient_id`` and ``height_<site>_<Tk>_mm`` (as the clinical
        CSV); ``notes``: remarks (rows at other levels, values that are not numbers).
    """
    notes: list[str] = []
    m = measurements.loc[measurements["kind"].isin(list(HEIGHT_KINDS))]
    cols = [f"height_{site}_{tp}_mm" for tp in ("T0", "T2", "T3") for site in HEIGHT_SITES]
    empty = pd.DataFrame(columns=["patient_id", *cols])
    if m.empty:
        return empty, notes
    if "length_mm" not in m.columns:
        notes.append(
            f"{len(m)} height row(s) in the measurement CSV have no length_mm column; not used"
        )
        return empty, notes
    m = m.loc[m["qc_status"].astype(str) != "fail"].copy()
    m["_mm"] = pd.to_numeric(m["length_mm"], errors="coerce")
    bad = m.loc[m["_mm"].isna() | (m["_mm"] <= 0), "roi_id"].astype(str).tolist()
    if bad:
        notes.append(
            "height row(s) without a positive length_mm, not used: roi_id " + ", ".join(bad)
        )
    m = m.loc[m["_mm"] > 0]
    at_index = m["level"].astype(object) == m["patient_id"].map(dict(index_levels))
    other = m.loc[~at_index]
    if len(other):
        notes.append(
            "height row(s) not at the patient's irradiated index vertebra, not used: "
            + ", ".join(sorted({f"{r.patient_id} {r.level}" for r in other.itertuples()}))
        )
    m = m.loc[at_index & m["timepoint"].isin(["T0", "T2", "T3"])]
    if m.empty:
        return empty, notes
    m["_col"] = "height_" + m["kind"].map(HEIGHT_KINDS) + "_" + m["timepoint"].astype(str) + "_mm"
    wide = m.pivot_table(index="patient_id", columns="_col", values="_mm", aggfunc="mean")
    wide = wide.reindex(columns=cols)
    wide.columns.name = None
    return wide.reset_index(), notes


def merge_heights(
    clinical: pd.DataFrame, measured: pd.DataFrame, *, tolerance_mm: float = HEIGHT_TOLERANCE_MM
) -> tuple[pd.DataFrame, list[str]]:
    """Fill the clinical CSV's empty height cells with measured heights.

    A clinical value is kept when both exist; when they differ by more than
    ``tolerance_mm`` the patient, height and both values are named in a note.

    Returns
    -------
    (clinical, notes) : tuple
        A copy of ``clinical`` with filled cells, and the notes.
    """
    out = clinical.copy()
    notes: list[str] = []
    if measured.empty:
        return out, notes
    meas = measured.set_index("patient_id")
    filled = 0
    differ = []
    for i, pid in out["patient_id"].items():
        if pid not in meas.index:
            continue
        for col in meas.columns:
            mv = meas.at[pid, col]
            if pd.isna(mv):
                continue
            cv = out.at[i, col]
            if pd.isna(cv):
                out.at[i, col] = float(mv)
                filled += 1
            elif abs(float(cv) - float(mv)) > tolerance_mm:
                differ.append(f"{pid} {col} clinical {float(cv):g} vs measured {float(mv):.1f}")
    if filled:
        notes.append(f"{filled} vertebral height(s) taken from the measurement CSV (length_mm)")
    if differ:
        notes.append(
            f"clinical and measured heights differ by more than {tolerance_mm:g} mm (clinical "
            "used): " + "; ".join(differ)
        )
    return out, notes


def check_measurement_arms(measurements: pd.DataFrame, clinical: pd.DataFrame) -> None:
    """When the measurement CSV has an ``arm`` column, every filled cell must match the
    patient's arm in the clinical CSV (aliases as there, e.g. ``3D-CRT``).

    Raises
    ------
    SchemaError
        Naming the roi_id, the patient and both arms of every mismatch.
    """
    if "arm" not in measurements.columns:
        return
    from hu_roi.analysis.clinical import CLINICAL_SCHEMA

    aliases = CLINICAL_SCHEMA.column("arm").aliases
    canon = {a.lower(): a for a in ARMS} | dict(aliases)
    clin = dict(zip(clinical["patient_id"], clinical["arm"], strict=False))
    bad = []
    for r in measurements[["roi_id", "patient_id", "arm"]].itertuples(index=False):
        if r.arm is None or pd.isna(r.arm) or str(r.arm).strip() == "":
            continue
        arm = canon.get(str(r.arm).strip().lower())
        if arm is None or (r.patient_id in clin and clin[r.patient_id] != arm):
            bad.append(
                f"roi_id {r.roi_id} (patient {r.patient_id}): arm {str(r.arm)!r}, clinical "
                f"CSV {clin.get(r.patient_id, 'no row')!r}"
            )
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise SchemaError(
            f"measurement CSV: {len(bad)} row(s) whose arm does not match the clinical CSV: "
            + shown
        )


def _drop_hu_after_death(
    longitudinal: pd.DataFrame, clinical: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """HU (and changes) at a timepoint whose nominal date is after the patient's death,
    set to NaN; returns the table and timepoint -> patients affected."""
    lg = longitudinal.copy()
    dropped: dict[str, list[str]] = {}
    for tp in ("T1", "T2", "T3"):
        dead = set(clinical.loc[~alive_at(clinical, tp), "patient_id"])
        sel = lg["patient_id"].isin(dead) & lg[f"hu_{tp}"].notna()
        if not sel.any():
            continue
        dropped[tp] = sorted(set(lg.loc[sel, "patient_id"].astype(str)))
        for col in (f"hu_{tp}", f"delta_hu_{tp}", f"pct_delta_{tp}"):
            if col in lg.columns:
                lg.loc[sel, col] = np.nan
    return lg, dropped


# --------------------------------------------------------------------------- tidy file

ENDPOINT_COLUMNS = (
    "endpoint", "group", "timepoint", "statistic", "value", "ci_low", "ci_high", "n", "method",
)  # fmt: skip
"""Columns of the tidy ``endpoints.csv`` (one number per row)."""

_HU_TP = {"HU baseline": "T0", "HU T2": "T2", "HU T3": "T3"}


def tidy_endpoints(
    tables: Mapping[str, pd.DataFrame], conventions: Conventions | None = None
) -> pd.DataFrame:
    """Every number of the endpoint tables as one long table (``endpoints.csv``).

    Parameters
    ----------
    tables : mapping
        The tables of :class:`TrialEndpoints` (``survival_landmarks`` included).
    conventions : Conventions, optional

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ENDPOINT_COLUMNS`: ``endpoint`` (table and row), ``group`` (arm, or
        ``IMRT vs 3DCRT`` for comparisons), ``timepoint`` (T0-T3, or months for survival
        landmarks), ``statistic``, ``value`` and its ``ci_low``/``ci_high`` (95 %; NaN when
        none), ``n`` (patients the number is based on), ``method``.
    """
    conv = conventions or Conventions()
    rows: list[dict[str, object]] = []
    both = "IMRT vs 3DCRT"

    def add(endpoint: str, group: str, tp: str, stat: str, value: object, *,
            lo: object = np.nan, hi: object = np.nan, n: object = np.nan,
            method: str = "") -> None:  # fmt: skip
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return
        rows.append({"endpoint": endpoint, "group": group, "timepoint": tp, "statistic": stat,
                     "value": value, "ci_low": lo, "ci_high": hi, "n": n, "method": method})  # fmt: skip

    def tests(endpoint: str, tp: str, r: Mapping[str, object], n: object) -> None:
        add(endpoint, both, tp, "chi-square", r["statistic"], n=n,
            method="Pearson chi-square (no correction)")  # fmt: skip
        add(endpoint, both, tp, "p", r["p_value"], n=n,
            method="Pearson chi-square (no correction)")  # fmt: skip
        add(endpoint, both, tp, "p", r.get("fisher_p", np.nan), n=n, method="Fisher exact")

    t1 = tables.get("table1_baseline")
    if t1 is not None:
        for r in t1.to_dict("records"):
            name = f"Table 1: {r['variable']}"
            if r["level"] == "mean (SD)":
                for arm in ARMS:
                    p = PREFIX[arm]
                    add(name, arm, "T0", "mean", r[f"{p}_mean"], n=r[f"{p}_n"])
                    add(name, arm, "T0", "SD", r[f"{p}_sd"], n=r[f"{p}_n"])
                n = r["imrt_n"] + r["crt_n"]
                add(name, both, "T0", "test statistic", r["statistic"], n=n, method=r["test"])
                add(name, both, "T0", "p", r["p_value"], n=n, method=r["test"])
                continue
            name += f" = {r['level']}"
            for arm in ARMS:
                p = PREFIX[arm]
                add(name, arm, "T0", "count", r[f"{p}_n"], n=r[f"{p}_total"])
                add(name, arm, "T0", "percent", r[f"{p}_pct"], n=r[f"{p}_total"])
            tests(name, "T0", r, r["imrt_total"] + r["crt_total"])

    cons = tables.get("consort")
    if cons is not None:
        for r in cons.to_dict("records"):
            for stat in ("randomised", "deaths_since_previous", "alive", "hu_measured",
                         "vas_assessed"):  # fmt: skip
                add("CONSORT", r["arm"], r["timepoint"], stat.replace("_", " "), r[stat])
            add("CONSORT", r["arm"], r["timepoint"], "percent deaths since previous",
                r["pct_deaths_since_previous"])  # fmt: skip

    for key, title in (("table2_hu_irradiated", "Table 2"), ("table3_hu_by_lesion", "Table 3"),
                       ("hu_unirradiated", "Unirradiated vertebrae")):  # fmt: skip
        t = tables.get(key)
        if t is None:
            continue
        for r in t.to_dict("records"):
            name = f"{title}: {r['subgroup']}: {r['quantity']}"
            tp = _HU_TP.get(r["quantity"], "T2" if "T2" in r["quantity"] else "T3")
            for arm in ARMS:
                p = PREFIX[arm]
                n = r[f"{p}_n"]
                add(name, arm, tp, "median", r[f"{p}_median"], n=n)
                add(name, arm, tp, "SD", r[f"{p}_sd"], n=n)
                wm = f"Wilcoxon signed-rank ({conv.within_test})"
                add(name, arm, tp, "signed-rank statistic", r[f"{p}_stat_within"], n=n, method=wm)
                add(name, arm, tp, "p within arm", r[f"{p}_p_within"], n=n, method=wm)
                add(name, arm, tp, "pseudo-median", r[f"{p}_pseudomedian"],
                    lo=r[f"{p}_pseudomedian_low"], hi=r[f"{p}_pseudomedian_high"], n=n,
                    method="Hodges-Lehmann, R wilcox.test(x, conf.int=TRUE)")  # fmt: skip
            n = r["imrt_n"] + r["crt_n"]
            bm = f"Wilcoxon rank-sum ({conv.between})"
            add(name, both, tp, f"HL shift {r['hl_of']}", r["hl"], lo=r["ci_low"],
                hi=r["ci_high"], n=n, method=bm)  # fmt: skip
            add(name, both, tp, "W" if conv.between == "r" else "S", r["w"], n=n, method=bm)
            add(name, both, tp, "p", r["p_between"], n=n, method=bm)

    t4 = tables.get("table4_fractures")
    if t4 is not None:
        for r in t4.to_dict("records"):
            name = "Table 4: pathologic fracture"
            for arm in ARMS:
                p = PREFIX[arm]
                add(name, arm, r["timepoint"], "yes", r[f"{p}_yes"], n=r[f"{p}_n"])
                add(name, arm, r["timepoint"], "percent yes", r[f"{p}_pct_yes"], n=r[f"{p}_n"])
                add(name, arm, r["timepoint"], "VCF", r[f"{p}_vcf"], n=r[f"{p}_n"])
            tests(name, r["timepoint"], r, r["imrt_n"] + r["crt_n"])

    fp = tables.get("fracture_patients")
    if fp is not None:
        for r in fp.to_dict("records"):
            name = f"Fracture: patient {r['patient_id']}"
            add(name, r["arm"], r["timepoint"], "VCF", int(r["vcf"]))
            add(name, r["arm"], r["timepoint"], "max height loss %", r["max_loss_pct"],
                method=f"VCF = loss > {100 * VCF_HEIGHT_LOSS:g} % at any site")  # fmt: skip

    t5 = tables.get("table5_pain_response")
    if t5 is not None:
        for r in t5.to_dict("records"):
            name = f"Table 5: {r['category']}"
            for arm in ARMS:
                p = PREFIX[arm]
                add(name, arm, r["timepoint"], "count", r[f"{p}_n"], n=r[f"{p}_total"])
                add(name, arm, r["timepoint"], "percent", r[f"{p}_pct"], n=r[f"{p}_total"])
            tests(name, r["timepoint"], r, r["imrt_total"] + r["crt_total"])

    pot = tables.get("pain_over_time")
    if pot is not None:
        for r in pot.to_dict("records"):
            name = r["measure"]
            for arm in ARMS:
                p = PREFIX[arm]
                for stat in ("mean", "sd", "median", "q1", "q3"):
                    add(name, arm, r["timepoint"], stat.upper() if stat == "sd" else stat,
                        r[f"{p}_{stat}"], n=r[f"{p}_n"])  # fmt: skip
            n = r["imrt_n"] + r["crt_n"]
            bm = f"Wilcoxon rank-sum ({conv.between})"
            add(name, both, r["timepoint"], f"HL shift {r['hl_of']}", r["hl"], lo=r["ci_low"],
                hi=r["ci_high"], n=n, method=bm)  # fmt: skip
            add(name, both, r["timepoint"], "W" if conv.between == "r" else "S", r["w"], n=n,
                method=bm)  # fmt: skip
            add(name, both, r["timepoint"], "p", r["p_value"], n=n, method=bm)

    sv = tables.get("survival")
    if sv is not None and len(sv):
        name = f"Overall survival (origin {conv.os_origin})"
        for r in sv.to_dict("records"):
            add(name, r["arm"], "", "deaths", r["deaths"], n=r["n"])
            add(name, r["arm"], "", "median months", r["median_months"], lo=r["median_lower"],
                hi=r["median_upper"], n=r["n"], method="Kaplan-Meier, R survfit (log CI)")  # fmt: skip
            add(name, r["arm"], "", "log-rank observed", r["observed"], n=r["n"])
            add(name, r["arm"], "", "log-rank expected", r["expected"], n=r["n"])
        n = int(sv["n"].sum())
        add(name, both, "", "log-rank chi-square", sv["statistic"].iloc[0], n=n,
            method="log-rank, R survdiff")  # fmt: skip
        add(name, both, "", "p", sv["p_value"].iloc[0], n=n, method="log-rank, R survdiff")
    lm = tables.get("survival_landmarks")
    if lm is not None:
        name = f"Overall survival (origin {conv.os_origin})"
        for r in lm.to_dict("records"):
            tp = f"{r['months']:g} months"
            add(name, r["arm"], tp, "survival", r["survival"], lo=r["ci_low"], hi=r["ci_high"],
                method="Kaplan-Meier, R summary(survfit, times=)")  # fmt: skip
            add(name, r["arm"], tp, "number at risk", r["n_risk"])

    rm = tables.get("hu_repeated_measures")
    if rm is not None:
        for r in rm.to_dict("records"):
            add(f"ANCOVA: {r['term']}", both, "", "estimate", r["estimate"], lo=r["ci_low"],
                hi=r["ci_high"], method="mixed model (statsmodels MixedLM, REML)")  # fmt: skip
            add(f"ANCOVA: {r['term']}", both, "", "p", r["p_value"],
                method="mixed model (statsmodels MixedLM, REML)")  # fmt: skip
    out = pd.DataFrame(rows, columns=list(ENDPOINT_COLUMNS))
    out["n"] = pd.array([None if pd.isna(v) else int(v) for v in out["n"]], dtype="Int64")
    return out


# --------------------------------------------------------------------------- everything


@dataclass(frozen=True, eq=False)
class TrialEndpoints:
    """All endpoint tables of the trial.

    Attributes
    ----------
    tables : dict of str -> pandas.DataFrame
        Keys (also the CSV file stems written by the CLI): ``table1_baseline``,
        ``consort``, ``table2_hu_irradiated``, ``table3_hu_by_lesion``,
        ``hu_unirradiated``, ``table4_fractures``, ``fracture_patients``,
        ``table5_pain_response``, ``pain_over_time``, ``survival``,
        ``survival_landmarks``, ``patient_hu_irradiated``, ``patient_hu_unirradiated``,
        ``patient_pain_response``, ``analysis_settings`` (the conventions),
        ``endpoints`` (every number, tidy: :func:`tidy_endpoints`) and, when asked,
        ``hu_repeated_measures``.
    survival : SurvivalResult
    notes : list of str
        Data remarks found during the analysis (shown in the report).
    conventions : Conventions
        The statistical conventions used.
    methods : list of str
        One sentence per convention, for the report's Methods section.
    """

    tables: dict[str, pd.DataFrame]
    survival: SurvivalResult
    notes: list[str] = field(default_factory=list)
    conventions: Conventions = field(default_factory=Conventions)
    methods: list[str] = field(default_factory=list)


NEW_TABLE_NAMES = ("fracture_patients", "survival_landmarks", "analysis_settings", "endpoints")
"""Tables added by issue 16 (file stems), for callers that list the possible outputs."""


def analyze(
    longitudinal: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    tolerance_pct: float = 0.0,
    repeated_measures: bool = False,
    within_test: str = "r-default",
    between: str = "sas",
    os_origin: str = "diagnosis",
    hu_after_death: bool = False,
    measurements: pd.DataFrame | None = None,
) -> TrialEndpoints:
    """Compute every endpoint table.

    Parameters
    ----------
    longitudinal : pandas.DataFrame
        Validated longitudinal table (:data:`hu_roi.analysis.schemas.LONGITUDINAL_SCHEMA`),
        e.g. from :func:`hu_roi.analysis.schemas.longitudinal_from_measurements`.
    clinical : pandas.DataFrame
        Validated clinical table (:func:`hu_roi.analysis.clinical.validate_clinical`).
    tolerance_pct : float
        OMED tolerance for "stable" analgesics in the Chow categories (default 0 %).
    repeated_measures : bool
        Also fit :func:`hu_repeated_measures` (table ``hu_repeated_measures``; imports
        statsmodels, which takes a few seconds).
    within_test : {"r-default", "r-normal", "sas"}
        Within-arm signed-rank convention (:data:`WITHIN_TESTS`).
    between : {"sas", "r"}
        Between-arm rank-sum and Hodges-Lehmann interval convention.
    os_origin : {"diagnosis", "rt", "columns"}
        Origin of overall survival.
    hu_after_death : bool
        Use HU measured at a timepoint after the patient's death (default: left out).
    measurements : pandas.DataFrame, optional
        The measurement table the longitudinal one came from: its ``arm`` column (if
        any) is checked against the clinical arm, and its height rows
        (:data:`HEIGHT_KINDS`) fill missing clinical heights.

    Returns
    -------
    TrialEndpoints

    Raises
    ------
    SchemaError
        Unknown arm, measured patient without a clinical row, measurement arm that
        disagrees with the clinical CSV, or OS not computable with ``os_origin``.
    ValueError
        An unknown convention name.
    """
    conv = Conventions(
        within_test=within_test, between=between, os_origin=os_origin,
        hu_after_death=hu_after_death,
    )  # fmt: skip
    _check_arms(clinical)
    notes: list[str] = []
    if measurements is not None:
        check_measurement_arms(measurements, clinical)
    if not hu_after_death:
        longitudinal, dropped = _drop_hu_after_death(longitudinal, clinical)
        for tp, pids in dropped.items():
            notes.append(
                f"HU measured at {tp} after the patient's death (nominal {tp} date) left out: "
                + ", ".join(pids)
                + " (include with --include-hu-after-death)"
            )
    irr = patient_hu(longitudinal, irradiated=True)
    unirr = patient_hu(longitudinal, irradiated=False)
    irr = _join_arm(irr, clinical) if len(irr) else irr.assign(arm=pd.Series(dtype=object))
    unirr = _join_arm(unirr, clinical) if len(unirr) else unirr.assign(arm=pd.Series(dtype=object))
    no_hu = sorted(set(clinical["patient_id"]) - set(irr["patient_id"]))
    if no_hu:
        notes.append(
            f"{len(no_hu)} patient(s) without an irradiated target ROI: {', '.join(no_hu)}"
        )
    if hu_after_death:
        for tp in ("T2", "T3"):
            alive = set(clinical.loc[alive_at(clinical, tp), "patient_id"])
            dead_measured = sorted(set(irr.loc[irr[f"hu_{tp}"].notna(), "patient_id"]) - alive)
            if dead_measured:
                notes.append(
                    f"HU measured at {tp} for patient(s) who died before the nominal {tp} "
                    "date, used (--include-hu-after-death): " + ", ".join(dead_measured)
                )
    if measurements is not None:
        index_levels = dict(zip(irr["patient_id"], irr["level"].astype(object), strict=False))
        measured, hnotes = heights_from_measurements(measurements, index_levels)
        notes += hnotes
        clinical, mnotes = merge_heights(clinical, measured)
        notes += mnotes
    response = pain_response(clinical, tolerance_pct=tolerance_pct)
    for tp in ("T2", "T3"):
        alive = alive_at(clinical, tp)
        missing = clinical.loc[alive & response[f"chow_{tp}"].isna(), "patient_id"].tolist()
        if missing:
            notes.append(
                f"alive at {tp} but no pain response category (VAS or OMED missing): "
                + ", ".join(map(str, missing))
            )
    surv = overall_survival(clinical, origin=os_origin)
    lesion = (
        hu_by_lesion_table(irr, conv) if len(irr) else pd.DataFrame(columns=list(HU_TABLE_COLUMNS))
    )
    tables = {
        "table1_baseline": table1_baseline(clinical, between=between),
        "consort": consort_counts(clinical, irr),
        "table2_hu_irradiated": hu_table(irr, conventions=conv),
        "table3_hu_by_lesion": lesion,
        "hu_unirradiated": hu_table(unirr, subgroup="Unirradiated vertebrae", conventions=conv),
        "table4_fractures": table4_fractures(clinical),
        "fracture_patients": fracture_patients(clinical),
        "table5_pain_response": table5_pain_response(response),
        "pain_over_time": pain_over_time(clinical, between=between),
        "survival": surv.table,
        "survival_landmarks": surv.landmarks,
        "patient_hu_irradiated": irr.reset_index(drop=True),
        "patient_hu_unirradiated": unirr.reset_index(drop=True),
        "patient_pain_response": response,
    }
    if repeated_measures:
        tables["hu_repeated_measures"] = hu_repeated_measures(irr, clinical)
    for key, label in (("table1_baseline", "Table 1"), ("table4_fractures", "Table 4"),
                       ("table5_pain_response", "Table 5")):  # fmt: skip
        t = tables[key]
        for r in t.loc[t["small_expected"].astype(str) != ""].to_dict("records"):
            where = r.get("variable") or f"{r['timepoint']} {r.get('category', '')}".strip()
            notes.append(
                f"{label}, {where}: {r['small_expected']} (Fisher's exact p = "
                f"{r['fisher_p']:.3g}, chi-square p = {r['p_value']:.3g})"
            )
    tables["analysis_settings"] = conv.settings()
    tables["endpoints"] = tidy_endpoints(tables, conv)
    for n in notes:
        logger.info("analysis note: %s", n)
    return TrialEndpoints(
        tables=tables, survival=surv, notes=notes, conventions=conv, methods=conv.methods()
    )


def counts_from_mapping(counts: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Arm -> counts per category, as a (2, k) array in :data:`ARMS` order."""
    missing = [a for a in ARMS if a not in counts]
    if missing:
        raise ValueError(f"counts for arm(s) {missing} missing; need keys {ARMS}")
    return np.array([list(counts[a]) for a in ARMS], dtype=float)
