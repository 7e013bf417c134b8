"""``hu-roi analyze``: the trial endpoints from a measurement CSV and a clinical CSV.

The lead wires it into :mod:`hu_roi.cli`::

    from hu_roi.analysis.cli import add_analyze_parser, run_analyze
    add_analyze_parser(subparsers)      # registers "analyze" with func=run_analyze

``hu-roi analyze --measurements M.csv --clinical C.csv --out DIR`` writes a CSV per table,
the PNG figures and ``DIR/report.html``.  Exit 0 on success; 2 with one line on stderr when
an input is missing or does not match its schema.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hu_roi.errors import HuRoiError


def add_analyze_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Register the ``analyze`` subcommand (sets ``func=run_analyze``)."""
    p = subparsers.add_parser(
        "analyze",
        help="trial endpoints (Tables 1-5, figures, HTML report) from measurement + clinical CSVs",
        description="Reproduce the trial's endpoints from a measurement CSV (one row per ROI) "
        "and a clinical CSV (one row per patient). Writes one CSV per table, PNG figures "
        "and a self-contained report.html into --out.",
    )
    p.add_argument(
        "--measurements", required=True, type=Path, help="measurement CSV (hu-roi measure)"
    )
    p.add_argument("--clinical", required=True, type=Path, help="clinical CSV (docs/analysis.md)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument(
        "--omed-tolerance",
        type=float,
        default=0.0,
        metavar="PCT",
        help="OMED change (%% of baseline) still counted as stable analgesics for the Chow "
        "categories (default 0: any increase is an increase)",
    )
    p.add_argument(
        "--repeated-measures",
        action="store_true",
        help="also fit the paper's ANCOVA with repeated measurements (mixed model; slower)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=run_analyze)
    return p


def run_analyze(args: argparse.Namespace) -> int:
    """Run the analysis for parsed arguments; returns the exit code."""
    from hu_roi.analysis.clinical import read_clinical
    from hu_roi.analysis.endpoints import analyze
    from hu_roi.analysis.report import write_outputs
    from hu_roi.analysis.schemas import longitudinal_from_measurements, read_measurements

    t0 = time.perf_counter()
    try:
        meas = read_measurements(args.measurements)
        clin = read_clinical(args.clinical)
        long = longitudinal_from_measurements(meas)
        ep = analyze(
            long,
            clin,
            tolerance_pct=getattr(args, "omed_tolerance", 0.0),
            repeated_measures=getattr(args, "repeated_measures", False),
        )
        written = write_outputs(
            ep,
            args.out,
            inputs={"measurements": args.measurements, "clinical": args.clinical},
            elapsed_s=time.perf_counter() - t0,
        )
    except HuRoiError as exc:
        print(f"hu-roi analyze: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hu-roi analyze: cannot write to {args.out}: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "quiet", False):
        for note in ep.notes:
            print(f"note: {note}")
        print(
            f"wrote {len(written) - 1} tables/figures and {written['report']} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m hu_roi.analysis.cli analyze ...``)."""
    ap = argparse.ArgumentParser(prog="hu-roi")
    sub = ap.add_subparsers(dest="command", required=True)
    add_analyze_parser(sub)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
