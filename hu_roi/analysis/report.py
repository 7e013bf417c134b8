"""Figures (PNG) and a single self-contained HTML report of the trial endpoints.

:func:`write_outputs` writes, into one folder, a CSV per table of
:class:`hu_roi.analysis.endpoints.TrialEndpoints`, the PNG figures and ``report.html``
(tables formatted like the paper, figures embedded as base64, methods and software
versions stated, nothing loaded from the network).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import io
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hu_roi.analysis.clinical import ARMS
from hu_roi.analysis.endpoints import LESION_SUBGROUPS, NEW_TABLE_NAMES, PREFIX, TrialEndpoints
from hu_roi.analysis.pain import omed_table_frame
from hu_roi.analysis.stats import KaplanMeierResult

logger = logging.getLogger(__name__)

ARM_COLOURS = {"IMRT": "#1f77b4", "3DCRT": "#d62728"}
FIGURES = ("fig2_overall_survival", "fig3_vas_omed", "fig_hu_over_time")


def _fmt_p(p: object) -> str:
    if p is None or pd.isna(p):  # type: ignore[arg-type]
        return ""
    p = float(p)  # type: ignore[arg-type]
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_text(p: object) -> str:
    """``p = 0.123`` or ``p < 0.001`` ("p not computable" when missing)."""
    text = _fmt_p(p)
    return "p not computable" if not text else ("p " + text if text[0] == "<" else f"p = {text}")


def _fmt(x: object, digits: int = 1) -> str:
    if x is None or pd.isna(x):  # type: ignore[arg-type]
        return ""
    if isinstance(x, int | np.integer):
        return str(int(x))
    text = f"{float(x):.{digits}f}"  # type: ignore[arg-type]
    # a value that rounds to zero reads 0.0, not -0.0
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _ci(lo: object, hi: object, digits: int = 1) -> str:
    if pd.isna(lo) or pd.isna(hi):  # type: ignore[arg-type]
        return ""
    return f"{_fmt(lo, digits)} to {_fmt(hi, digits)}"


# --------------------------------------------------------------------------- figures


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    return buf.getvalue()


def at_risk(km: KaplanMeierResult, times: Sequence[float] | np.ndarray) -> list[int]:
    """Number at risk just before each of ``times`` (R ``summary(survfit, times=)``).

    Parameters
    ----------
    km : hu_roi.analysis.stats.KaplanMeierResult
        One arm's curve (time in months).
    times : sequence of float
        Times (months).

    Returns
    -------
    list of int
        Patients whose event or censoring time is at or after each time.
    """
    t = np.asarray(km.time, dtype=float)
    n = np.asarray(km.n_risk, dtype=int)
    idx = np.searchsorted(t, np.asarray(times, dtype=float), side="left")
    return [int(n[i]) if i < t.size else 0 for i in idx]


def _survival_figure(ep: TrialEndpoints, origin: str) -> bytes:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7.2, 5.4), layout="constrained")
    ax, ax_risk = fig.subplots(2, 1, height_ratios=[4, 1], sharex=True)
    t_max = max(
        (float(km.time[-1]) for km in ep.survival.curves.values() if km.time.size), default=1.0
    )
    step = next((s for s in (1, 2, 3, 6, 12, 24, 36) if t_max / s <= 8), 60)
    ticks = np.arange(0.0, t_max + 1e-9, step)
    for arm, km in ep.survival.curves.items():
        c = ARM_COLOURS.get(arm, "k")
        t = np.concatenate([[0.0], km.time])
        s = np.concatenate([[1.0], km.survival])
        lo = np.concatenate([[1.0], np.nan_to_num(km.lower, nan=0.0)])
        hi = np.concatenate([[1.0], np.nan_to_num(km.upper, nan=1.0)])
        ax.fill_between(t, lo, hi, step="post", color=c, alpha=0.15, linewidth=0)
        ax.step(t, s, where="post", color=c, label=f"{arm} (n = {int(km.n_risk[0])})")
        cens = km.n_censor > 0
        ax.plot(km.time[cens], km.survival[cens], "|", color=c, ms=8)
    p = ep.survival.logrank.p_value if ep.survival.logrank is not None else np.nan
    ax.set_ylabel("overall survival (95% CI band)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Overall survival, log-rank {_p_text(p)}")
    # above the curves' start (S = 1 at t = 0 fills the top left corner): legend outside
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.08), ncols=2, frameon=False)
    ax_risk.set_ylim(-0.5, len(ep.survival.curves) - 0.5)
    arms = list(ep.survival.curves)
    for k, arm in enumerate(arms):
        y = len(arms) - 1 - k
        for x, n in zip(ticks, at_risk(ep.survival.curves[arm], ticks), strict=True):
            ax_risk.text(x, y, str(n), ha="center", va="center", color=ARM_COLOURS.get(arm, "k"))
    ax_risk.set_yticks(range(len(arms)), list(reversed(arms)))
    ax_risk.set_xticks(ticks)
    ax_risk.set_xlim(-0.02 * t_max, t_max * 1.03)
    ax_risk.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax_risk.spines[side].set_visible(False)
    ax_risk.set_title("Number at risk", fontsize=10, loc="left")
    ax_risk.set_xlabel(f"months since {origin}")
    return _png(fig)


def _pain_figure(ep: TrialEndpoints) -> bytes:
    import matplotlib.pyplot as plt

    pot = ep.tables["pain_over_time"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
    for ax, measure, unit in zip(
        axes, ("VAS", "OMED"), ("VAS (0-10)", "OMED (mg/day)"), strict=True
    ):
        d = pot.loc[pot["measure"] == measure]
        x = np.arange(len(d))
        for k, arm in enumerate(ARMS):
            p_ = PREFIX[arm]
            med = d[f"{p_}_median"].to_numpy(float)
            lo = med - d[f"{p_}_q1"].to_numpy(float)
            hi = d[f"{p_}_q3"].to_numpy(float) - med
            ax.errorbar(x + (k - 0.5) * 0.12, med, yerr=[lo, hi], marker="o", capsize=3,
                        color=ARM_COLOURS[arm], label=arm)  # fmt: skip
        labels = [
            f"{tp}\nn = {_fmt(ni)} / {_fmt(nc)}\n{_p_text(pv) if pd.notna(pv) else 'p –'}"
            for tp, ni, nc, pv in zip(
                d["timepoint"], d["imrt_n"], d["crt_n"], d["p_value"], strict=True
            )
        ]
        ax.set_xticks(x, labels)
        ax.set_ylabel(unit + ", median and IQR")
        ax.set_title(measure)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper right", ncols=2, frameon=False)
    fig.suptitle("VAS and OMED per arm (n = IMRT / 3DCRT; rank-sum p)")
    return _png(fig)


def _hu_figure(ep: TrialEndpoints) -> bytes:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 9.2), layout="constrained")
    sub = np.asarray(fig.subfigures(2, 1, height_ratios=[1, 1.45]), dtype=object)
    top, bottom = sub[0], sub[1]
    axes = top.subplots(1, 2)
    for ax, key, title in (
        (axes[0], "patient_hu_irradiated", "Irradiated (metastatic) vertebra"),
        (axes[1], "patient_hu_unirradiated", "Unirradiated vertebra"),
    ):
        d = ep.tables[key]
        pos = 0.0
        ticks, labels = [], []
        for tp in ("T0", "T2", "T3"):
            ns = []
            for k, arm in enumerate(ARMS):
                vals = d.loc[d["arm"] == arm, f"hu_{tp}"].dropna().to_numpy(float) if len(d) else []
                ns.append(len(vals))
                if len(vals):
                    bp = ax.boxplot(
                        [vals], positions=[pos + k * 0.4], widths=0.35, patch_artist=True
                    )
                    for b in bp["boxes"]:
                        b.set_facecolor(ARM_COLOURS[arm])
                        b.set_alpha(0.5)
            ticks.append(pos + 0.2)
            labels.append(f"{tp}\nn = {ns[0]} / {ns[1]}")
            pos += 1.2
        ax.set_xticks(ticks, labels)
        ax.set_ylabel("HU (mean in ROI)")
        ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=ARM_COLOURS[a], alpha=0.5) for a in ARMS]
    top.legend(handles, ARMS, loc="outside upper right", ncols=2, frameon=False)
    top.suptitle("Box plots per arm (n = IMRT / 3DCRT)")

    # individual patients' time courses, per arm (rows) and lesion type (columns)
    d = ep.tables["patient_hu_irradiated"]
    grid = bottom.subplots(2, len(LESION_SUBGROUPS), sharex=True, sharey=True, squeeze=False)
    xs = np.array([0.0, 3.0, 6.0])
    for i, arm in enumerate(ARMS):
        for j, lesion in enumerate(LESION_SUBGROUPS):
            ax = grid[i][j]
            sel = (
                d.loc[(d["arm"] == arm) & (d["lesion_type"] == lesion)]
                if len(d) and "lesion_type" in d
                else d.iloc[0:0]
            )
            for _, r in sel.iterrows():
                y = np.array([r["hu_T0"], r["hu_T2"], r["hu_T3"]], dtype=float)
                ok = ~np.isnan(y)
                ax.plot(xs[ok], y[ok], "-o", color=ARM_COLOURS[arm], alpha=0.45, lw=1, ms=3)
            ax.set_title(f"{arm}, {lesion} (n = {len(sel)})", fontsize=10)
            ax.set_xticks(xs, ["T0", "T2\n3 mo", "T3\n6 mo"])
            if j == 0:
                ax.set_ylabel("HU")
    bottom.suptitle("Individual patients, irradiated vertebra (one line per patient)")
    return _png(fig)


def make_figures(ep: TrialEndpoints, *, survival_origin: str | None = None) -> dict[str, bytes]:
    """Render the figures as PNG bytes.

    Parameters
    ----------
    ep : TrialEndpoints
    survival_origin : str, optional
        Words for the Kaplan-Meier time axis ("months since ..."; default
        :func:`origin_words`).

    Returns
    -------
    dict
        ``fig_hu_over_time`` (Figure 1: box plots of the irradiated and unirradiated index
        vertebrae per arm at T0/T2/T3 with n, and each patient's HU time course per arm and
        lesion type), ``fig2_overall_survival`` (Figure 2: Kaplan-Meier per arm with 95 %
        confidence bands and a number-at-risk table), ``fig3_vas_omed`` (Figure 3: VAS and
        OMED median and IQR per arm with n and p per timepoint).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    return {
        "fig_hu_over_time": _hu_figure(ep),
        "fig2_overall_survival": _survival_figure(ep, survival_origin or origin_words(ep)),
        "fig3_vas_omed": _pain_figure(ep),
    }


# --------------------------------------------------------------------------- human headers

NOT_RECORDED = "not recorded"
NOT_REACHED = "not reached"
HL_DIRECTION = "IMRT - 3DCRT"
"""Direction of every between-arm Hodges-Lehmann shift in the report and the table CSVs."""

#: Column headers of the table CSVs and of the report, per table (``"*"``: any table).
#: The per-arm columns (``imrt_...``, ``crt_...``) are named by :func:`human_header`.
HEADERS: dict[str, dict[str, str]] = {
    "*": {
        "arm": "Arm",
        "timepoint": "Timepoint",
        "label": "Time",
        "group": "Group",
        "variable": "Variable",
        "level": "Level",
        "test": "Test",
        "statistic": "Test statistic",
        "p_value": "p-value",
        "ci_low": "95% CI lower",
        "ci_high": "95% CI upper",
        "n": "n",
        "measure": "Measure",
        "category": "Category",
        "method": "Method",
        "estimate": "Estimate",
        "term": "Model term",
        "se": "Standard error",
        "z": "z",
        "value": "Value",
        "endpoint": "Endpoint",
    },
    "consort": {
        "randomised": "Randomised",
        "deaths_cumulative": "Deaths since randomisation",
        "deaths_since_previous": "Deaths since previous timepoint",
        "pct_deaths_since_previous": "Deaths since previous timepoint (% of those alive then)",
        "alive": "Alive",
        "hu_measured": "HU measured (irradiated vertebra)",
        "vas_assessed": "VAS assessed",
    },
    "table1_baseline": {"statistic": "Test statistic (t, z or chi-square)"},
    "counts": {
        "fisher_p": "Fisher's exact p",
        "small_expected": "Small expected counts (Cochran's rule)",
    },
    "fracture_patients": {
        "patient_id": "Patient",
        "fracture_reported": "Fracture reported",
        "vcf": "Vertebral compression fracture (> 20% height loss)",
        "alive": "Alive at the timepoint (counted in Table 4)",
        "loss_ant_pct": "Height loss anterior (%)",
        "loss_mid_pct": "Height loss middle (%)",
        "loss_post_pct": "Height loss posterior (%)",
        "max_loss_pct": "Largest height loss (%)",
    },
    "survival_landmarks": {
        "months": "Months",
        "survival": "Kaplan-Meier survival",
        "ci_low": "Survival 95% CI lower",
        "ci_high": "Survival 95% CI upper",
        "n_risk": "Number at risk",
        "n_events": "Deaths in the interval up to then",
    },
    "analysis_settings": {"setting": "Setting", "value": "Choice", "description": "Meaning"},
    "hu": {
        "subgroup": "Subgroup",
        "section": "Interval",
        "quantity": "Quantity (HU, or % for relative change)",
        "p_between": "p between arms (Wilcoxon rank-sum)",
        "within_test": "Within-arm test",
    },
    "shift": {
        "hl": f"Hodges-Lehmann shift {HL_DIRECTION}",
        "ci_low": f"Shift {HL_DIRECTION} 95% CI lower",
        "ci_high": f"Shift {HL_DIRECTION} 95% CI upper",
        "w": "Rank-sum statistic of IMRT (R: W; SAS: rank sum S)",
        "between_test": "Between-arm test",
    },
    "table4_fractures": {"statistic": "Chi-square"},
    "table5_pain_response": {"statistic": "Chi-square"},
    "pain_over_time": {"p_value": "p-value (Wilcoxon rank-sum)"},
    "survival": {
        "n": "Patients",
        "deaths": "Deaths",
        "median_months": "Median overall survival (months)",
        "median_lower": "Median 95% CI lower (months)",
        "median_upper": "Median 95% CI upper (months)",
        "statistic": "Log-rank chi-square",
        "p_value": "Log-rank p-value",
        "observed": "Observed deaths",
        "expected": "Expected deaths (log-rank)",
        "origin": "Time origin",
    },
    "omed": {
        "drug": "Drug",
        "factor": "Morphine equivalents per unit",
        "dose_unit": "Dose unit",
        "source": "Source",
    },  # fmt: skip
}
HU_TABLES = ("table2_hu_irradiated", "table3_hu_by_lesion", "hu_unirradiated")
SHIFT_TABLES = (*HU_TABLES, "pain_over_time")
"""Tables with a between-arm Hodges-Lehmann shift (shown as IMRT - 3DCRT)."""

#: Words for the parts of per-arm column names (``imrt_p_within`` -> "IMRT p within arm ...").
_ARM_FIELDS = {
    "n": "n",
    "pct": "%",
    "total": "n evaluable",
    "summary": "n (%) or mean (SD)",
    "median": "median",
    "mean": "mean",
    "sd": "SD",
    "q1": "first quartile",
    "q3": "third quartile",
    "p_within": "p within arm (Wilcoxon signed-rank)",
    "stat_within": "signed-rank statistic (R: V; SAS: S)",
    "pseudomedian_low": "pseudo-median 95% CI lower",
    "pseudomedian_high": "pseudo-median 95% CI upper",
    "mean_sd": "mean (SD)",
    "no": "no fracture",
    "yes": "fracture",
    "pct_yes": "fracture %",
    "vcf": "of which vertebral compression fracture",
    "hl": "pseudo-median (Hodges-Lehmann)",
    "pseudomedian": "pseudo-median (Hodges-Lehmann)",
    "hl_low": "pseudo-median 95% CI lower",
    "hl_high": "pseudo-median 95% CI upper",
    "ci_low": "95% CI lower",
    "ci_high": "95% CI upper",
    "w": "W",
    "v": "V (signed-rank statistic)",
    "observed": "observed deaths",
    "expected": "expected deaths",
}
_WORDS = {"pct": "%", "ci": "CI", "hl": "Hodges-Lehmann", "hu": "HU", "os": "OS", "sd": "SD",
          "vas": "VAS", "omed": "OMED", "vcf": "VCF", "km": "Kaplan-Meier", "w": "W",
          "n": "n", "p": "p"}  # fmt: skip


def _header_group(table: str) -> str:
    return "hu" if table in HU_TABLES else table


_COUNT_TABLES = ("table1_baseline", "table4_fractures", "table5_pain_response")


def human_header(column: str, table: str = "") -> str:
    """The header people read for a column of one of the tables.

    Parameters
    ----------
    column : str
        Column name in :attr:`TrialEndpoints.tables` (``imrt_median``, ``p_value``, ...).
    table : str
        Table name (some columns read differently per table).

    Returns
    -------
    str
        E.g. ``"IMRT median"``, ``"Log-rank p-value"``; unknown names are spelled out
        word by word (``"km_survival"`` -> ``"Kaplan-Meier survival"``).
    """
    own = HEADERS.get(_header_group(table), {})
    if column in own:
        return own[column]
    if table in _COUNT_TABLES and column in HEADERS["counts"]:
        return HEADERS["counts"][column]
    if table in SHIFT_TABLES and column in HEADERS["shift"]:
        return HEADERS["shift"][column]
    if column in HEADERS["*"]:
        return HEADERS["*"][column]
    for arm, prefix in PREFIX.items():
        if column.startswith(prefix + "_"):
            rest = column[len(prefix) + 1 :]
            return f"{arm} {_ARM_FIELDS.get(rest) or human_header(rest, table)}"
    words = [_WORDS.get(w, w) for w in column.split("_") if w]
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else column


def machine_name(header: str, table: str = "") -> str:
    """The column name of :attr:`TrialEndpoints.tables` behind a header of a table CSV.

    The inverse of :func:`human_header` for the known columns, to read a table CSV back
    (``pd.read_csv(p).rename(columns=lambda h: machine_name(h, "survival"))``); an unknown
    header is returned as it is.  In Tables 2, 3 and the unirradiated table ``hl``,
    ``ci_low`` and ``ci_high`` are then the IMRT - 3DCRT shift (see :func:`present_table`).
    """
    groups = (
        _header_group(table),
        "counts" if table in _COUNT_TABLES else "",
        "shift" if table in SHIFT_TABLES else "",
        "*",
    )
    for group in groups:
        for col, text in HEADERS.get(group, {}).items():
            if text == header:
                return col
    for arm, prefix in PREFIX.items():
        if header.startswith(arm + " "):
            rest = header[len(arm) + 1 :]
            for field, text in _ARM_FIELDS.items():
                if text == rest:
                    return f"{prefix}_{field}"
    return header


def present_table(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """A table as people read it: the report's values under human headers.

    - Tables 2, 3, the unirradiated table and VAS/OMED: the between-arm Hodges-Lehmann shift
      and its CI always as IMRT - 3DCRT (rows where SAS estimated 3DCRT - IMRT are negated; the
      two-sided p does not change), without the ``hl_of`` column.
    - Table 1: an arm without any value of a variable reads "not recorded", not 0.
    - Survival: an undefined median or limit reads "not reached"; the log-rank test is
      on the first row only.
    Per-patient tables are returned unchanged (they keep their machine column names).
    """
    if name.startswith("patient_") or name == "endpoints":
        return table
    t = table.copy()
    if name in SHIFT_TABLES and "hl_of" in t:
        t = hl_as_imrt_minus_3dcrt(t)
    if name == "table1_baseline":
        t = _table1_not_recorded(t)
    if name == "survival":
        t = _survival_not_reached(t)
    return t.rename(columns={c: human_header(str(c), name) for c in t.columns})


def hl_as_imrt_minus_3dcrt(t: pd.DataFrame) -> pd.DataFrame:
    """Negate the rows whose shift is 3DCRT - IMRT so that every row is IMRT - 3DCRT.

    The Hodges-Lehmann estimate of y - x is minus that of x - y, and its confidence limits
    swap and change sign (the interval is built from symmetric order statistics of the
    pairwise differences); the two-sided p-value is the same.
    """
    t = t.copy()
    flip = (t["hl_of"] == "3DCRT - IMRT").to_numpy()
    hl, lo, hi = (t[c].astype(float).to_numpy() for c in ("hl", "ci_low", "ci_high"))
    # + 0.0: a negated zero is written as 0, not -0
    t["hl"] = np.where(flip, -hl, hl) + 0.0
    t["ci_low"] = np.where(flip, -hi, lo) + 0.0
    t["ci_high"] = np.where(flip, -lo, hi) + 0.0
    if "w" in t:
        # SAS's S is the rank sum of its reference arm; the ranks of both arms add up to
        # N(N+1)/2, so IMRT's rank sum is that minus 3DCRT's
        n = t["imrt_n"].astype(float).to_numpy() + t["crt_n"].astype(float).to_numpy()
        w = t["w"].astype(float).to_numpy()
        t["w"] = np.where(flip, n * (n + 1) / 2 - w, w)
    return t.drop(columns=["hl_of"])


def _recorded(t: pd.DataFrame, prefix: str) -> pd.Series:
    """Rows of Table 1 where the arm has at least one value of the variable."""
    if f"{prefix}_total" in t:
        return t[f"{prefix}_total"].astype(float) > 0
    if "imrt_pct" not in t:
        return pd.Series(True, index=t.index)
    cont = t["level"] == "mean (SD)"
    return (cont & (t[f"{prefix}_n"] > 0)) | (~cont & t[f"{prefix}_pct"].notna())


def _table1_not_recorded(t: pd.DataFrame) -> pd.DataFrame:
    t = t.astype({c: object for c in t.columns if c.startswith(("imrt_", "crt_"))})
    for prefix in PREFIX.values():
        missing = ~_recorded(t, prefix)
        cols = ("n", "pct", "summary", "mean", "sd")
        for c in (f"{prefix}_{x}" for x in cols):
            if c in t:
                t.loc[missing, c] = NOT_RECORDED if c.endswith("summary") else None
    return t


def _survival_not_reached(t: pd.DataFrame) -> pd.DataFrame:
    t = t.astype({c: object for c in ("median_months", "median_lower", "median_upper") if c in t})
    for c in ("median_months", "median_lower", "median_upper"):
        if c in t:
            t.loc[t[c].isna(), c] = NOT_REACHED
    for c in ("statistic", "p_value"):
        if c in t and len(t) > 1:
            t[c] = t[c].astype(object)
            t.loc[t.index[1:], c] = None
    return t


# --------------------------------------------------------------------------- HTML tables


def _table(header: Sequence[Sequence[tuple[str, int]]], rows: Sequence[Sequence[str]], *,
           caption: str, note: str = "", text_columns: frozenset[int] = frozenset()) -> str:  # fmt: skip
    h = []
    for hr in header:
        h.append(
            "<tr>"
            + "".join(f'<th colspan="{span}">{html.escape(t)}</th>' for t, span in hr)
            + "</tr>"
        )
    b = []
    for r in rows:
        if len(r) == 1:
            b.append(f'<tr class="section"><td colspan="99">{html.escape(r[0])}</td></tr>')
        else:
            b.append(
                "<tr>"
                + "".join(
                    f'<td class="t">{html.escape(str(c))}</td>'
                    if i in text_columns
                    else f"<td>{html.escape(str(c))}</td>"
                    for i, c in enumerate(r)
                )
                + "</tr>"
            )
    foot = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead>{''.join(h)}</thead>"
        f"<tbody>{''.join(b)}</tbody></table>{foot}"
    )


COCHRAN_NOTE = (
    "† small expected counts (Cochran's rule: an expected count below 1, or more than 20% "
    "below 5): the chi-square p may be inaccurate; Fisher's exact p is given beside it."
)


def _fisher(t: pd.DataFrame) -> bool:
    """The table has small-expected-count warnings (then a Fisher column is shown)."""
    return "small_expected" in t and bool((t["small_expected"].fillna("").astype(str) != "").any())


def _p_cells(r: pd.Series, fisher: bool) -> list[str]:
    """p-value (with a dagger when Cochran's rule is broken) and, if shown, Fisher's p."""
    small = fisher and str(r.get("small_expected") or "") not in ("", "nan")
    p = _fmt_p(r["p_value"]) + (" †" if small else "")
    return [p, _fmt_p(r.get("fisher_p")) if small else ""] if fisher else [p]


def _table1_html(t: pd.DataFrame, n: Mapping[str, int]) -> str:
    header = [
        [
            ("", 2),
            (f"IMRT group n = {n['IMRT']}", 2),
            (f"3DCRT group n = {n['3DCRT']}", 2),
            ("", 2),
        ],
        [
            ("Variable", 1),
            ("", 1),
            ("n", 1),
            ("%", 1),
            ("n", 1),
            ("%", 1),
            ("Test", 1),
            ("p-value", 1),
        ],
    ]
    fisher = _fisher(t)
    if fisher:
        header[0].append(("", 1))
        header[1].append(("Fisher's exact p", 1))
    rec = {p: _recorded(t, p) for p in PREFIX.values()}
    rows: list[list[str]] = []
    group = None
    for i, r in t.iterrows():
        if r["group"] and r["group"] != group:
            group = r["group"]
            rows.append([group])
        cells: list[str] = []
        for p in PREFIX.values():
            if not rec[p][i]:
                cells += [NOT_RECORDED, ""]
            elif r["level"] == "mean (SD)":
                cells += [r[f"{p}_summary"], ""]
            else:
                cells += [str(r[f"{p}_n"]), _fmt(r[f"{p}_pct"])]
        if r["level"] == "mean (SD)":
            rows.append([r["variable"], "mean (SD)", *cells, r["test"], *_p_cells(r, fisher)])
        else:
            label = r["variable"] if r["level"] == "yes" else r["variable"] if r["test"] else ""
            level = "" if r["level"] == "yes" else r["level"]
            test = "chi-square" if r["test"] and pd.notna(r["p_value"]) else ""
            rows.append([label, level, *cells, test, *_p_cells(r, fisher)])
    return _table(header, rows, caption="Table 1. Baseline characteristics of randomly assigned participants",
                  note="Continuous: mean (SD), Student t-test (pooled) or Wilcoxon rank-sum (KPS); "
                  "categorical: n and % of patients with a recorded value, Pearson chi-square without "
                  "continuity correction. \"not recorded\": no patient of the arm has a value."
                  + (" " + COCHRAN_NOTE if fisher else ""))  # fmt: skip


def _hu_html(t: pd.DataFrame, caption: str) -> str:
    pseudo = "imrt_pseudomedian" in t
    arm_cols = [("n", 1), ("Median", 1), ("SD", 1)]
    if pseudo:
        arm_cols.append(("Pseudo-median (95% CI)", 1))
    arm_cols.append(("p within", 1))
    between = [("HL shift", 1), ("95% CI", 1)] + ([("W", 1)] if "w" in t else []) + [("p-value", 1)]
    header = [
        [("", 1), ("IMRT group", len(arm_cols)), ("3DCRT group", len(arm_cols)),
         (f"Difference between groups ({HL_DIRECTION})", len(between))],
        [("", 1), *arm_cols, *arm_cols, *between],
    ]  # fmt: skip
    t = hl_as_imrt_minus_3dcrt(t) if "hl_of" in t else t
    rows: list[list[str]] = []
    sub = sec = None
    for _, r in t.iterrows():
        if r["subgroup"] != sub:
            sub = r["subgroup"]
            rows.append([str(sub)])
            sec = None
        if r["section"] and r["section"] != sec:
            sec = r["section"]
            rows.append([str(sec)])
        row = [r["quantity"]]
        for p in PREFIX.values():
            row += [_fmt(r[f"{p}_n"]), _fmt(r[f"{p}_median"]), _fmt(r[f"{p}_sd"])]
            if pseudo:
                est = _fmt(r[f"{p}_pseudomedian"])
                ci = _ci(r[f"{p}_pseudomedian_low"], r[f"{p}_pseudomedian_high"])
                row.append(f"{est} ({ci})" if est and ci else est)
            row.append(_fmt_p(r[f"{p}_p_within"]))
        row += [_fmt(r["hl"]), _ci(r["ci_low"], r["ci_high"])]
        if "w" in t:
            row.append(_fmt(r["w"]))
        row.append(_fmt_p(r["p_between"]))
        rows.append(row)
    within = {str(x) for x in t.get("within_test", pd.Series(dtype=object)) if x}
    tests = (
        f" Conventions: within-arm {', '.join(sorted(within))}; between arms "
        f"{', '.join(sorted({str(x) for x in t['between_test'] if x}))} (see Methods)."
        if "between_test" in t and len(t)
        else ""
    )
    return _table(header, rows, caption=caption,
                  note=f"Every Hodges-Lehmann (HL) shift and its 95% CI is {HL_DIRECTION}: positive = "
                  "IMRT higher. (SAS PROC NPAR1WAY, and so the paper, estimates the shift of the smaller "
                  "group, or of IMRT when both are equal, so some of the paper's signs are the opposite.) "
                  "W: rank-sum statistic of IMRT. "
                  "T0-T2 / T0-T3: change from baseline to 3 / 6 months (follow-up minus baseline, "
                  "positive = denser). p within: Wilcoxon signed-rank test of the change; pseudo-median: "
                  "Hodges-Lehmann estimate of the change with its 95% CI (R wilcox.test). Between "
                  "groups: Wilcoxon rank-sum with HL shift and 95% CI." + tests)  # fmt: skip


def _table4_html(t: pd.DataFrame) -> str:
    header = [
        [("", 1), ("IMRT group", 4), ("3DCRT group", 4), ("", 1)],
        [("", 1), ("n", 1), ("No", 1), ("Yes", 1), ("of which VCF", 1), ("n", 1), ("No", 1),
         ("Yes", 1), ("of which VCF", 1), ("p-value", 1)],
    ]  # fmt: skip
    fisher = _fisher(t)
    if fisher:
        header[0].append(("", 1))
        header[1].append(("Fisher's exact p", 1))
    rows = []
    for _, r in t.iterrows():
        row = [r["label"]]
        for p in ("imrt", "crt"):
            n = r[f"{p}_n"]
            row += [str(n), f"{r[f'{p}_no']} ({_fmt(100 - r[f'{p}_pct_yes'])}%)" if n else "",
                    f"{r[f'{p}_yes']} ({_fmt(r[f'{p}_pct_yes'])}%)" if n else "", str(r[f"{p}_vcf"])]  # fmt: skip
        row += _p_cells(r, fisher)
        rows.append(row)
    return _table(header, rows, caption="Table 4. Pathological fractures of both groups",
                  note="n = alive participants with known status. Yes = pathologic fracture reported "
                  "(fracture_Tk) or vertebral compression fracture (VCF: > 20% loss of anterior, middle or "
                  "posterior vertebral body height vs baseline); the patients are listed under Further "
                  "endpoints. Pearson chi-square, no correction." + (" " + COCHRAN_NOTE if fisher else ""))  # fmt: skip


def _table5_html(t: pd.DataFrame) -> str:
    parts = []
    for tp, d in t.groupby("timepoint", sort=True):
        first = d.iloc[0]
        header = [
            [(f"After {first['label']}", 1), (f"IMRT group n = {first['imrt_total']}", 2),
             (f"3DCRT group n = {first['crt_total']}", 2), ("", 1)],
            [("", 1), ("n", 1), ("%", 1), ("n", 1), ("%", 1), ("p-value", 1)],
        ]  # fmt: skip
        fisher = _fisher(t)
        if fisher:
            header[0].append(("", 1))
            header[1].append(("Fisher's exact p", 1))
        rows = [
            [r["category"], str(r["imrt_n"]), _fmt(r["imrt_pct"]), str(r["crt_n"]), _fmt(r["crt_pct"]),
             *_p_cells(r, fisher)]
            for _, r in d.iterrows()
        ]  # fmt: skip
        parts.append(
            _table(
                header,
                rows,
                caption=f"Table 5. Pain response (Chow categories), {first['label']} ({tp})",
            )
        )
    return "".join(parts) + (
        '<p class="note">CR complete response, PR partial response, PP pain progression, IP '
        "indeterminate pain; responders = CR + PR. p on the CR row: chi-square on the 2 x 4 table; "
        "on the Responders row: responders vs non-responders (Pearson, no correction)."
        + (" " + html.escape(COCHRAN_NOTE) if _fisher(t) else "")
        + "</p>"
    )


def _pain_html(t: pd.DataFrame) -> str:
    shift = "hl" in t
    t = hl_as_imrt_minus_3dcrt(t) if "hl_of" in t else t
    arm = [("n", 1), ("Median (IQR)", 1), ("Mean (SD)", 1)]
    between = ([("HL shift", 1), ("95% CI", 1)] if shift else []) + [("p-value", 1)]
    header = [
        [("", 2), ("IMRT group", 3), ("3DCRT group", 3),
         (f"Difference ({HL_DIRECTION})" if shift else "", len(between))],
        [("Measure", 1), ("Time", 1), *arm, *arm, *between],
    ]  # fmt: skip
    rows = []
    for _, r in t.iterrows():
        row = [str(r["measure"]), f"{r['timepoint']} ({r['label']})"]
        for p in PREFIX.values():
            n = r[f"{p}_n"]
            row += [_fmt(n)] + (
                [f"{_fmt(r[f'{p}_median'])} ({_fmt(r[f'{p}_q1'])} to {_fmt(r[f'{p}_q3'])})",
                 f"{_fmt(r[f'{p}_mean'])} ({_fmt(r[f'{p}_sd'])})"]
                if n else ["", ""]
            )  # fmt: skip
        if shift:
            row += [_fmt(r["hl"]), _ci(r["ci_low"], r["ci_high"])]
        row.append(_fmt_p(r["p_value"]))
        rows.append(row)
    return _table(
        header,
        rows,
        caption="VAS (0-10) and OMED (mg/day) per arm and timepoint",
        note="n = patients alive at the timepoint with a value. Between arms: Wilcoxon rank-sum "
        f"test with the Hodges-Lehmann shift {HL_DIRECTION} and its 95% CI (convention in Methods).",
    )


def _months(x: object) -> str:
    return NOT_REACHED if x is None or pd.isna(x) else _fmt(x)  # type: ignore[arg-type]


#: Words for the Kaplan-Meier axis and the survival table, per OS origin of the analysis.
ORIGIN_WORDS = {
    "diagnosis": "diagnosis",
    "rt": "start of RT",
    "columns": "the origin of the clinical CSV's os_months",
}


def origin_words(ep: TrialEndpoints) -> str:
    """The origin of overall survival of ``ep`` in words ("diagnosis", "start of RT", ...)."""
    origin = getattr(ep.survival, "origin", None) or "diagnosis"
    return ORIGIN_WORDS.get(str(origin), str(origin))


def _survival_html(t: pd.DataFrame, origin: str, landmarks: pd.DataFrame | None = None) -> str:
    oe = "observed" in t and "expected" in t
    header = [[("Arm", 1), ("Patients", 1), ("Deaths", 1), ("Median (months)", 1), ("95% CI", 1)]
              + ([("Expected deaths (log-rank)", 1)] if oe else [])]  # fmt: skip
    rows = [
        [str(r["arm"]), _fmt(r["n"]), _fmt(r["deaths"]), _months(r["median_months"]),
         f"{_months(r['median_lower'])} to {_months(r['median_upper'])}"]
        + ([_fmt(r["expected"], 2)] if oe else [])
        for _, r in t.iterrows()
    ]  # fmt: skip
    note = ""
    if len(t) and "p_value" in t:
        r = t.iloc[0]
        note = (
            f"Log-rank test (both arms): chi-square = {_fmt(r['statistic'], 2)}, 1 df, "
            f"{_p_text(r['p_value'])}. "
        )
    note += (
        "Kaplan-Meier median with the 95% CI of R survfit (log transformation); "
        f'"{NOT_REACHED}": the curve (or its confidence limit) does not fall to 50%.'
    )
    out = _table(header, rows, caption=f"Overall survival (months since {origin})", note=note)
    if landmarks is not None and len(landmarks):
        lm_rows = [
            [str(r["arm"]), _fmt(r["months"]), _fmt(100 * r["survival"]),
             _ci(100 * r["ci_low"], 100 * r["ci_high"]), _fmt(r["n_risk"])]
            for _, r in landmarks.iterrows()
        ]  # fmt: skip
        out += _table(
            [[("Arm", 1), ("Months", 1), ("Survival (%)", 1), ("95% CI (%)", 1),
              ("Number at risk", 1)]],
            lm_rows,
            caption=f"Kaplan-Meier overall survival at landmark times (months since {origin})",
            note="R summary(survfit, times = ...): survival with its log-transformed 95% CI and "
            "the number still at risk at that time.",
        )  # fmt: skip
    return out


def _cell(v: object, column: str) -> str:
    if isinstance(v, str):
        return v
    if v is None or (not isinstance(v, list | tuple | np.ndarray) and pd.isna(v)):  # type: ignore[arg-type]
        return ""
    if column.startswith("p_") or column.endswith(("_p", "p_value", "p_within", "p_between")):
        return _fmt_p(v)
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return _fmt(v, 1 if float(v).is_integer() or abs(float(v)) >= 10 else 2)
    return str(v)


def _simple_html(t: pd.DataFrame, caption: str, *, name: str = "", note: str = "") -> str:
    """Any table with the human headers of :func:`human_header`."""
    header = [[(human_header(str(c), name), 1) for c in t.columns]]
    rows = [[_cell(r[c], str(c)) for c in t.columns] for _, r in t.iterrows()]
    # long words (descriptions, sources) read left-aligned and may wrap
    text = frozenset(
        i
        for i, c in enumerate(t.columns)
        if t[c].map(lambda v: isinstance(v, str) and len(v) > 24).any()
    )
    return _table(header, rows, caption=caption, note=note, text_columns=text)


# --------------------------------------------------------------------------- report


def _versions() -> dict[str, str]:
    import matplotlib
    import scipy

    import hu_roi

    return {
        "hu-roi": hu_roi.__version__,
        "Python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


METHODS = """
<ul>
<li><b>Bone density</b>: mean HU of the target ROI (measurement CSV <code>mean_hu</code>); ROIs with
<code>qc_status=fail</code> are not used. One index vertebra per patient: the irradiated target level
(first in spinal order if several) and, separately, the unirradiated target level. Change T0-Tk =
HU(Tk) - HU(T0); relative change = 100 x (HU(Tk) - HU(T0)) / HU(T0).</li>
<li><b>Within-arm change</b>: Wilcoxon signed-rank test, with the pseudo-median (Hodges-Lehmann
estimate) of the change and its 95% CI. <b>Between arms</b>: Wilcoxon rank-sum test with the
Hodges-Lehmann shift IMRT - 3DCRT and its 95% CI. Which variant of each test was used is listed
under "Conventions of this analysis" below.</li>
<li><b>Categorical comparisons</b> (Tables 1, 4, 5): Pearson chi-square without continuity correction
(SAS PROC FREQ "Chi-Square"); categories empty in both arms dropped. <b>Table 1 continuous</b>:
Student two-sample t-test (pooled) for age, weight, height, BMI; Wilcoxon rank-sum for KPS.</li>
<li><b>Alive at a timepoint</b>: no date of death, or death later than RT start + 14 (T1), 91 (T2),
182 (T3) days.</li>
<li><b>Pathologic fracture at Tk</b>: <code>fracture_Tk</code> true, or (T2, T3) a vertebral compression
fracture = more than 20% loss of the anterior, middle or posterior vertebral body height of the treated
level vs baseline.</li>
<li><b>Pain response</b> (International Bone Metastases Consensus, Chow et al. 2012): CR pain 0 without
analgesic increase; PR pain -2 or more without analgesic increase, or OMED -25% or more without pain
increase; PP pain +2 or more with stable OMED, or OMED +25% or more with pain stable or +1; otherwise
IP (indeterminate). Responders = CR + PR. Only patients alive with VAS and OMED at baseline and
follow-up are evaluable.</li>
<li><b>VAS / OMED</b> between arms per timepoint: Wilcoxon rank-sum (the between-arm convention
below).</li>
<li><b>Overall survival</b>: from the origin given below to death, censored at last contact (months =
days / 30.4375); Kaplan-Meier per arm (R <code>survfit</code> conventions, log-transformed pointwise
95% CI), number at risk, log-rank test (R <code>survdiff</code>).</li>
</ul>
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0} td:first-child{text-align:left}
td{white-space:nowrap} th{vertical-align:bottom} td.t{text-align:left;white-space:normal}
tr.section td{text-align:left;font-style:italic;background:#fafafa}
p.note{font-size:12px;color:#555;max-width:1000px}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
code{background:#f4f4f4;padding:0 2px}
.banner{background:#fff3cd;border:1px solid #e0b400;padding:8px 12px;margin:0.5em 0 1em;font-weight:600}
p.cite{font-size:13px;color:#333}
nav{font-size:13px;margin:1em 0;line-height:1.6}
figcaption{font-size:13px;color:#333;max-width:1000px}
"""


#: The trial whose endpoints the analysis reproduces (cited in every report).
TRIAL_CITATION = (
    "Sprave T, Verma V, Förster R, Schlampp I, Hees K, Bruckner T, Bostel T, El Shafie RA, "
    "Welzel T, Nicolay NH, Debus J, Rief H. Bone density and pain response following "
    "intensity-modulated radiotherapy versus three-dimensional conformal radiotherapy for "
    "vertebral metastases - secondary results of a randomized trial. Radiation Oncology "
    "2018;13:212. doi:10.1186/s13014-018-1161-4. ClinicalTrials.gov NCT02832830."
)

#: Tables rendered by their own section of the report (others go to "Further endpoints").
_OWN_SECTION = {
    "table1_baseline", "consort", "table2_hu_irradiated", "table3_hu_by_lesion",
    "hu_unirradiated", "table4_fractures", "table5_pain_response", "pain_over_time",
    "survival", "hu_repeated_measures", "endpoints", "survival_landmarks", "analysis_settings",
}  # fmt: skip


def render_html(
    ep: TrialEndpoints,
    figures: Mapping[str, bytes],
    *,
    inputs: Mapping[str, Path] | None = None,
    elapsed_s: float | None = None,
    title: str | None = None,
    banner: str | None = None,
    survival_origin: str | None = None,
) -> str:
    """The report as one HTML string (figures inlined as base64 PNG).

    Parameters
    ----------
    ep : TrialEndpoints
    figures : mapping
        From :func:`make_figures`.
    inputs : mapping, optional
        Label -> input file, listed with their SHA-256.
    elapsed_s : float, optional
        Analysis time (s) stated in the report.
    title : str, optional
        Page title and heading (default "hu-roi: trial endpoints ...").
    banner : str, optional
        A highlighted notice under the heading (e.g. that the data are synthetic).
    survival_origin : str, optional
        Words for the origin of overall survival (default: :func:`origin_words`).
    """
    t = ep.tables
    origin = survival_origin or origin_words(ep)
    n = {a: int((t["patient_pain_response"]["arm"] == a).sum()) for a in ARMS}
    heading = title or "hu-roi: trial endpoints (IMRT vs 3DCRT, NCT02832830 design)"
    sections: list[tuple[str, str]] = []  # (id, heading) for the contents

    def h2(anchor: str, text: str) -> str:
        sections.append((anchor, text))
        return f'<h2 id="{anchor}">{html.escape(text)}</h2>'

    def img(name: str, caption: str) -> str:
        data = base64.b64encode(figures[name]).decode("ascii")
        return (
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    consort = t["consort"][
        ["arm", "timepoint", "label", "randomised", "deaths_since_previous",
         "pct_deaths_since_previous", "alive", "hu_measured", "vas_assessed"]
    ]  # fmt: skip
    head = [f"<h1>{html.escape(heading)}</h1>"]
    if banner:
        head.append(f'<div class="banner" role="note">{html.escape(banner)}</div>')
    head.append(
        f"<p>Generated {html.escape(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}"
        + (f" (tables computed in {elapsed_s:.1f} s)" if elapsed_s is not None else "")
        + f". Patients: IMRT {n['IMRT']}, 3DCRT {n['3DCRT']}.</p>"
        + f'<p class="cite">Endpoints and tables as defined in: {html.escape(TRIAL_CITATION)}</p>'
    )
    body: list[str] = []
    if inputs:
        body.append(h2("inputs", "Inputs") + "<ul>")
        for label, p in inputs.items():
            body.append(
                f"<li>{html.escape(label)}: <code>{html.escape(str(p))}</code> sha256 {_sha256(Path(p))[:16]}…</li>"
            )
        body.append("</ul>")
    if ep.notes:
        body.append(
            h2("remarks", "Data remarks")
            + "<ul>"
            + "".join(f"<li>{html.escape(x)}</li>" for x in ep.notes)
            + "</ul>"
        )
    further = [k for k in t if k not in _OWN_SECTION and not k.startswith("patient_")]
    body += [
        h2("consort", "Flow of patients (CONSORT counts)"),
        _simple_html(consort, "Patients per arm and timepoint", name="consort"),
        h2("table1", "Table 1: baseline characteristics"),
        _table1_html(t["table1_baseline"], n),
        h2("table2", "Table 2: bone density, irradiated vertebra"),
        _hu_html(
            t["table2_hu_irradiated"],
            "Table 2. Bone density (HU) in metastatic (irradiated) bone at "
            "baseline, 3 and 6 months",
        ),  # fmt: skip
        h2("table3", "Table 3: bone density by lesion type"),
        _hu_html(t["table3_hu_by_lesion"], "Table 3. Bone density (HU) by lesion type"),
        h2("unirradiated", "Bone density of unirradiated vertebrae"),
        _hu_html(t["hu_unirradiated"], "Bone density (HU) in unirradiated vertebrae"),
        h2("fig1", "Figure 1: bone density over time"),
        img(
            "fig_hu_over_time",
            "Fig. 1 Bone density (HU) per arm at baseline (T0), 3 (T2) and 6 months (T3): box plots "
            "with n per arm (top); each patient's time course of the irradiated vertebra per arm "
            "and lesion type (bottom). The paper's Fig. 1 is the CONSORT diagram (counts above).",
        ),
        *(
            [
                "<h3>ANCOVA with repeated measurements</h3>",
                _simple_html(
                    t["hu_repeated_measures"],
                    "HU of the irradiated vertebra: mixed model hu ~ arm * timepoint + OMED, "
                    "random intercept per patient (reference 3DCRT, T0)",
                    name="hu_repeated_measures",
                ),
            ]
            if "hu_repeated_measures" in t
            else []
        ),
        h2("table4", "Table 4: pathological fractures"),
        _table4_html(t["table4_fractures"]),
        h2("fig2", "Figure 2: overall survival"),
        img(
            "fig2_overall_survival",
            "Fig. 2 Overall survival of both arms (Kaplan-Meier, shaded: pointwise 95% CI; "
            "ticks: censored; table: number at risk)",
        ),
        _survival_html(t["survival"], origin, t.get("survival_landmarks")),
        h2("table5", "Table 5: pain response"),
        _table5_html(t["table5_pain_response"]),
        h2("fig3", "Figure 3: VAS and OMED over time"),
        img(
            "fig3_vas_omed",
            "Fig. 3 VAS and OMED of both groups at the measured timepoints (median and IQR; "
            "n = IMRT / 3DCRT alive with a value)",
        ),
        _pain_html(t["pain_over_time"]),
    ]
    if further:
        body.append(h2("further", "Further endpoints"))
        for k in further:
            body.append(_simple_html(t[k], human_header(k), name=k))
    body += [
        h2("methods", "Methods"),
        METHODS,
        *(
            [
                "<p>Conventions of this analysis (each a choice of <code>hu-roi analyze</code>):</p><ul>"
                + "".join(f"<li>{html.escape(m)}</li>" for m in getattr(ep, "methods", []))
                + "</ul>"
            ]
            if getattr(ep, "methods", None)
            else []
        ),
        *(
            [_simple_html(t["analysis_settings"], "Analysis settings", name="analysis_settings")]
            if "analysis_settings" in t
            else []
        ),
        "<h3>OMED conversion table</h3>",
        _simple_html(
            omed_table_frame(),
            "Oral morphine equivalents used for analgesics_Tk columns",
            name="omed",
        ),
        h2("software", "Software") + "<ul>",
        *[f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in _versions().items()],
        "</ul><p>Statistics: <code>hu_roi.analysis.stats</code> (R 4.2 / SAS 9.4 conventions), "
        "Student t-test from scipy.stats.</p>",
    ]
    toc = (
        "<nav><b>Contents</b>: "
        + " · ".join(f'<a href="#{a}">{html.escape(x)}</a>' for a, x in sections)
        + "</nav>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(heading)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(head)}{toc}{''.join(body)}</body></html>"
    )


#: Every table :func:`hu_roi.analysis.endpoints.analyze` can produce (``<name>.csv``).
TABLE_NAMES = (
    "table1_baseline",
    "consort",
    "table2_hu_irradiated",
    "table3_hu_by_lesion",
    "hu_unirradiated",
    "table4_fractures",
    "table5_pain_response",
    "pain_over_time",
    "survival",
    "patient_hu_irradiated",
    "patient_hu_unirradiated",
    "patient_pain_response",
    "hu_repeated_measures",
    *NEW_TABLE_NAMES,
)


def output_names(ep: TrialEndpoints | None = None) -> set[str]:
    """File names :func:`write_outputs` writes (of any run, plus those of ``ep``): an
    existing output folder holding only these may be replaced."""
    tables = set(TABLE_NAMES) | (set(ep.tables) if ep is not None else set())
    return {f"{t}.csv" for t in tables} | {f"{f}.png" for f in FIGURES} | {"report.html"}


def _escaped(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its text cells escaped for spreadsheets (numbers untouched)."""
    from hu_roi.csvtext import escape_cell

    out = table.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            out[c] = out[c].map(lambda v: escape_cell(v) if isinstance(v, str) else v)
    return out


def write_outputs(
    ep: TrialEndpoints,
    out_dir: str | Path,
    *,
    inputs: Mapping[str, Path] | None = None,
    elapsed_s: float | None = None,
    formula_escape: bool = True,
    title: str | None = None,
    banner: str | None = None,
) -> dict[str, Path]:
    """Write every table as CSV, the figures as PNG and ``report.html`` into ``out_dir``.

    The files are made in a temporary folder next to ``out_dir``, which then takes the
    place of ``out_dir`` (:meth:`hu_roi.util.OutputSet.add_folder`): a failed run leaves
    the previous folder as it was, and new tables never mix with an old report.

    Parameters
    ----------
    ep : TrialEndpoints
        From :func:`hu_roi.analysis.endpoints.analyze`.
    out_dir : path
        Created if missing (with its parents).  An existing folder is replaced as a whole;
        it is refused when it holds files this function does not write
        (:func:`output_names`) or one of ``inputs``.
    inputs : mapping, optional
        Label -> input file, listed in the report with their SHA-256.
    elapsed_s : float, optional
        Analysis time stated in the report.
    formula_escape : bool
        Escape text cells a spreadsheet would run as formulas (leading apostrophe).
    title, banner : str, optional
        Heading and synthetic-data (or other) notice of the report (:func:`render_html`).

    The table CSVs carry the report's human column headers and values
    (:func:`present_table`: "not recorded", "not reached", Hodges-Lehmann shifts as
    IMRT - 3DCRT); the per-patient tables keep their machine column names.

    Returns
    -------
    dict
        Name -> written path (``report`` for the HTML).

    Raises
    ------
    hu_roi.util.OutputError
        The folder cannot be written or replaced; nothing was changed.
    """
    from hu_roi.csvtext import derived_number_text
    from hu_roi.util import OutputError, OutputSet, printable

    out = Path(out_dir)
    written: dict[str, Path] = {}
    figs = make_figures(ep)
    page = render_html(
        ep,
        figs,
        inputs=inputs,
        elapsed_s=elapsed_s,
        title=title,
        banner=banner,
    )
    with OutputSet([(f"the {k} input", p) for k, p in (inputs or {}).items()]) as outs:
        build = outs.add_folder(out, own=output_names(ep))
        try:
            for name, table in ep.tables.items():
                shown = present_table(name, table)
                (_escaped(shown) if formula_escape else shown).to_csv(
                    build / f"{name}.csv", index=False, float_format=derived_number_text
                )
                written[name] = out / f"{name}.csv"
            for name, png in figs.items():
                (build / f"{name}.png").write_bytes(png)
                written[name] = out / f"{name}.png"
            (build / "report.html").write_text(page, encoding="utf-8")
            written["report"] = out / "report.html"
        except OSError as exc:  # name the destination, never the temporary folder
            raise OutputError(
                f"cannot write into {printable(out)}: {exc.strerror or type(exc).__name__}; "
                "the folder was left as it was"
            ) from None
    logger.info("wrote %d files to %s", len(written), out)
    return written
