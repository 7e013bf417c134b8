"""The ``hu-roi`` command line: the top of the house.

Subcommands: ``index``, ``measure``, ``roi``, ``longitudinal``, ``pseudonymize``,
``analyze``, ``demo``.  Each lives in its own module and depends only on
:mod:`hu_roi.clibase` (errors, common options, error format); this module builds the
parser from them (:mod:`hu_roi.commands`) and runs one.  Exit status 0 when the command
ran (bad files and failed ROIs are reported, not fatal), 2 when it cannot run at all (one
``hu-roi <command>: error: …`` message on stderr says why), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hu_roi import __version__
from hu_roi.clibase import (
    MAX_ERROR_LINES,
    CliError,
    add_formula_escape_option,
    csv_text,
    error_lines,
    input_errors,
    write_csv,
)
from hu_roi.commands import registered
from hu_roi.indexcli import INDEX_COLUMNS, SKIPPED_COLUMNS, index_rows, skipped_path

# Names kept here for code written against the earlier single-module CLI.
__all__ = [
    "INDEX_COLUMNS",
    "MAX_ERROR_LINES",
    "SKIPPED_COLUMNS",
    "CliError",
    "add_formula_escape_option",
    "build_parser",
    "csv_text",
    "error_lines",
    "index_rows",
    "input_errors",
    "main",
    "skipped_path",
    "write_csv",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``hu-roi`` parser with every subcommand of :func:`hu_roi.commands.registered`."""
    parser = argparse.ArgumentParser(
        prog="hu-roi",
        description="Bone density (HU) of vertebral bodies in CT: index DICOM, measure stored "
        "ROIs, build longitudinal tables and the trial's statistics.",
    )
    parser.add_argument("--version", action="version", version=f"hu-roi {__version__}")
    # also accepted after the subcommand (clibase.add_common_options)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in registered():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hu-roi`` console script."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also during the imports, before any work
        print("hu-roi: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # File names that are not valid UTF-8 must not crash a CSV or a message.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="hu-roi: %(levelname)s: %(message)s",
    )
    if not args.verbose:
        # Bad files are reported once, as a skipped file or a failed row with the reason;
        # pydicom's own logs (tracebacks, raw header values) would repeat it on the terminal.
        # Import first: pydicom sets its logger's level when imported.
        import hu_roi.io  # noqa: F401  (the I/O layer owns pydicom)

        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except input_errors() as exc:
        # Cannot run (bad input, no such folder, disk full...): the message, no traceback.
        # Outputs are written all or nothing, so a previous file is left as it was.
        for line in error_lines(args.command, exc):
            print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
