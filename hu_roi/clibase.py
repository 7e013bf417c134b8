"""What every ``hu-roi`` subcommand shares: the error type, the common options, the error
format and the CSV writer.

The command modules (``indexcli``, ``batch``, ``roicli``, ``longitudinal``, ``pseudonym``,
``analysis.cli``, ``demo``) depend on this module only; :mod:`hu_roi.cli` sits on top of
them and builds the parser.  Nothing here imports a command module.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from hu_roi.errors import HuRoiError


class CliError(Exception):
    """The command cannot run; the message is printed as one line on stderr."""


def add_common_options(p: argparse.ArgumentParser, *, quiet_help: str = "") -> None:
    """``-v/--verbose`` and ``-q/--quiet`` on a subcommand, so they work after it as well as
    before it (``hu-roi measure -v`` and ``hu-roi -v measure``).

    The defaults are ``SUPPRESS``: a subcommand that is not given the option keeps the value
    set before it.
    """
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log details on stderr (which series, slices and ROIs are read)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help=quiet_help or "no progress bar, no summary",
    )


def add_formula_escape_option(p: argparse.ArgumentParser) -> None:
    """``--no-formula-escape`` (every command that writes CSV tables)."""
    p.add_argument(
        "--no-formula-escape",
        dest="formula_escape",
        action="store_false",
        help="write text cells as they are (by default a text cell starting with = + - @ "
        "gets a leading apostrophe, so spreadsheets do not run it as a formula; see "
        "docs/safety.md)",
    )


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 file"``, ``"2 files"``, ``"0 series"`` (``many`` for irregular plurals)."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many if many is not None else word + 's'}"


def csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    """A CSV table as text (header, then the rows; ``\\n`` line ends)."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path | None, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write rows to ``path`` atomically, or to stdout when ``path`` is None or '-' (the
    rules of :class:`hu_roi.util.OutputSet`: a device or FIFO as a stream, a symbolic
    link's target, never a folder)."""
    from hu_roi.util import OutputSet

    with OutputSet() as outs:
        outs.add("-" if path is None else path, csv_text(columns, rows))


#: Longest error message printed (lines); further lines are counted, not shown.
MAX_ERROR_LINES = 20


def input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "cannot run" (bad input, missing file, full disk): printed
    as an ``error:`` message with exit 2.  Anything else is a bug in hu-roi and keeps its
    traceback.  Evaluated when an exception arrives, so pandas is not imported for it."""
    import json

    errors: list[type[BaseException]] = [
        CliError,
        HuRoiError,
        OSError,  # missing file, permission, disk full (also DicomReadError, OutputError)
        UnicodeError,  # an input file that is not UTF-8 text
        json.JSONDecodeError,
        csv.Error,  # e.g. a field over the csv module's size limit
    ]
    pd = sys.modules.get("pandas")
    if pd is not None:  # pandas' own input errors (dates or numbers out of its range)
        errors += [
            pd.errors.ParserError,
            pd.errors.EmptyDataError,
            pd.errors.OutOfBoundsDatetime,
            pd.errors.OutOfBoundsTimedelta,
        ]
    return tuple(errors)


def error_lines(command: str, exc: BaseException) -> list[str]:
    """The lines printed on stderr for an error: ``hu-roi <command>: error: <message>``.

    A multi-line message (a schema error listing its problems) is shown up to
    :data:`MAX_ERROR_LINES` lines, then ``… and N more``; every line has its control
    characters escaped, and continuation lines are indented, so no text from an input can
    forge a line of its own.
    """
    from hu_roi.util import printable

    if (
        isinstance(exc, OSError)
        and not isinstance(exc, HuRoiError)
        and exc.strerror
        and exc.filename is not None
    ):
        # "[Errno 2] No such file or directory: '…'" → "No such file or directory: …"
        msg = f"{exc.strerror}: {printable(str(exc.filename))}"
        if exc.filename2 is not None:
            msg += f" -> {printable(str(exc.filename2))}"
    else:
        msg = str(exc) or type(exc).__name__
    lines = [printable(x) for x in msg.splitlines() if x.strip()] or [type(exc).__name__]
    head, rest = lines[0], lines[1:]
    more = 0
    if len(lines) > MAX_ERROR_LINES:
        rest, more = rest[: MAX_ERROR_LINES - 1], len(rest) - (MAX_ERROR_LINES - 1)
    out = [f"hu-roi {command}: error: {head}"]
    out += [x if x.startswith((" ", "\t")) else f"  {x}" for x in rest]
    if more:
        out.append(f"  … and {more} more")
    return out


def print_error(command: str, exc: BaseException) -> None:
    """:func:`error_lines` on stderr."""
    for line in error_lines(command, exc):
        print(line, file=sys.stderr)
