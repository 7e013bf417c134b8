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
    LOCALISATIONS,
    PRIMARY_SITES,
    alive_at,
    fracture_status,
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


def _arm_values(df: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    return {arm: df.loc[df["arm"] == arm, column].astype(float).dropna().to_numpy() for arm in ARMS}


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size > 1 else np.nan


def _pct(k: float, n: float) -> float:
    return 100.0 * k / n if n else np.nan


def _rank_sum_sas(a: np.ndarray, b: np.ndarray) -> stats.RankSumResult | None:
    """SAS-mode rank-sum, or None when it cannot be computed (empty arm, all values tied)."""
    if a.size == 0 or b.size == 0:
        return None
    try:
        return stats.rank_sum(a, b, method="SAS")
    except stats.StatsInputError as exc:
        logger.info("rank-sum not computed: %s", exc)
        return None


def _signed_rank_p(x: np.ndarray) -> float:
    """Signed-rank p of x against 0, NaN when not computable (no non-zero values)."""
    if np.count_nonzero(x) == 0:
        return np.nan
    try:
        return stats.signed_rank(x).p_value
    except stats.StatsInputError as exc:
        logger.info("signed-rank not computed: %s", exc)
        return np.nan


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


def table1_baseline(clinical: pd.DataFrame) -> pd.DataFrame:
    """Table 1: baseline characteristics per arm with the paper's tests.

    Returns
    -------
    pandas.DataFrame
        Columns ``group, variable, level, imrt_n, imrt_pct, crt_n, crt_pct, imrt_summary,
        crt_summary, test, statistic, p_value``.  Continuous rows have ``level`` = "mean (SD)";
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
                rs = _rank_sum_sas(a, b)
                stat, p = (rs.statistic, rs.p_value) if rs else (np.nan, np.nan)
                tname = "Wilcoxon rank-sum (SAS)"
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
                "imrt_summary": f"{np.mean(a):.1f} ({_sd(a):.1f})" if a.size else "",
                "crt_summary": f"{np.mean(b):.1f} ({_sd(b):.1f})" if b.size else "",
                "test": tname,
                "statistic": stat,
                "p_value": p,
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
    res = compare_counts(counts)
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
                "imrt_summary": f"{counts[0, i]} ({_pct(counts[0, i], totals[0]):.1f}%)",
                "crt_summary": f"{counts[1, i]} ({_pct(counts[1, i], totals[1]):.1f}%)",
                "test": "Pearson chi-square (no correction)" if j == 0 else "",
                "statistic": res.statistic if j == 0 else np.nan,
                "p_value": res.p_value if j == 0 else np.nan,
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
    "crt_n",
    "crt_median",
    "crt_sd",
    "crt_p_within",
    "hl",
    "hl_of",
    "ci_low",
    "ci_high",
    "p_between",
)


def hu_table(hu: pd.DataFrame, *, subgroup: str = "All metastases") -> pd.DataFrame:
    """Table 2 layout: HU per arm at T0/T2/T3 and change vs baseline, with tests.

    Parameters
    ----------
    hu : pandas.DataFrame
        One row per patient with ``arm`` and the longitudinal columns (``hu_T0``, ``hu_T2``,
        ``hu_T3``, ``delta_hu_T2``, ``pct_delta_T2``, ``delta_hu_T3``, ``pct_delta_T3``).
    subgroup : str
        Label written in the ``subgroup`` column.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`HU_TABLE_COLUMNS`: per arm n, median, SD (HU or %), the within-arm
        signed-rank p of the change rows; between arms the SAS Hodges-Lehmann shift
        (``hl``, direction in ``hl_of``), its asymptotic 95 % CI and the rank-sum p.
    """
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
            rec[f"{p}_p_within"] = _signed_rank_p(x) if col.startswith(("delta", "pct")) else np.nan
        a, b = v["IMRT"], v["3DCRT"]
        r = _rank_sum_sas(a, b)
        if r is not None:
            rec.update(
                hl=r.estimate,
                hl_of="IMRT - 3DCRT" if r.estimate_of == "x - y" else "3DCRT - IMRT",
                ci_low=r.ci_low,
                ci_high=r.ci_high,
                p_between=r.p_value,
            )
        else:
            rec.update(hl=np.nan, hl_of="", ci_low=np.nan, ci_high=np.nan, p_between=np.nan)
        rows.append(rec)
    return pd.DataFrame(rows, columns=list(HU_TABLE_COLUMNS))


def hu_by_lesion_table(hu: pd.DataFrame) -> pd.DataFrame:
    """Table 3: :func:`hu_table` for each lesion type (mixed, osteolytic, osteoblastic)."""
    parts = [
        hu_table(hu.loc[hu["lesion_type"] == lt], subgroup=lt.capitalize())
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
        chi-square on the 2 x 2 table, no correction).
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
            yes = int(status[sel].astype(bool).sum())
            n = int(sel.sum())
            p = PREFIX[arm]
            rec.update(
                {
                    f"{p}_n": n,
                    f"{p}_no": n - yes,
                    f"{p}_yes": yes,
                    f"{p}_pct_yes": _pct(yes, n),
                    f"{p}_vcf": int(vcf[sel].fillna(False).astype(bool).sum()),
                }
            )
            table.append([n - yes, yes])
        res = compare_counts(table)
        rec.update(statistic=res.statistic, p_value=res.p_value)
        rows.append(rec)
    return pd.DataFrame(rows)


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
        crt_total, statistic, p_value``; categories CR, PR, PP, IP, Responders,
        Non-responders.  The p-value of the 2 x 4 table is on the CR row, that of responders
        vs non-responders on the Responders row.
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
        full = compare_counts([counts[a] for a in ARMS])
        resp = {a: [counts[a][0] + counts[a][1], counts[a][2] + counts[a][3]] for a in ARMS}
        rr = compare_counts([resp[a] for a in ARMS])
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
            rec["statistic"] = res.statistic if res else np.nan
            rec["p_value"] = res.p_value if res else np.nan
            rows.append(rec)
    return pd.DataFrame(rows)


def pain_over_time(clinical: pd.DataFrame) -> pd.DataFrame:
    """VAS and OMED per arm and timepoint (the paper's Fig. 3) with rank-sum p-values.

    Only patients alive at the timepoint with a value are counted.

    Returns
    -------
    pandas.DataFrame
        Columns ``measure, timepoint, label`` and per arm ``n, mean, sd, median, q1, q3``
        (prefixes ``imrt_``, ``crt_``), then ``p_value`` (Wilcoxon rank-sum, SAS
        continuity-corrected normal approximation).
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
            rs = _rank_sum_sas(a, b)
            rec["p_value"] = rs.p_value if rs else np.nan
            rows.append(rec)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- survival


@dataclass(frozen=True, eq=False)
class SurvivalResult:
    """Overall survival per arm: Kaplan-Meier curves and log-rank test.

    Attributes
    ----------
    table : pandas.DataFrame
        Per arm: ``arm, n, deaths, median_months, median_lower, median_upper``, plus the
        log-rank ``statistic`` and ``p_value`` (same on both rows).
    curves : dict
        Arm -> :class:`hu_roi.analysis.stats.KaplanMeierResult` (time in months).
    logrank : hu_roi.analysis.stats.LogrankResult or None
    """

    table: pd.DataFrame
    curves: dict[str, stats.KaplanMeierResult]
    logrank: stats.LogrankResult | None


def overall_survival(clinical: pd.DataFrame) -> SurvivalResult:
    """OS from diagnosis to death, censored at last contact; KM per arm and log-rank."""
    s = survival_months(clinical)
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
    table["statistic"] = lr.statistic if lr else np.nan
    table["p_value"] = lr.p_value if lr else np.nan
    return SurvivalResult(table=table, curves=curves, logrank=lr)


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


@dataclass(frozen=True, eq=False)
class TrialEndpoints:
    """All endpoint tables of the trial.

    Attributes
    ----------
    tables : dict of str -> pandas.DataFrame
        Keys (also the CSV file stems written by the CLI): ``table1_baseline``,
        ``consort``, ``table2_hu_irradiated``, ``table3_hu_by_lesion``,
        ``hu_unirradiated``, ``table4_fractures``, ``table5_pain_response``,
        ``pain_over_time``, ``survival``, ``patient_hu_irradiated``,
        ``patient_hu_unirradiated``, ``patient_pain_response`` and, when asked,
        ``hu_repeated_measures``.
    survival : SurvivalResult
    notes : list of str
        Data remarks found during the analysis (shown in the report).
    """

    tables: dict[str, pd.DataFrame]
    survival: SurvivalResult
    notes: list[str] = field(default_factory=list)


def analyze(
    longitudinal: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    tolerance_pct: float = 0.0,
    repeated_measures: bool = False,
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

    Returns
    -------
    TrialEndpoints
    """
    _check_arms(clinical)
    notes: list[str] = []
    irr = patient_hu(longitudinal, irradiated=True)
    unirr = patient_hu(longitudinal, irradiated=False)
    irr = _join_arm(irr, clinical) if len(irr) else irr.assign(arm=pd.Series(dtype=object))
    unirr = _join_arm(unirr, clinical) if len(unirr) else unirr.assign(arm=pd.Series(dtype=object))
    no_hu = sorted(set(clinical["patient_id"]) - set(irr["patient_id"]))
    if no_hu:
        notes.append(
            f"{len(no_hu)} patient(s) without an irradiated target ROI: {', '.join(no_hu)}"
        )
    for tp in ("T2", "T3"):
        alive = set(clinical.loc[alive_at(clinical, tp), "patient_id"])
        dead_measured = sorted(set(irr.loc[irr[f"hu_{tp}"].notna(), "patient_id"]) - alive)
        if dead_measured:
            notes.append(
                f"HU measured at {tp} for patient(s) who died before the nominal {tp} date: "
                + ", ".join(dead_measured)
            )
    response = pain_response(clinical, tolerance_pct=tolerance_pct)
    for tp in ("T2", "T3"):
        alive = alive_at(clinical, tp)
        missing = clinical.loc[alive & response[f"chow_{tp}"].isna(), "patient_id"].tolist()
        if missing:
            notes.append(
                f"alive at {tp} but no pain response category (VAS or OMED missing): "
                + ", ".join(map(str, missing))
            )
    surv = overall_survival(clinical)
    lesion = hu_by_lesion_table(irr) if len(irr) else pd.DataFrame(columns=list(HU_TABLE_COLUMNS))
    tables = {
        "table1_baseline": table1_baseline(clinical),
        "consort": consort_counts(clinical, irr),
        "table2_hu_irradiated": hu_table(irr),
        "table3_hu_by_lesion": lesion,
        "hu_unirradiated": hu_table(unirr, subgroup="Unirradiated vertebrae"),
        "table4_fractures": table4_fractures(clinical),
        "table5_pain_response": table5_pain_response(response),
        "pain_over_time": pain_over_time(clinical),
        "survival": surv.table,
        "patient_hu_irradiated": irr.reset_index(drop=True),
        "patient_hu_unirradiated": unirr.reset_index(drop=True),
        "patient_pain_response": response,
    }
    if repeated_measures:
        tables["hu_repeated_measures"] = hu_repeated_measures(irr, clinical)
    for n in notes:
        logger.info("analysis note: %s", n)
    return TrialEndpoints(tables=tables, survival=surv, notes=notes)


def counts_from_mapping(counts: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Arm -> counts per category, as a (2, k) array in :data:`ARMS` order."""
    missing = [a for a in ARMS if a not in counts]
    if missing:
        raise ValueError(f"counts for arm(s) {missing} missing; need keys {ARMS}")
    return np.array([list(counts[a]) for a in ARMS], dtype=float)
