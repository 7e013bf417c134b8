"""``hu-roi demo``: the whole pipeline on the bundled sample data, from DICOM to statistics.

1. ``hu-roi index`` of the synthetic CT cohort in ``sample_dicom/dicom``;
2. ``hu-roi measure`` of its stored ROI set (``sample_dicom/rois``), calibration checks included,
   with the plans' RT doses (``sample_dicom/rtdose``, ``--prescription-gy 30``);
3. ``hu-roi longitudinal`` of those measurements, printed as a short table;
4. the trial analysis of that longitudinal table itself (3 synthetic patients with invented
   clinical data, ``sample_clinical.csv``) into ``sample_analysis/``: DICOM -> statistics;
5. the trial analysis of a synthetic 60-patient trial (``hu_roi.analysis.synthetic``, its
   tables in ``trial_data/``) into the trial's tables, figures and HTML report (``trial/``).

Both reports say in their title and in a banner that the patients are synthetic, and cite
the trial whose design they follow (:data:`hu_roi.analysis.report.TRIAL_CITATION`).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hu_roi.clibase import CliError, add_common_options, plural

if TYPE_CHECKING:
    import pandas as pd

#: The bundled synthetic cohort (see scripts/make_sample_dicom.py).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_dicom"

TRIAL_TITLE = "SYNTHETIC DATA - hu-roi demo: endpoints of 60 synthetic patients (IMRT vs 3DCRT)"
TRIAL_BANNER = (
    "Synthetic data. The 60 patients of this report are invented (hu_roi.analysis.synthetic) "
    "to match the counts published for the randomised trial NCT02832830 (Sprave et al., "
    "Radiation Oncology 2018, doi:10.1186/s13014-018-1161-4). No value comes from a real "
    "patient; the statistics show what hu-roi computes, not the trial's results."
)
SAMPLE_TITLE = "SYNTHETIC DATA - hu-roi demo: analysis of the 3 sample patients measured from DICOM"
SAMPLE_BANNER = (
    "Synthetic data. HU values were measured by this demo from the bundled synthetic CT "
    "cohort (sample_dicom/, patients P01-P03); their clinical data (sample_clinical.csv) are "
    "invented. With 3 patients most tests cannot be computed: this report shows the chain "
    "from DICOM to statistics, not a result."
)


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the bundled sample data",
        description="Index, measure and tabulate the bundled sample CT cohort, then analyse "
        "a synthetic 60-patient trial; prints where the outputs are.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder")
    p.add_argument("--sample", default=str(SAMPLE_DIR), metavar="DIR", help=argparse.SUPPRESS)
    add_common_options(p, quiet_help="no progress bars")
    p.set_defaults(func=run_demo)


def _summary(longitudinal_csv: Path) -> list[str]:
    """A few lines of the longitudinal table for the terminal."""
    with open(longitudinal_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("kind", "target") == "target"]

    def num(v: str | None, fmt: str) -> str:
        return format(float(v), fmt) if v not in (None, "") else "–"

    lines = [
        f"    {'patient':7} {'level':5} {'irr':3} {'lesion':12} {'HU T0':>7} {'HU T2':>7} "
        f"{'HU T3':>7} {'%Δ T3':>7}  flags"
    ]
    for r in rows:
        lines.append(
            f"    {r['patient_id']:7} {r['level']:5} {'yes' if r['irradiated'] in ('True', 'true', '1') else 'no':3} "
            f"{(r.get('lesion_type') or '')[:12]:12} {num(r.get('hu_T0'), '7.1f')} "
            f"{num(r.get('hu_T2'), '7.1f')} {num(r.get('hu_T3'), '7.1f')} "
            f"{num(r.get('pct_delta_T3'), '7.1f')}  {r.get('flags', '')}"
        )
    return lines


def run_step(argv: list[str]) -> int:
    """Run one pipeline step (``index``, ``measure``, ``longitudinal`` or ``analyze``) as
    the command line would, from the command modules themselves: the demo sits beside
    them, below :mod:`hu_roi.cli`."""
    from hu_roi.analysis.cli import add_analyze_parser
    from hu_roi.batch import add_measure_parser
    from hu_roi.indexcli import add_index_parser
    from hu_roi.longitudinal import add_longitudinal_parser

    parser = argparse.ArgumentParser(prog="hu-roi")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_index_parser, add_measure_parser, add_longitudinal_parser, add_analyze_parser):
        add(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def sample_clinical(longitudinal_csv: Path) -> pd.DataFrame:
    """Invented clinical rows for the patients of the sample cohort's longitudinal table.

    Each patient gets the clinical row of a synthetic trial patient who is alive with a pain
    score at 6 months (:func:`hu_roi.analysis.synthetic.make_trial`), arms alternating IMRT,
    3DCRT, IMRT, ... in patient order, so that both arms are present.  Deterministic.

    Parameters
    ----------
    longitudinal_csv : path
        ``hu-roi longitudinal`` output of the sample cohort.

    Returns
    -------
    pandas.DataFrame
        One clinical row per patient (columns of the clinical CSV, docs/analysis.md).
    """
    import pandas as pd

    from hu_roi.analysis.clinical import ARMS
    from hu_roi.analysis.synthetic import make_trial

    patients = sorted(set(pd.read_csv(longitudinal_csv, dtype=str)["patient_id"].dropna()))
    _, clin = make_trial()

    def empty(col: str) -> pd.Series:
        return clin[col].isna() | (clin[col].astype(str) == "")

    alive = empty("date_death") & ~empty("vas_T3")
    pools = {arm: clin.loc[alive & (clin["arm"] == arm)] for arm in ARMS}
    rows = []
    for k, pid in enumerate(patients):
        arm = ARMS[k % 2]
        row = pools[arm].iloc[k // 2].copy()
        row["patient_id"] = pid
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def _analyze(
    hu_csv: Path, clinical_csv: Path, out: Path, *, title: str, banner: str, quiet: bool
) -> None:
    """``hu-roi analyze`` of a measurement or longitudinal CSV, with the demo's title and
    synthetic-data banner in the report (the command line has no such options)."""
    from hu_roi.analysis.clinical import read_clinical
    from hu_roi.analysis.endpoints import analyze
    from hu_roi.analysis.report import output_names, write_outputs
    from hu_roi.analysis.schemas import (
        longitudinal_from_measurements,
        read_longitudinal,
        read_measurements,
    )
    from hu_roi.util import OutputSet

    t0 = time.perf_counter()
    inputs = {"HU": hu_csv, "clinical": clinical_csv}
    OutputSet([(f"the {k} input", p) for k, p in inputs.items()]).check_folder(
        out, own=output_names()
    )
    with open(hu_csv, encoding="utf-8") as fh:
        is_longitudinal = "hu_T0" in fh.readline().split(",")
    long = (
        read_longitudinal(hu_csv)
        if is_longitudinal
        else longitudinal_from_measurements(read_measurements(hu_csv))
    )
    ep = analyze(long, read_clinical(clinical_csv))
    written = write_outputs(
        ep, out, inputs=inputs, elapsed_s=time.perf_counter() - t0, title=title, banner=banner
    )
    if not quiet:
        for note in ep.notes:
            print(f"note: {note}")
        print(f"wrote {len(written) - 1} tables and figures and {written['report']}")


def run_demo(args: argparse.Namespace) -> int:
    from hu_roi.analysis.synthetic import make_trial
    from hu_roi.csvtext import number_text
    from hu_roi.util import OutputSet

    sample = Path(args.sample)
    dicom, rois = sample / "dicom", sample / "rois"
    if not dicom.is_dir() or not rois.is_dir():
        raise CliError(f"sample data not found in {sample}; run scripts/make_sample_dicom.py")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = ["--quiet"] if getattr(args, "quiet", False) else []
    t0 = time.perf_counter()

    def step(argv: list[str]) -> None:
        # the step's own error (an HuRoiError, OSError...) reaches the CLI as this
        # command's one-line error
        status = run_step(argv)
        if status != 0:
            raise CliError(f"step 'hu-roi {' '.join(argv)}' failed with status {status}")

    print(f"[1/5] index {dicom}")
    step(["index", str(dicom), "--out", str(out / "index.csv"), *quiet])
    # the plans' RT doses (one per patient, on its baseline CT): dose columns, and the
    # irradiated labels checked against 50 % of the 30 Gy prescription
    doses = sorted((sample / "rtdose").glob("*.dcm"))
    dose_args = [a for d in doses for a in ("--rtdose", str(d))]
    if doses:
        dose_args += ["--prescription-gy", "30"]
    print(
        f"[2/5] measure the stored ROI set {rois}"
        + (f" with {plural(len(doses), 'RT dose')}" if doses else "")
    )
    step(
        [
            "measure",
            "--dicom",
            str(dicom),
            "--rois",
            str(rois),
            *dose_args,
            "--out",
            str(out / "measurements.csv"),
            *quiet,
        ]
    )
    print("[3/5] longitudinal table (HU per timepoint, change vs T0)")
    step(
        [
            "longitudinal",
            str(out / "measurements.csv"),
            "--out",
            str(out / "longitudinal.csv"),
            *quiet,
        ]
    )
    print("\n".join(_summary(out / "longitudinal.csv")))
    print("[4/5] trial analysis of these measurements (3 sample patients, invented clinical data)")
    sample_clin = out / "sample_clinical.csv"
    with OutputSet() as outs:
        outs.add(sample_clin, sample_clinical(out / "longitudinal.csv").to_csv(index=False))
    _analyze(
        out / "longitudinal.csv",
        sample_clin,
        out / "sample_analysis",
        title=SAMPLE_TITLE,
        banner=SAMPLE_BANNER,
        quiet=bool(quiet),
    )
    print("[5/5] trial analysis of a synthetic 60-patient trial (paper's counts)")
    # the input tables beside the report folder, not in it: the analysis replaces its folder
    trial, data = out / "trial", out / "trial_data"
    meas, clin = data / "measurements.csv", data / "clinical.csv"
    meas_df, clin_df = make_trial()
    with OutputSet() as outs:
        outs.add(meas, meas_df.to_csv(index=False, float_format=number_text))
        outs.add(clin, clin_df.to_csv(index=False, float_format=number_text))
    _analyze(meas, clin, trial, title=TRIAL_TITLE, banner=TRIAL_BANNER, quiet=bool(quiet))
    print(f"\ndone in {time.perf_counter() - t0:.1f} s; outputs in {out.resolve()}:")
    for name, what in [
        ("index.csv", "series found, with their problems (index.skipped.csv: files skipped)"),
        ("measurements.csv", "one row per ROI: HU statistics, calibration and QC flags"),
        ("longitudinal.csv", "patient × level: HU at T0..T3, ΔHU and %Δ vs T0"),
        ("sample_analysis/report.html", "statistics of the 3 measured sample patients"),
        ("trial/report.html", "the trial's Tables 1-5 and figures (open in a browser)"),
        ("trial_data", "the synthetic trial's measurement and clinical CSVs analysed"),
    ]:
        print(f"  {out / name}  — {what}")
    sys.stdout.flush()
    return 0
