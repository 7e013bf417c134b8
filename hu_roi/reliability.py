"""Reader reliability: ``hu-roi reliability A.csv B.csv [C.csv …] --out DIR``.

Two or more measurement CSVs (two readers, or one reader twice) are paired by
``(patient_id, timepoint, level)`` of their target ROIs; every pair (or k-tuple) is one
*subject* of a precision study.  The command writes into ``DIR``:

``reliability.csv``
    columns ``statistic,estimate,ci_low,ci_high,n`` (:data:`STATISTICS`):

    - ``icc2_1`` -- ICC(2,1), two-way random effects, absolute agreement, single rater;
    - ``icc3_1`` -- ICC(3,1), two-way mixed effects, consistency, single rater;
      both after Shrout & Fleiss (Psychol Bull 1979;86:420-428) with the 95 % intervals of
      McGraw & Wong (Psychol Methods 1996;1:30-46), computed exactly as R's
      ``psych::ICC(x, lmer = FALSE)`` does (checked in ``tests/test_reliability.py``
      against ``tests/data/r_reference/``);
    - ``ba_bias``, ``ba_loa_low``, ``ba_loa_high`` -- Bland-Altman mean difference (first
      input minus second) and 95 % limits of agreement, bias ± 1.96 SD (two inputs only);
    - ``precision_sd`` -- RMS of the per-subject SDs (HU), the ISCD precision error;
    - ``cv_rms_percent`` -- RMS of the per-subject coefficients of variation (%), over the
      subjects whose mean is at least :data:`CV_MIN_MEAN_HU` in magnitude;
    - ``lsc`` -- least significant change, :data:`LSC_FACTOR` × ``precision_sd`` (HU).

``paired.csv``
    the paired values, one row per subject (``hu_1`` … ``hu_k`` in the order of the inputs).
``unpaired.csv``
    usable rows without a partner in every other input, with the reason.
``bland_altman.png``
    two inputs: difference against mean with bias and limits; three or more: each input's
    deviation from the subject's mean.
``reliability.html``
    the statistics, the figure, the inputs (SHA-256) and the counts, for a person.

The formulas, with a worked example, are in ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hu_roi.clibase import CliError, add_common_options, add_formula_escape_option, plural
from hu_roi.errors import SchemaError

if TYPE_CHECKING:  # pandas is imported when used: `hu-roi --help` stays fast
    import pandas as pd

__all__ = [
    "LSC_FACTOR",
    "CV_MIN_MEAN_HU",
    "STATISTICS",
    "OUTPUT_NAMES",
    "IccResult",
    "icc",
    "bland_altman",
    "precision",
    "Pairing",
    "pair_readings",
    "reliability_rows",
    "add_reliability_parser",
    "run_reliability",
]

logger = logging.getLogger(__name__)

#: LSC = 2.77 × precision SD: 1.96·√2 (95 % confidence that the difference of two
#: measurements exceeds the measurement error), rounded as in ISCD practice (Glüer et al.,
#: Osteoporos Int 1995;5:262-270).
LSC_FACTOR = 2.77
#: Subjects whose mean |HU| is smaller are left out of ``cv_rms_percent``: a coefficient of
#: variation of a value near 0 HU is unstable (the same bound as longitudinal's
#: ``pct-unstable``).
CV_MIN_MEAN_HU = 50.0
#: Rows of reliability.csv, in order (the ``ba_*`` rows only for two inputs).
STATISTICS = (
    "icc2_1",
    "icc3_1",
    "ba_bias",
    "ba_loa_low",
    "ba_loa_high",
    "precision_sd",
    "cv_rms_percent",
    "lsc",
)
#: Files the command writes into DIR (an existing DIR holding only these may be replaced).
OUTPUT_NAMES = (
    "reliability.csv",
    "paired.csv",
    "unpaired.csv",
    "bland_altman.png",
    "reliability.html",
)
_KEY = ("patient_id", "timepoint", "level")
#: One row of reliability.csv: statistic (str), estimate, ci_low, ci_high (float), n (int).
Row = dict[str, str | float | int]


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class IccResult:
    """One intraclass correlation with its 95 % (or 1 − alpha) interval.

    ``f``, ``df1``, ``df2`` are the F test of ICC = 0 (as ``psych::ICC`` reports them);
    non-finite values mean "not defined for these data" (e.g. all values equal).
    """

    icc: float
    ci_low: float
    ci_high: float
    f: float
    df1: float
    df2: float


@dataclass(frozen=True)
class IccTable:
    """ICC(2,1) and ICC(3,1) of an n × k table, and the mean squares they come from
    (HU², as in ``psych::ICC``: MSB subjects, MSJ raters, MSE residual, MSW within
    subjects)."""

    icc2_1: IccResult
    icc3_1: IccResult
    n: int
    k: int
    msb: float
    msj: float
    mse: float
    msw: float


def _qf(p: float, df1: float, df2: float) -> float:
    """Quantile of the F distribution (R's ``qf``); NaN when a df is not finite and > 0."""
    from scipy.stats import f as f_dist

    if not (math.isfinite(df1) and math.isfinite(df2) and df1 > 0 and df2 > 0):
        return math.nan
    return float(f_dist.ppf(p, df1, df2))


def _div(a: float, b: float) -> float:
    """a / b as a float, NaN where it is not defined (0/0, x/0) -- never a warning."""
    if b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return a / b


def icc(x: np.ndarray, alpha: float = 0.05) -> IccTable:
    """ICC(2,1) and ICC(3,1) of a complete table, with McGraw & Wong intervals.

    Follows ``psych::ICC(x, lmer = FALSE)`` (two-way ANOVA ``values ~ subjects + raters``)
    formula by formula, rewritten with the mean squares so that a table without residual
    variance (readers that agree exactly) gives ICC(3,1) = 1 instead of ∞/∞:

    - ICC(2,1) = (MSB − MSE) / (MSB + (k−1)·MSE + k·(MSJ − MSE)/n)
    - ICC(3,1) = (MSB − MSE) / (MSB + (k−1)·MSE)
    - ICC(3,1) interval: F = MSB/MSE, F_L = F / F(1−α/2; n−1, (n−1)(k−1)),
      F_U = F · F(1−α/2; (n−1)(k−1), n−1); bounds (F_x − 1)/(F_x + k − 1);
    - ICC(2,1) interval: Satterthwaite's ν from ICC(2,1) and F_J = MSJ/MSE, F* = F(1−α/2;
      n−1, ν), F** = F(1−α/2; ν, n−1); L = n(MSB − F*·MSE) / (F*(k·MSJ + (kn − k − n)MSE)
      + n·MSB), U = n(F**·MSB − MSE) / (k·MSJ + (kn − k − n)MSE + n·F**·MSB).

    Parameters
    ----------
    x : numpy.ndarray
        n subjects × k raters (HU), no missing values, n ≥ 2 and k ≥ 2.
    alpha : float
        1 − confidence level of the intervals.

    Returns
    -------
    IccTable
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"need at least 2 subjects × 2 raters, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the table holds missing or non-finite values")
    n, k = x.shape
    grand = float(x.mean())
    rows = x.mean(axis=1)
    cols = x.mean(axis=0)
    ss_b = float(k * ((rows - grand) ** 2).sum())
    ss_j = float(n * ((cols - grand) ** 2).sum())
    resid = x - rows[:, None] - cols[None, :] + grand
    ss_e = float((resid**2).sum())
    df_b, df_j, df_e = n - 1, k - 1, (n - 1) * (k - 1)
    msb, msj, mse = ss_b / df_b, ss_j / df_j, ss_e / df_e
    msw = (ss_j + ss_e) / (df_j + df_e)

    icc3 = _div(msb - mse, msb + (k - 1) * mse)
    icc2 = _div(msb - mse, msb + (k - 1) * mse + k * (msj - mse) / n)
    f3 = _div(msb, mse)

    q_l = _qf(1 - alpha / 2, df_b, df_e)
    q_u = _qf(1 - alpha / 2, df_e, df_b)
    # (F/q − 1)/(F/q + k − 1) with F = MSB/MSE, multiplied out by q·MSE
    l3 = _div(msb - q_l * mse, msb + (k - 1) * q_l * mse)
    u3 = _div(q_u * msb - mse, q_u * msb + (k - 1) * mse)

    # Satterthwaite's df of the ICC(2,1) interval, ν = vn/vd with F_J = MSJ/MSE, both
    # multiplied by MSE² (finite when MSE = 0 and MSJ > 0)
    a = n * (1 + (k - 1) * icc2) - k * icc2
    vn = (k - 1) * (n - 1) * (k * icc2 * msj + a * mse) ** 2
    vd = (n - 1) * k**2 * icc2**2 * msj**2 + (a * mse) ** 2
    v = _div(vn, vd)
    f_star = _qf(1 - alpha / 2, n - 1, v)
    f_2star = _qf(1 - alpha / 2, v, n - 1)
    c = k * msj + (k * n - k - n) * mse
    l2 = _div(n * (msb - f_star * mse), f_star * c + n * msb)
    u2 = _div(n * (f_2star * msb - mse), c + n * f_2star * msb)

    return IccTable(
        icc2_1=IccResult(icc2, l2, u2, f3, df_b, df_e),
        icc3_1=IccResult(icc3, l3, u3, f3, df_b, df_e),
        n=n,
        k=k,
        msb=msb,
        msj=msj,
        mse=mse,
        msw=msw,
    )


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement of two readings (HU); each value with its 95 % interval."""

    bias: float
    bias_ci: tuple[float, float]
    loa_low: float
    loa_high: float
    loa_low_ci: tuple[float, float]
    loa_high_ci: tuple[float, float]
    sd_diff: float
    n: int


def bland_altman(a: np.ndarray, b: np.ndarray) -> BlandAltman:
    """Bias (mean of a − b) and 95 % limits of agreement, bias ± 1.96·SD of a − b.

    Intervals (Bland & Altman, Lancet 1986;i:307-310): the bias ± t(0.975, n−1)·SD/√n;
    each limit ± t(0.975, n−1)·SD·√(3/n) (the approximate standard error of a limit).

    Parameters
    ----------
    a, b : numpy.ndarray
        Paired readings (HU), same length n ≥ 2.
    """
    from scipy.stats import t as t_dist

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n < 2:
        raise ValueError("need at least 2 pairs")
    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    t = float(t_dist.ppf(0.975, n - 1))
    lo, hi = bias - 1.96 * sd, bias + 1.96 * sd
    se_b, se_l = sd / math.sqrt(n), sd * math.sqrt(3.0 / n)
    return BlandAltman(
        bias=bias,
        bias_ci=(bias - t * se_b, bias + t * se_b),
        loa_low=lo,
        loa_high=hi,
        loa_low_ci=(lo - t * se_l, lo + t * se_l),
        loa_high_ci=(hi - t * se_l, hi + t * se_l),
        sd_diff=sd,
        n=n,
    )


@dataclass(frozen=True)
class Precision:
    """Within-subject precision of an n × k table (ISCD precision study)."""

    sd: float  # RMS of the per-subject SDs (HU)
    sd_ci: tuple[float, float]
    df: int  # n·(k − 1)
    cv_percent: float  # RMS of the per-subject CVs (%), NaN when no subject qualifies
    cv_n: int  # subjects with |mean| >= CV_MIN_MEAN_HU
    n: int


def precision(x: np.ndarray) -> Precision:
    """Precision SD, its 95 % interval, and the RMS coefficient of variation.

    ``sd`` = √(mean over subjects of SDᵢ²), SDᵢ the sample SD (n − 1) of subject i's k
    readings; with equal k this is √MSW of the one-way ANOVA.  Interval: the χ² interval
    of a variance with df = n·(k − 1) (normal, homoscedastic errors).  ``cv_percent`` =
    100·√(mean of (SDᵢ/|meanᵢ|)²) over the subjects with |meanᵢ| ≥ :data:`CV_MIN_MEAN_HU`.
    """
    from scipy.stats import chi2

    x = np.asarray(x, dtype=float)
    n, k = x.shape
    var = x.var(axis=1, ddof=1)
    sd = math.sqrt(float(var.mean()))
    df = n * (k - 1)
    ss = df * sd**2
    ci = (
        math.sqrt(ss / float(chi2.ppf(0.975, df))),
        math.sqrt(ss / float(chi2.ppf(0.025, df))),
    )
    means = np.abs(x.mean(axis=1))
    ok = means >= CV_MIN_MEAN_HU
    cv = 100.0 * math.sqrt(float((var[ok] / means[ok] ** 2).mean())) if ok.any() else math.nan
    return Precision(sd=sd, sd_ci=ci, df=df, cv_percent=cv, cv_n=int(ok.sum()), n=n)


# --------------------------------------------------------------------------- pairing


@dataclass
class Pairing:
    """The readings of several inputs paired by (patient_id, timepoint, level).

    Attributes
    ----------
    inputs : list of str
        The input paths, as given.
    paired : pandas.DataFrame
        ``patient_id, timepoint, level, hu_1 … hu_k`` (HU), one row per subject present
        and usable in every input, sorted by the key.
    unpaired : pandas.DataFrame
        ``input, line, roi_id, patient_id, timepoint, level, mean_hu, reason``: usable rows
        without a usable partner in every other input.
    excluded : list of dict
        Per input: ``fail`` (qc_status fail), ``no_mean`` (empty mean_hu),
        ``no_timepoint`` (target rows without a timepoint), ``used`` (usable rows).
    readers : list of list of str
        The ``reader`` values found in each input.
    """

    inputs: list[str]
    paired: pd.DataFrame
    unpaired: pd.DataFrame
    excluded: list[dict[str, int]] = field(default_factory=list)
    readers: list[list[str]] = field(default_factory=list)

    @property
    def matrix(self) -> np.ndarray:
        """The paired values, n subjects × k inputs (HU)."""
        cols = [f"hu_{i + 1}" for i in range(len(self.inputs))]
        return self.paired[cols].to_numpy(dtype=float)


def _read_targets(path: str) -> tuple[pd.DataFrame, list[int]]:
    """Target rows with a level of one measurement CSV, validated, and their file lines."""
    from hu_roi.analysis.schemas import MEASUREMENT_SCHEMA, drop_unplaced_fail_rows

    raw = MEASUREMENT_SCHEMA.read_raw(path)
    for c in ("kind", "level"):
        if c not in raw.columns:
            raise SchemaError(
                f"measurement CSV ({path}): required column {c!r} missing; is this the output "
                "of hu-roi measure?"
            )
    raw = raw.loc[(raw["kind"].str.strip() == "target") & (raw["level"].str.strip() != "")]
    raw = drop_unplaced_fail_rows(raw, f"measurement CSV ({path})")
    lines = [int(i) for i in raw.index]
    return MEASUREMENT_SCHEMA.validate(raw, source=str(path), lines=lines), lines


def pair_readings(paths: Sequence[str | Path]) -> Pairing:
    """Read the measurement CSVs and pair their usable target rows.

    A row is usable when its ``qc_status`` is not ``fail``, ``mean_hu`` is given and it has
    a timepoint (and a level: rows without one are reference ROIs).  Reference and
    phantom rows are not read.

    Raises
    ------
    SchemaError
        An unreadable or invalid CSV, or two usable rows with the same (patient_id,
        timepoint, level) in one input (the message lists them: one input per reading).
    """
    import pandas as pd

    from hu_roi.util import show

    names = [str(p) for p in paths]
    usable_by: list[dict[tuple[str, str, str], tuple[int, str, float]]] = []
    dropped_by: list[dict[tuple[str, str, str], str]] = []
    excluded: list[dict[str, int]] = []
    readers: list[list[str]] = []
    for name in names:
        m, lines = _read_targets(name)
        fail = (m["qc_status"] == "fail").fillna(False).to_numpy(dtype=bool)
        no_mean = (~fail) & m["mean_hu"].isna().to_numpy(dtype=bool)
        no_tp = (~fail) & (~no_mean) & m["timepoint"].isna().to_numpy(dtype=bool)
        use = ~(fail | no_mean | no_tp)
        excluded.append(
            {
                "fail": int(fail.sum()),
                "no_mean": int(no_mean.sum()),
                "no_timepoint": int(no_tp.sum()),
                "used": int(use.sum()),
            }
        )
        rd = m["reader"].dropna().astype(str) if "reader" in m.columns else pd.Series([], dtype=str)
        readers.append(sorted({r for r in rd if r}))
        usable: dict[tuple[str, str, str], tuple[int, str, float]] = {}
        dropped: dict[tuple[str, str, str], str] = {}
        twice: dict[tuple[str, str, str], list[str]] = {}
        has_tp = m["timepoint"].notna().to_numpy(dtype=bool)
        cols = [m[c].astype(object).tolist() for c in (*_KEY, "roi_id", "mean_hu")]
        for i, (pid, tp, level, roi, hu) in enumerate(zip(*cols, strict=True)):
            if not has_tp[i]:
                continue  # counted above; a key needs a timepoint
            key = (str(pid), str(tp), str(level))
            if use[i]:
                if key in usable:
                    twice.setdefault(key, [usable[key][1]]).append(str(roi))
                usable[key] = (lines[i], str(roi), float(hu))
            else:
                dropped.setdefault(key, "qc_status fail" if fail[i] else "no mean_hu")
        if twice:
            from hu_roi.csvtext import problem_message

            raise SchemaError(
                problem_message(
                    f"measurement CSV ({name}): more than one usable target ROI for the same "
                    "patient_id, timepoint and level; give one CSV per reader and reading "
                    "(or mark the extra ROIs qc_status=fail):",
                    [
                        f"{'/'.join(k)}: roi_id {', '.join(show(r, 40) for r in v)}"
                        for k, v in sorted(twice.items())
                    ],
                )
            )
        usable_by.append(usable)
        dropped_by.append(dropped)

    k = len(names)
    common = set(usable_by[0]).intersection(*usable_by[1:])
    order = sorted(common, key=_sort_key)
    paired = pd.DataFrame(
        {
            "patient_id": [s[0] for s in order],
            "timepoint": [s[1] for s in order],
            "level": [s[2] for s in order],
            **{f"hu_{j + 1}": [usable_by[j][s][2] for s in order] for j in range(k)},
        }
    )
    lonely = []
    for j in range(k):
        for key in sorted(set(usable_by[j]) - common, key=_sort_key):
            line, roi, hu = usable_by[j][key]
            why = []
            for o in range(k):
                if o != j and key not in usable_by[o]:
                    what = dropped_by[o].get(key, "no row")
                    why.append(f"{what} in {names[o]}")
            lonely.append(
                {
                    "input": names[j],
                    "line": line,
                    "roi_id": roi,
                    "patient_id": key[0],
                    "timepoint": key[1],
                    "level": key[2],
                    "mean_hu": hu,
                    "reason": "; ".join(why),
                }
            )
    unpaired = pd.DataFrame(
        lonely,
        columns=[
            "input",
            "line",
            "roi_id",
            "patient_id",
            "timepoint",
            "level",
            "mean_hu",
            "reason",
        ],
    )
    return Pairing(names, paired, unpaired, excluded, readers)


def _sort_key(key: tuple[str, str, str]) -> tuple[str, str, int]:
    """Patient, timepoint, then level in anatomical order (C1 … S5)."""
    from hu_roi.analysis.schemas import LEVELS

    return (key[0], key[1], LEVELS.index(key[2]) if key[2] in LEVELS else len(LEVELS))


# --------------------------------------------------------------------------- table


def reliability_rows(x: np.ndarray) -> list[Row]:
    """The rows of reliability.csv for an n × k table of paired readings (HU).

    Returns
    -------
    list of dict
        ``statistic, estimate, ci_low, ci_high, n`` in the order of :data:`STATISTICS`
        (no ``ba_*`` rows for more than two readings); NaN where a value is not defined.
    """
    nan = math.nan
    t = icc(x)
    p = precision(x)
    n = t.n
    rows: list[Row] = [
        _row("icc2_1", t.icc2_1.icc, t.icc2_1.ci_low, t.icc2_1.ci_high, n),
        _row("icc3_1", t.icc3_1.icc, t.icc3_1.ci_low, t.icc3_1.ci_high, n),
    ]
    if t.k == 2:
        ba = bland_altman(x[:, 0], x[:, 1])
        rows += [
            _row("ba_bias", ba.bias, *ba.bias_ci, n),
            _row("ba_loa_low", ba.loa_low, *ba.loa_low_ci, n),
            _row("ba_loa_high", ba.loa_high, *ba.loa_high_ci, n),
        ]
    rows += [
        _row("precision_sd", p.sd, *p.sd_ci, n),
        _row("cv_rms_percent", p.cv_percent, nan, nan, p.cv_n),
        _row("lsc", LSC_FACTOR * p.sd, LSC_FACTOR * p.sd_ci[0], LSC_FACTOR * p.sd_ci[1], n),
    ]
    return rows


def _row(name: str, est: float, lo: float, hi: float, n: int) -> Row:
    return {"statistic": name, "estimate": est, "ci_low": lo, "ci_high": hi, "n": n}


def _num(v: object) -> str:
    from hu_roi.csvtext import derived_number_text

    if isinstance(v, int | np.integer):
        return str(int(v))
    return derived_number_text(float(v))  # type: ignore[arg-type]  # '' for NaN


def reliability_csv_text(rows: list[Row]) -> str:
    """reliability.csv as text; values with 12 significant digits, '' when undefined."""
    lines = ["statistic,estimate,ci_low,ci_high,n"]
    for r in rows:
        lines.append(
            ",".join(
                [str(r["statistic"])] + [_num(r[c]) for c in ("estimate", "ci_low", "ci_high", "n")]
            )
        )
    return "\n".join(lines) + "\n"


def _table_text(df: pd.DataFrame, formula_escape: bool) -> str:
    import csv

    from hu_roi.csvtext import escape_cell, number_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(df.columns))
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, str):
                cells.append(escape_cell(v) if formula_escape else v)
            elif isinstance(v, int | np.integer):
                cells.append(str(int(v)))
            else:  # measured HU as in the measurement CSV (bit-identical)
                cells.append(number_text(float(v)))
        w.writerow(cells)
    return buf.getvalue()


# --------------------------------------------------------------------------- figure and page


def bland_altman_png(x: np.ndarray, labels: Sequence[str]) -> bytes:
    """The Bland-Altman plot as PNG bytes (matplotlib, Agg).

    Two inputs: difference (first − second) against the mean, with the bias and the limits
    of agreement.  More: each input's deviation from the subject's mean against that mean.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    mean = x.mean(axis=1)
    if x.shape[1] == 2:
        d = x[:, 0] - x[:, 1]
        ba = bland_altman(x[:, 0], x[:, 1])
        ax.scatter(mean, d, s=18, color="#1f77b4", alpha=0.8)
        for y, style, text in (
            (ba.bias, "-", f"bias {_signed(ba.bias)}"),
            (ba.loa_low, "--", f"−1.96 SD {_signed(ba.loa_low)}"),
            (ba.loa_high, "--", f"+1.96 SD {_signed(ba.loa_high)}"),
        ):
            ax.axhline(y, color="#444444", linestyle=style, linewidth=1)
            ax.annotate(
                text, (1.0, y), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                fontsize=8,
            )  # fmt: skip
        ax.set_ylabel(f"difference ({_short(labels[0])} − {_short(labels[1])}) (HU)")
    else:
        for j in range(x.shape[1]):
            ax.scatter(mean, x[:, j] - mean, s=16, alpha=0.8, label=f"{j + 1}: {_short(labels[j])}")
        ax.axhline(0.0, color="#444444", linewidth=1)
        ax.legend(fontsize=8, loc="best")
        ax.set_ylabel("reading − mean of the readings (HU)")
    ax.set_xlabel("mean of the readings (HU)")
    ax.set_title(f"Bland-Altman, {plural(x.shape[0], 'subject')}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _signed(v: float) -> str:
    """``-9.6`` with a typographic minus, as the axis labels have."""
    return f"{v:.1f}".replace("-", "−")


def _short(label: str, limit: int = 30) -> str:
    """A file name for the figure: shortened, ``$`` escaped (matplotlib reads ``$…$`` as
    mathematics)."""
    name = Path(label).name
    name = name if len(name) <= limit else name[: limit - 1] + "…"
    return name.replace("$", r"\$")


_NAMES = {
    "icc2_1": "ICC(2,1) absolute agreement",
    "icc3_1": "ICC(3,1) consistency",
    "ba_bias": "Bland–Altman bias (HU)",
    "ba_loa_low": "lower limit of agreement (HU)",
    "ba_loa_high": "upper limit of agreement (HU)",
    "precision_sd": "precision SD (RMS of per-subject SDs, HU)",
    "cv_rms_percent": "RMS coefficient of variation (%)",
    "lsc": "least significant change (HU)",
}


def render_html(pairing: Pairing, rows: list[Row], png: bytes) -> str:
    """reliability.html: the statistics, the figure, the inputs and the counts."""
    from hu_roi.util import printable

    def f(v: object, digits: int) -> str:
        if isinstance(v, int | np.integer):
            return str(int(v))
        return "" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"  # type: ignore[arg-type]

    body = [
        "<h1>hu-roi: reader reliability</h1>",
        f"<p>{plural(len(pairing.paired), 'subject')} (patient × timepoint × level) read in "
        f"every one of {len(pairing.inputs)} inputs; "
        f"{plural(len(pairing.unpaired), 'row')} without a partner (unpaired.csv).</p>",
        "<h2>Inputs</h2><table><tr><th>#</th><th>file</th><th>reader</th><th>used</th>"
        "<th>qc fail</th><th>no mean_hu</th><th>no timepoint</th><th>sha256</th></tr>",
    ]
    for j, (name, ex, rd) in enumerate(
        zip(pairing.inputs, pairing.excluded, pairing.readers, strict=True)
    ):
        try:
            digest = hashlib.sha256(Path(name).read_bytes()).hexdigest()[:16] + "…"
        except OSError:
            digest = ""
        body.append(
            f"<tr><td>{j + 1}</td><td><code>{html.escape(printable(name))}</code></td>"
            f"<td>{html.escape(', '.join(rd))}</td><td>{ex['used']}</td><td>{ex['fail']}</td>"
            f"<td>{ex['no_mean']}</td><td>{ex['no_timepoint']}</td><td>{digest}</td></tr>"
        )
    body.append("</table><h2>Statistics</h2><table>")
    body.append("<tr><th>statistic</th><th>estimate</th><th>95 % CI</th><th>n</th></tr>")
    for r in rows:
        digits = 3 if str(r["statistic"]).startswith("icc") else 2
        lo, hi = f(r["ci_low"], digits), f(r["ci_high"], digits)
        body.append(
            f"<tr><td>{html.escape(_NAMES[str(r['statistic'])])} "
            f"<code>{html.escape(str(r['statistic']))}</code></td>"
            f"<td>{f(r['estimate'], digits)}</td><td>{f'{lo} to {hi}' if lo and hi else ''}</td>"
            f"<td>{f(r['n'], 0)}</td></tr>"
        )
    body.append("</table>")
    data = base64.b64encode(png).decode("ascii")
    body.append(
        f'<figure><img alt="Bland-Altman plot" src="data:image/png;base64,{data}">'
        "<figcaption>Bland–Altman plot (bland_altman.png)</figcaption></figure>"
    )
    body.append(
        "<h2>Methods</h2><p>Target rows are paired by (patient_id, timepoint, level); rows "
        "with qc_status fail, without mean_hu or without a timepoint are left out. ICC(2,1) "
        "(two-way random, absolute agreement) and ICC(3,1) (two-way mixed, consistency), "
        "single rater, after Shrout &amp; Fleiss 1979, with McGraw &amp; Wong 1996 intervals, "
        "as computed by R psych::ICC(lmer = FALSE). Bland–Altman: bias = mean of (first − "
        "second), limits = bias ± 1.96 SD, intervals ± t·SD/√n and ± t·SD·√(3/n). Precision "
        "SD = RMS of the per-subject SDs with a χ² interval; CV over subjects with mean "
        f"|HU| ≥ {CV_MIN_MEAN_HU:g}; LSC = {LSC_FACTOR:g} × precision SD (ISCD). "
        "See docs/reliability.md.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>hu-roi reliability</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 6px}"
        "</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- command


def add_reliability_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi reliability`` (``set_defaults(func=run_reliability)``)."""
    p = subparsers.add_parser(
        "reliability",
        help="reader reliability (ICC, Bland-Altman, precision SD, LSC) of 2+ measurement CSVs",
        description="Pair the target rows of two or more measurement CSVs (two readers, or "
        "one reader twice) by patient_id, timepoint and level, and write into DIR: "
        "reliability.csv (ICC(2,1), ICC(3,1) with 95 % CI, Bland-Altman bias and limits for "
        f"two inputs, precision SD, RMS CV, LSC = {LSC_FACTOR:g} × precision SD), paired.csv, "
        "unpaired.csv (rows without a partner), bland_altman.png and reliability.html. "
        "See docs/reliability.md.",
    )
    p.add_argument("measurements", metavar="MEASUREMENTS.csv", nargs="+")
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="output folder (created; an existing one is replaced as a whole if it holds only "
        "files this command writes)",
    )
    add_common_options(p, quiet_help="no summary on stderr")
    add_formula_escape_option(p)
    p.set_defaults(func=run_reliability)


def run_reliability(args: argparse.Namespace) -> int:
    """Run ``hu-roi reliability``; bad input raises (exit 2 in the CLI, nothing written)."""
    from hu_roi.util import OutputError, OutputSet, printable

    paths = [str(p) for p in args.measurements]
    if len(paths) < 2:
        raise CliError(
            "give two or more measurement CSVs (two readers, or one reader twice); got one"
        )
    outs = OutputSet([("the measurement CSV", p) for p in paths])
    outs.check_folder(args.out, own=OUTPUT_NAMES)  # before reading: a refused DIR costs nothing
    pairing = pair_readings(paths)
    _warn_same_inputs(paths)
    n = len(pairing.paired)
    if n < 2:
        raise CliError(
            f"{plural(n, 'subject')} (patient_id, timepoint, level) read in every input; "
            "reliability needs at least 2"
            + (
                f" ({plural(len(pairing.unpaired), 'row')} without a partner)"
                if len(pairing.unpaired)
                else ""
            )
        )
    x = pairing.matrix
    rows = reliability_rows(x)
    png = bland_altman_png(x, pairing.inputs)
    page = render_html(pairing, rows, png)
    escape = getattr(args, "formula_escape", True)
    files: dict[str, str | bytes] = {
        "reliability.csv": reliability_csv_text(rows),
        "paired.csv": _table_text(pairing.paired, escape),
        "unpaired.csv": _table_text(pairing.unpaired, escape),
        "bland_altman.png": png,
        "reliability.html": page,
    }
    out = Path(args.out)
    with outs:
        build = outs.add_folder(out, own=OUTPUT_NAMES)
        try:
            for name, data in files.items():
                if isinstance(data, bytes):
                    (build / name).write_bytes(data)
                else:
                    (build / name).write_text(data, encoding="utf-8")
        except OSError as exc:  # name the destination, never the temporary folder
            raise OutputError(
                f"cannot write into {printable(out)}: {exc.strerror or type(exc).__name__}; "
                "the folder was left as it was"
            ) from None

    left = [
        (sum(e[c] for e in pairing.excluded), what)
        for c, what in (("fail", "qc fail"), ("no_mean", "without mean_hu"),
                        ("no_timepoint", "without timepoint"))
    ]  # fmt: skip
    if len(pairing.unpaired):
        logger.warning(
            "%s without a partner in every input, not used; listed in %s",
            plural(len(pairing.unpaired), "usable target row"),
            printable(out / "unpaired.csv"),
        )
    undefined = [str(r["statistic"]) for r in rows if not math.isfinite(float(r["estimate"]))]
    if undefined:
        logger.warning(
            "%s not defined for these data (e.g. all values equal, or no subject with mean "
            "|HU| >= %g for the CV); left empty",
            ", ".join(undefined),
            CV_MIN_MEAN_HU,
        )
    if not getattr(args, "quiet", False):
        by = {str(r["statistic"]): r for r in rows}
        skipped = "; ".join(f"{c} {w}" for c, w in left if c)
        print(
            f"hu-roi reliability: {plural(n, 'subject')} paired across "
            f"{len(paths)} inputs"
            + (f" ({skipped} left out)" if skipped else "")
            + f"; {plural(len(pairing.unpaired), 'row')} without a partner; "
            f"ICC(2,1) {_brief(by['icc2_1'], 3)}, ICC(3,1) {_brief(by['icc3_1'], 3)}, "
            f"precision SD {_brief(by['precision_sd'], 2)} HU, LSC {_brief(by['lsc'], 1)} HU; "
            f"wrote {printable(out)}",
            file=sys.stderr,
        )
    return 0


def _warn_same_inputs(paths: Sequence[str]) -> None:
    """Warn when two inputs are one file or hold the same bytes: their agreement is perfect
    by construction and says nothing about the readers (a slip of the command line)."""
    from hu_roi.util import printable

    seen: dict[bytes, str] = {}
    for p in paths:
        try:
            digest = hashlib.sha256(Path(p).read_bytes()).digest()
        except OSError:  # read a moment ago; a vanished file fails elsewhere
            continue
        if digest in seen:
            logger.warning(
                "%s and %s hold the same readings (identical contents): their agreement is "
                "perfect by construction; give the other reader's (or the second reading's) CSV",
                printable(seen[digest]),
                printable(p),
            )
        else:
            seen[digest] = p


def _brief(r: Row, digits: int) -> str:
    est, lo, hi = (float(r[c]) for c in ("estimate", "ci_low", "ci_high"))
    if not math.isfinite(est):
        return "undefined"
    text = f"{est:.{digits}f}"
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" ({lo:.{digits}f} to {hi:.{digits}f})"
    return text
