"""The ``hu-roi`` command line: the top of the house.

Subcommands: those of :func:`hu_roi.commands.registered` (``index``, ``measure``, ``roi``,
``longitudinal``, ...).  Each lives in its own module and depends only on
:mod:`hu_roi.clibase` (errors, common options, error format); this module builds the
parser from them and runs one.  Only the module of the subcommand being run is imported
(the others are listed by name and help), so ``hu-roi --help`` imports no command module,
numpy or pydicom.  Exit status 0 when the command ran (bad files and failed ROIs are
reported, not fatal), 2 when it cannot run at all (one ``hu-roi <command>: error: …``
message on stderr says why), 130 on Ctrl-C.
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
from hu_roi.commands import Command, parser_builder, registered

# Names kept here for code written against the earlier single-module CLI; those of
# ``hu-roi index`` (INDEX_COLUMNS, SKIPPED_COLUMNS, index_rows, skipped_path) are still
# importable from here, through __getattr__ (imported on first use).
__all__ = [
    "MAX_ERROR_LINES",
    "CliError",
    "add_formula_escape_option",
    "build_parser",
    "csv_text",
    "error_lines",
    "input_errors",
    "main",
    "write_csv",
]


def __getattr__(name: str) -> object:
    """The names of ``hu-roi index`` kept here, imported on first use (start-up time)."""
    if name in _FROM_INDEXCLI:
        from hu_roi import indexcli

        return getattr(indexcli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_FROM_INDEXCLI = frozenset({"INDEX_COLUMNS", "SKIPPED_COLUMNS", "index_rows", "skipped_path"})


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``hu-roi`` parser with every subcommand of :func:`hu_roi.commands.registered`.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments about to be parsed.  When given, only the subcommand they name gets
        its full parser (its module is imported); the others are stubs with their name and
        help, enough for ``hu-roi --help`` and for argparse's "invalid choice" message.
        When None, every subcommand's full parser is built.
    """
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
    chosen = None if argv is None else _command_word(argv)
    for entry in registered():
        if not isinstance(entry, Command):  # an add_*_parser function: built eagerly
            entry(sub)
        elif argv is None or entry.name == chosen:
            parser_builder(entry)(sub)
        else:
            sub.add_parser(entry.name, help=entry.help)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The word argparse takes as the subcommand: the first argument that is not an option.

    The top-level options (``-h``, ``--version``, ``-v``, ``-q``) take no value, so the
    first argument not starting with ``-`` (or a lone ``-`` / ``--``, which argparse also
    reads as the command) is the subcommand's name.
    """
    for arg in argv:
        if arg in ("-", "--") or not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hu-roi`` console script."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also during the imports, before any work
        print("hu-roi: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # File names that are not valid UTF-8 must not crash a CSV or a message.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    ours = not logging.getLogger().handlers  # basicConfig adds a handler only then
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="hu-roi: %(levelname)s: %(message)s",
    )
    if not args.verbose:
        # Bad files are reported once, as a skipped file or a failed row with the reason;
        # pydicom's own logs (tracebacks, raw header values) would repeat it on the terminal.
        _quiet_pydicom(logging.getLogger().handlers if ours else [])
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


class _BelowCritical(logging.Filter):
    """Drops the records of one logger and its children below CRITICAL."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.prefix = name + "."
        self.logger = name

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == self.logger or record.name.startswith(self.prefix)
        return not mine or record.levelno >= logging.CRITICAL


def _quiet_pydicom(handlers: list[logging.Handler]) -> None:
    """Keep pydicom's log records below CRITICAL off the terminal.

    ``handlers``: the handlers this run installed (basicConfig's).  A filter on them works
    whenever pydicom is imported (pydicom resets its logger's level when imported, and it
    is imported only when a file needs it, also in worker processes).  When the process
    had its own logging set up (hu-roi called from Python), pydicom's logger is set to
    CRITICAL instead, as before; that needs pydicom imported first.
    """
    if handlers:
        for handler in handlers:
            handler.addFilter(_BelowCritical("pydicom"))
        return
    from hu_roi.io import pydicom_logger  # the I/O layer owns pydicom

    pydicom_logger().setLevel(logging.CRITICAL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
