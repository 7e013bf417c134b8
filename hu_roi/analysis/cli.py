"""``hu-roi analyze``: the trial endpoints from a measurement CSV and a clinical CSV.

``hu-roi analyze --measurements M.csv --clinical C.csv --out DIR`` writes a CSV per table,
the PNG figures and ``DIR/report.html``.  DIR is built as a whole in a temporary folder and
then takes the place of the old one (a failed run leaves the old one as it was).  Exit 0
on success; 2 with the ``hu-roi analyze: error:`` message of :mod:`hu_roi.clibase` when an
input is missing or does not match its schema, or DIR cannot be written (it holds an input
or files ``analyze`` does not write).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hu_roi.clibase import add_common_options, add_formula_escape_option, plural


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
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder (created; an existing one is replaced as a whole, and refused when "
        "it holds other files or an input)",
    )
    p.add_argument(
        "--omed-tolerance",
        type=float,
        default=0.0,
        metavar="PCT",
        help="OMED change (%% of baseline) still counted as stable analgesics for the Chow "
        "categories (default 0: any increase is an increase)",
    )
    p.add_argument(
        "--within-test",
        choices=("r-default", "r-normal", "sas"),
        default="r-default",
        help="within-arm signed-rank test of the HU changes: r-default = R wilcox.test "
        "(exact for n < 50 without ties or zeros; default), r-normal = R normal approximation "
        "with continuity correction, sas = SAS PROC UNIVARIATE (exact n <= 20, t above)",
    )
    p.add_argument(
        "--between",
        choices=("sas", "r"),
        default="sas",
        help="between-arm rank-sum test and Hodges-Lehmann interval: sas = SAS NPAR1WAY with "
        "asymptotic Moses limits (default, the paper's), r = R wilcox.test(conf.int=TRUE)",
    )
    p.add_argument(
        "--os-origin",
        choices=("diagnosis", "rt", "columns"),
        default="diagnosis",
        help="origin of overall survival: diagnosis = date_diagnosis (default, the paper's), "
        "rt = date_rt (start of RT), columns = os_months and os_event of the clinical CSV",
    )
    p.add_argument(
        "--include-hu-after-death",
        action="store_true",
        help="use HU measured at a timepoint whose nominal date is after the patient's death "
        "(default: left out, with a note)",
    )
    p.add_argument(
        "--repeated-measures",
        action="store_true",
        help="also fit the paper's ANCOVA with repeated measurements (mixed model; slower)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--lsc",
        type=float,
        metavar="HU",
        help="the reader's least significant change (HU), stated in the report's Methods",
    )
    g.add_argument(
        "--precision",
        type=Path,
        metavar="reliability.csv",
        help="take the LSC from the reliability.csv of hu-roi reliability",
    )
    add_common_options(p, quiet_help="print nothing on success")
    add_formula_escape_option(p)
    p.set_defaults(func=run_analyze)
    return p


def run_analyze(args: argparse.Namespace) -> int:
    """Run the analysis for parsed arguments; returns the exit code (0, or 2 with the
    ``hu-roi analyze: error: …`` message of :func:`hu_roi.clibase.error_lines` on stderr
    when an input is unusable or the output folder cannot be written)."""
    from hu_roi.clibase import error_lines, input_errors

    try:
        return _run_analyze(args)
    except input_errors() as exc:
        for line in error_lines("analyze", exc):
            print(line, file=sys.stderr)
        return 2


def _run_analyze(args: argparse.Namespace) -> int:
    from hu_roi.analysis.clinical import read_clinical
    from hu_roi.analysis.endpoints import analyze
    from hu_roi.analysis.report import output_names, write_outputs
    from hu_roi.analysis.schemas import longitudinal_from_measurements, read_measurements
    from hu_roi.util import OutputSet

    t0 = time.perf_counter()
    inputs = {"measurements": args.measurements, "clinical": args.clinical}
    # before the work: an output folder that holds an input or other files is refused
    from hu_roi.analysis.endpoints import NEW_TABLE_NAMES

    own = output_names() | {f"{name}.csv" for name in NEW_TABLE_NAMES}
    OutputSet([(f"the {k} input", p) for k, p in inputs.items()]).check_folder(args.out, own=own)
    meas = read_measurements(args.measurements)
    clin = read_clinical(args.clinical)
    long = longitudinal_from_measurements(meas)
    ep = analyze(
        long,
        clin,
        tolerance_pct=getattr(args, "omed_tolerance", 0.0),
        repeated_measures=getattr(args, "repeated_measures", False),
        within_test=getattr(args, "within_test", "r-default"),
        between=getattr(args, "between", "sas"),
        os_origin=getattr(args, "os_origin", "diagnosis"),
        hu_after_death=getattr(args, "include_hu_after_death", False),
        measurements=meas,
    )
    lsc_text = _lsc_sentence(args)
    if lsc_text:
        ep.methods.append(lsc_text)
    written = write_outputs(
        ep,
        args.out,
        inputs=inputs,
        elapsed_s=time.perf_counter() - t0,
        formula_escape=getattr(args, "formula_escape", True),
    )
    if not getattr(args, "quiet", False):
        for note in ep.notes:
            print(f"note: {note}")
        print(
            f"wrote {plural(len(written) - 1, 'table or figure', 'tables and figures')} and "
            f"{written['report']} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return 0


def _lsc_sentence(args: argparse.Namespace) -> str:
    """The Methods sentence for ``--lsc`` / ``--precision`` ("" when neither is given)."""
    import math

    from hu_roi.clibase import CliError

    lsc, source = getattr(args, "lsc", None), "given with --lsc"
    if getattr(args, "precision", None) is not None:
        from hu_roi.longitudinal import read_precision_lsc

        lsc = read_precision_lsc(args.precision)
        source = f"from the reader-reliability study {args.precision.name}"
    if lsc is None:
        return ""
    if not (math.isfinite(lsc) and lsc > 0):
        raise CliError(f"--lsc must be a number of HU > 0; got {lsc:g}")
    return (
        f"Least significant change (LSC) of the reading: {lsc:g} HU ({source}; "
        "LSC = 2.77 x precision SD). A change in HU smaller than the LSC is within the "
        "reader's measurement noise (hu-roi longitudinal --lsc flags such changes "
        "below-lsc-Tk)."
    )


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m hu_roi.analysis.cli analyze ...``): the same as
    ``hu-roi analyze ...``, with its error messages and exit codes."""
    parser = argparse.ArgumentParser(prog="hu-roi")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_analyze_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
