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
from hu_roi.analysis.endpoints import PREFIX, TrialEndpoints
from hu_roi.analysis.pain import omed_table_frame

logger = logging.getLogger(__name__)

ARM_COLOURS = {"IMRT": "#1f77b4", "3DCRT": "#d62728"}
FIGURES = ("fig2_overall_survival", "fig3_vas_omed", "fig_hu_over_time")


def _fmt_p(p: object) -> str:
    if p is None or pd.isna(p):  # type: ignore[arg-type]
        return ""
    p = float(p)  # type: ignore[arg-type]
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _fmt(x: object, digits: int = 1) -> str:
    if x is None or pd.isna(x):  # type: ignore[arg-type]
        return ""
    if isinstance(x, int | np.integer):
        return str(int(x))
    return f"{float(x):.{digits}f}"  # type: ignore[arg-type]


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


def make_figures(ep: TrialEndpoints) -> dict[str, bytes]:
    """Render the figures as PNG bytes.

    Returns
    -------
    dict
        ``fig2_overall_survival`` (Kaplan-Meier per arm), ``fig3_vas_omed`` (VAS and OMED
        median and IQR per arm over time), ``fig_hu_over_time`` (HU of irradiated and
        unirradiated index vertebrae per arm at T0/T2/T3).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    # Fig. 2: overall survival
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for arm, km in ep.survival.curves.items():
        t = np.concatenate([[0.0], km.time])
        s = np.concatenate([[1.0], km.survival])
        ax.step(t, s, where="post", color=ARM_COLOURS[arm], label=f"{arm} (n={int(km.n_risk[0])})")
        cens = km.n_censor > 0
        ax.plot(km.time[cens], km.survival[cens], "|", color=ARM_COLOURS[arm], ms=8)
    p = ep.survival.logrank.p_value if ep.survival.logrank is not None else np.nan
    ax.set_xlabel("months since diagnosis")
    ax.set_ylabel("overall survival")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Overall survival (log-rank p = {_fmt_p(p)})")
    ax.legend(loc="upper right")
    out["fig2_overall_survival"] = _png(fig)

    # Fig. 3: VAS and OMED over time
    pot = ep.tables["pain_over_time"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
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
        ax.set_xticks(
            x,
            [f"{tp}\np={_fmt_p(pv)}" for tp, pv in zip(d["timepoint"], d["p_value"], strict=True)],
        )
        ax.set_ylabel(unit + ", median and IQR")
        ax.set_title(measure)
        ax.legend()
    fig.suptitle("Pain (VAS) and oral morphine equivalent dose per arm (rank-sum p)")
    out["fig3_vas_omed"] = _png(fig)

    # HU over time
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    for ax, key, title in (
        (axes[0], "patient_hu_irradiated", "Irradiated (metastatic) vertebra"),
        (axes[1], "patient_hu_unirradiated", "Unirradiated vertebra"),
    ):
        d = ep.tables[key]
        pos = 0.0
        ticks, labels = [], []
        for tp in ("T0", "T2", "T3"):
            for k, arm in enumerate(ARMS):
                vals = d.loc[d["arm"] == arm, f"hu_{tp}"].dropna().to_numpy(float) if len(d) else []
                if len(vals):
                    bp = ax.boxplot(
                        [vals], positions=[pos + k * 0.4], widths=0.35, patch_artist=True
                    )
                    for b in bp["boxes"]:
                        b.set_facecolor(ARM_COLOURS[arm])
                        b.set_alpha(0.5)
            ticks.append(pos + 0.2)
            labels.append(tp)
            pos += 1.2
        ax.set_xticks(ticks, labels)
        ax.set_ylabel("HU (mean in ROI)")
        ax.set_title(title)
        handles = [plt.Rectangle((0, 0), 1, 1, color=ARM_COLOURS[a], alpha=0.5) for a in ARMS]
        ax.legend(handles, ARMS)
    out["fig_hu_over_time"] = _png(fig)
    return out


# --------------------------------------------------------------------------- HTML tables


def _table(header: Sequence[Sequence[tuple[str, int]]], rows: Sequence[Sequence[str]], *,
           caption: str, note: str = "") -> str:  # fmt: skip
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
            b.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    foot = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead>{''.join(h)}</thead>"
        f"<tbody>{''.join(b)}</tbody></table>{foot}"
    )


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
            ("test", 1),
            ("p-value", 1),
        ],
    ]
    rows: list[list[str]] = []
    group = None
    for _, r in t.iterrows():
        if r["group"] and r["group"] != group:
            group = r["group"]
            rows.append([group])
        if r["level"] == "mean (SD)":
            rows.append([r["variable"], "mean (SD)", r["imrt_summary"], "", r["crt_summary"], "",
                         r["test"], _fmt_p(r["p_value"])])  # fmt: skip
        else:
            label = r["variable"] if r["level"] == "yes" else r["variable"] if r["test"] else ""
            level = "" if r["level"] == "yes" else r["level"]
            rows.append([label, level, str(r["imrt_n"]), _fmt(r["imrt_pct"]), str(r["crt_n"]),
                         _fmt(r["crt_pct"]), "chi-square" if r["test"] else "", _fmt_p(r["p_value"])])  # fmt: skip
    return _table(header, rows, caption="Table 1. Baseline characteristics of randomly assigned participants",
                  note="Continuous: mean (SD), Student t-test (pooled) or Wilcoxon rank-sum (KPS); "
                  "categorical: Pearson chi-square without continuity correction.")  # fmt: skip


def _hu_html(t: pd.DataFrame, caption: str) -> str:
    header = [
        [("", 1), ("IMRT group", 4), ("3DCRT group", 4), ("Differences between groups", 4)],
        [("", 1), ("n", 1), ("Median", 1), ("SD", 1), ("p within", 1), ("n", 1), ("Median", 1),
         ("SD", 1), ("p within", 1), ("HL", 1), ("HL of", 1), ("95% CI", 1), ("p-value", 1)],
    ]  # fmt: skip
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
        rows.append(
            [r["quantity"], _fmt(r["imrt_n"]), _fmt(r["imrt_median"]), _fmt(r["imrt_sd"]),
             _fmt_p(r["imrt_p_within"]), _fmt(r["crt_n"]), _fmt(r["crt_median"]), _fmt(r["crt_sd"]),
             _fmt_p(r["crt_p_within"]), _fmt(r["hl"]), r["hl_of"], _ci(r["ci_low"], r["ci_high"]),
             _fmt_p(r["p_between"])]
        )  # fmt: skip
    return _table(header, rows, caption=caption,
                  note="T0-T2 / T0-T3: change from baseline to 3 / 6 months (follow-up minus baseline, "
                  "positive = denser). p within: Wilcoxon signed-rank; between groups: Wilcoxon rank-sum "
                  "with Hodges-Lehmann shift and asymptotic (Moses) 95% CI as SAS PROC NPAR1WAY computes "
                  "them; 'HL of' names the difference (SAS takes the smaller group, or IMRT when equal, "
                  "as reference).")  # fmt: skip


def _table4_html(t: pd.DataFrame) -> str:
    header = [
        [("", 1), ("IMRT group", 4), ("3DCRT group", 4), ("", 1)],
        [("", 1), ("n", 1), ("No", 1), ("Yes", 1), ("of which VCF", 1), ("n", 1), ("No", 1),
         ("Yes", 1), ("of which VCF", 1), ("p-value", 1)],
    ]  # fmt: skip
    rows = []
    for _, r in t.iterrows():
        row = [r["label"]]
        for p in ("imrt", "crt"):
            n = r[f"{p}_n"]
            row += [str(n), f"{r[f'{p}_no']} ({_fmt(100 - r[f'{p}_pct_yes'])}%)" if n else "",
                    f"{r[f'{p}_yes']} ({_fmt(r[f'{p}_pct_yes'])}%)" if n else "", str(r[f"{p}_vcf"])]  # fmt: skip
        row.append(_fmt_p(r["p_value"]))
        rows.append(row)
    return _table(header, rows, caption="Table 4. Pathological fractures of both groups",
                  note="n = alive participants with known status. Yes = pathologic fracture reported "
                  "(fracture_Tk) or vertebral compression fracture (> 20% loss of anterior, middle or "
                  "posterior vertebral body height vs baseline). Pearson chi-square, no correction.")  # fmt: skip


def _table5_html(t: pd.DataFrame) -> str:
    parts = []
    for tp, d in t.groupby("timepoint", sort=True):
        first = d.iloc[0]
        header = [
            [(f"After {first['label']}", 1), (f"IMRT group n = {first['imrt_total']}", 2),
             (f"3DCRT group n = {first['crt_total']}", 2), ("", 1)],
            [("", 1), ("n", 1), ("%", 1), ("n", 1), ("%", 1), ("p-value", 1)],
        ]  # fmt: skip
        rows = [
            [r["category"], str(r["imrt_n"]), _fmt(r["imrt_pct"]), str(r["crt_n"]), _fmt(r["crt_pct"]),
             _fmt_p(r["p_value"])]
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
        "on the Responders row: responders vs non-responders (Pearson, no correction).</p>"
    )


def _simple_html(t: pd.DataFrame, caption: str, p_cols: Sequence[str] = ("p_value",)) -> str:
    header = [[(str(c), 1) for c in t.columns]]
    rows = []
    for _, r in t.iterrows():
        rows.append([_fmt_p(r[c]) if c in p_cols else (_fmt(r[c], 2) if isinstance(r[c], float) else str(r[c]))
                     for c in t.columns])  # fmt: skip
    return _table(header, rows, caption=caption)


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
<li><b>Within-arm change</b>: Wilcoxon signed-rank test (R <code>wilcox.test(x)</code>, exact when
n &lt; 50 without ties/zeros). <b>Between arms</b>: Wilcoxon rank-sum test with Hodges-Lehmann shift
and asymptotic (Moses) 95% confidence limits as SAS PROC NPAR1WAY <code>WILCOXON HL</code> computes
them (continuity-corrected normal p-value; reference group = smaller group, IMRT when equal).</li>
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
<li><b>VAS / OMED</b> between arms per timepoint: Wilcoxon rank-sum (SAS normal approximation).</li>
<li><b>Overall survival</b>: diagnosis to death, censored at last contact (months = days / 30.4375);
Kaplan-Meier per arm (R <code>survfit</code> conventions), log-rank test (R <code>survdiff</code>).</li>
</ul>
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0} td:first-child{text-align:left}
tr.section td{text-align:left;font-style:italic;background:#fafafa}
p.note{font-size:12px;color:#555;max-width:1000px}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
code{background:#f4f4f4;padding:0 2px}
"""


def render_html(
    ep: TrialEndpoints,
    figures: Mapping[str, bytes],
    *,
    inputs: Mapping[str, Path] | None = None,
    elapsed_s: float | None = None,
) -> str:
    """The report as one HTML string (figures inlined as base64 PNG)."""
    t = ep.tables
    n = {a: int((t["patient_pain_response"]["arm"] == a).sum()) for a in ARMS}

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
    body = [
        "<h1>hu-roi: trial endpoints (IMRT vs 3DCRT, NCT02832830 design)</h1>",
        f"<p>Generated {html.escape(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}"
        + (f" (tables computed in {elapsed_s:.1f} s)" if elapsed_s is not None else "")
        + f". Patients: IMRT {n['IMRT']}, 3DCRT {n['3DCRT']}.</p>",
    ]
    if inputs:
        body.append("<h2>Inputs</h2><ul>")
        for label, p in inputs.items():
            body.append(
                f"<li>{html.escape(label)}: <code>{html.escape(str(p))}</code> sha256 {_sha256(Path(p))[:16]}…</li>"
            )
        body.append("</ul>")
    if ep.notes:
        body.append(
            "<h2>Data remarks</h2><ul>"
            + "".join(f"<li>{html.escape(x)}</li>" for x in ep.notes)
            + "</ul>"
        )
    body += [
        "<h2>Flow of patients (CONSORT counts)</h2>",
        _simple_html(consort, "Patients per arm and timepoint", p_cols=()),
        "<h2>Table 1</h2>",
        _table1_html(t["table1_baseline"], n),
        "<h2>Table 2</h2>",
        _hu_html(
            t["table2_hu_irradiated"],
            "Table 2. Bone density (HU) in metastatic (irradiated) bone at "
            "baseline, 3 and 6 months",
        ),  # fmt: skip
        "<h2>Table 3</h2>",
        _hu_html(t["table3_hu_by_lesion"], "Table 3. Bone density (HU) by lesion type"),
        "<h2>Unirradiated vertebrae</h2>",
        _hu_html(t["hu_unirradiated"], "Bone density (HU) in unirradiated vertebrae"),
        img("fig_hu_over_time", "HU per arm at T0, T2, T3 (box plots)"),
        *(
            [
                "<h3>ANCOVA with repeated measurements</h3>",
                _simple_html(
                    t["hu_repeated_measures"],
                    "HU of the irradiated vertebra: mixed model hu ~ arm * timepoint + OMED, "
                    "random intercept per patient (reference 3DCRT, T0)",
                ),
            ]
            if "hu_repeated_measures" in t
            else []
        ),
        "<h2>Table 4</h2>",
        _table4_html(t["table4_fractures"]),
        "<h2>Table 5</h2>",
        _table5_html(t["table5_pain_response"]),
        "<h2>Figure 3: VAS and OMED over time</h2>",
        img("fig3_vas_omed", "Fig. 3 OMED and VAS of both groups at measured points"),
        _simple_html(
            t["pain_over_time"], "VAS and OMED per arm and timepoint (Wilcoxon rank-sum p)"
        ),
        "<h2>Figure 2: Overall survival</h2>",
        img("fig2_overall_survival", "Fig. 2 Overall survival of both arms (Kaplan-Meier)"),
        _simple_html(t["survival"], "Overall survival (months from diagnosis), log-rank test"),
        "<h2>Methods</h2>",
        METHODS,
        "<h3>OMED conversion table</h3>",
        _simple_html(
            omed_table_frame(),
            "Oral morphine equivalents used for analgesics_Tk columns",
            p_cols=(),
        ),
        "<h2>Software</h2><ul>",
        *[f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in _versions().items()],
        "</ul><p>Statistics: <code>hu_roi.analysis.stats</code> (R 4.2 / SAS 9.4 conventions), "
        "Student t-test from scipy.stats.</p>",
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>hu-roi trial endpoints</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
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
    page = render_html(ep, figs, inputs=inputs, elapsed_s=elapsed_s)
    with OutputSet([(f"the {k} input", p) for k, p in (inputs or {}).items()]) as outs:
        build = outs.add_folder(out, own=output_names(ep))
        try:
            for name, table in ep.tables.items():
                (_escaped(table) if formula_escape else table).to_csv(
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
