"""``hu-roi demo``: the whole pipeline on the bundled sample data.

1. ``hu-roi index`` of the synthetic CT cohort in ``sample_dicom/dicom``;
2. ``hu-roi measure`` of its stored ROI set (``sample_dicom/rois``), calibration checks included;
3. ``hu-roi longitudinal`` of those measurements, printed as a short table;
4. ``hu-roi analyze`` of a synthetic 60-patient trial (``hu_roi.analysis.synthetic``, its
   tables in ``trial_data/``) into the trial's tables, figures and HTML report (``trial/``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from hu_roi.clibase import CliError, add_common_options

#: The bundled synthetic cohort (see scripts/make_sample_dicom.py).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_dicom"


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

    print(f"[1/4] index {dicom}")
    step(["index", str(dicom), "--out", str(out / "index.csv"), *quiet])
    print(f"[2/4] measure the stored ROI set {rois}")
    step(
        [
            "measure",
            "--dicom",
            str(dicom),
            "--rois",
            str(rois),
            "--out",
            str(out / "measurements.csv"),
            *quiet,
        ]
    )
    print("[3/4] longitudinal table (HU per timepoint, change vs T0)")
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
    print("[4/4] trial analysis of a synthetic 60-patient trial (paper's counts)")
    # the input tables beside the report folder, not in it: analyze replaces its folder
    trial, data = out / "trial", out / "trial_data"
    meas, clin = data / "measurements.csv", data / "clinical.csv"
    meas_df, clin_df = make_trial()
    with OutputSet() as outs:
        outs.add(meas, meas_df.to_csv(index=False, float_format=number_text))
        outs.add(clin, clin_df.to_csv(index=False, float_format=number_text))
    step(
        [
            "analyze",
            "--measurements",
            str(meas),
            "--clinical",
            str(clin),
            "--out",
            str(trial),
            *quiet,
        ]
    )
    print(f"\ndone in {time.perf_counter() - t0:.1f} s; outputs in {out.resolve()}:")
    for name, what in [
        ("index.csv", "series found, with their problems (index.skipped.csv: files skipped)"),
        ("measurements.csv", "one row per ROI: HU statistics, calibration and QC flags"),
        ("longitudinal.csv", "patient × level: HU at T0..T3, ΔHU and %Δ vs T0"),
        ("trial/report.html", "the trial's Tables 1-5 and figures (open in a browser)"),
        ("trial_data", "the synthetic trial's measurement and clinical CSVs analysed"),
    ]:
        print(f"  {out / name}  — {what}")
    sys.stdout.flush()
    return 0
