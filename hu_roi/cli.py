"""The ``hu-roi`` command line.

Subcommands: ``index``, ``measure``, ``longitudinal``, ``analyze``, ``demo``.  Exit status
0 when the command ran (bad files and failed ROIs are reported, not fatal), 2 when it
cannot run at all (one line on stderr says why), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hu_roi import __version__
from hu_roi.errors import HuRoiError

#: Columns of ``hu-roi index`` output, in order (DESIGN.md, then extras).
INDEX_COLUMNS = [
    "series_key",
    "series_instance_uid",
    "patient_id",
    "study_date",
    "modality",
    "manufacturer",
    "model",
    "kvp",
    "kernel",
    "n_slices",
    "rows",
    "columns",
    "slice_spacing_mm",
    "transfer_syntax",
    "problems",
    "study_time",
    "series_description",
    "series_number",
    "slice_thickness_mm",
    "pixel_spacing_mm",
    "contrast_agent",
    "patient_position",
    "folder",
]

#: Columns of the skipped-files table written next to the index.
SKIPPED_COLUMNS = ["path", "reason"]


class CliError(Exception):
    """The command cannot run; the message is printed as one line on stderr."""


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"
    if isinstance(v, tuple):
        return "\\".join(_fmt(x) for x in v)
    return str(v)


def index_rows(series: Sequence[object], *, formula_escape: bool = True) -> list[dict[str, str]]:
    """One dict per series with the :data:`INDEX_COLUMNS` (strings, CSV-ready).

    Text taken from the headers (``series_description``, ``kernel``...) is escaped for
    spreadsheets (:func:`hu_roi.csvtext.escape_cell`) unless ``formula_escape`` is False;
    numbers never are.
    """
    from hu_roi.csvtext import escape_cell

    rows = []
    for s in series:
        row = {}
        for c in INDEX_COLUMNS:
            v = getattr(s, c, "")
            cell = ";".join(s.problems) if c == "problems" else _fmt(v)  # type: ignore[attr-defined]
            row[c] = escape_cell(cell) if formula_escape and isinstance(v, str) else cell
        rows.append(row)
    return rows


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


# ---------------------------------------------------------------------------------------
# index
# ---------------------------------------------------------------------------------------
def add_index_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="list the series of a DICOM folder (header only) with their problems",
        description="Scan DICOM_DIR recursively (headers only) and list every series found, "
        "with the problems that would make a measurement wrong, and the files skipped.",
    )
    p.add_argument("dicom_dir", metavar="DICOM_DIR")
    p.add_argument(
        "--out",
        metavar="FILE.csv",
        help="write the table here (default: stdout); skipped files go to FILE.skipped.csv",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.add_argument("--no-cache", action="store_true", help="do not use the header cache")
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="also read folders that symbolic links inside DICOM_DIR point to outside it "
        "(by default such links are skipped and reported)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes reading headers not in the cache (default: usable CPUs, at most 8; "
        "1 = none)",
    )
    add_formula_escape_option(p)
    p.set_defaults(func=run_index)


def skipped_path(out: str | Path) -> Path:
    """Where ``index --out FILE.csv`` lists the skipped files: ``FILE.skipped.csv``."""
    p = Path(out)
    return p.with_name(p.stem + ".skipped.csv")


def run_index(args: argparse.Namespace) -> int:
    from hu_roi.csvtext import escape_cell
    from hu_roi.io import index_folder
    from hu_roi.io.dicom import default_index_workers
    from hu_roi.util import OutputSet, printable

    root = Path(args.dicom_dir)
    if not root.exists():
        raise CliError(f"no such file or folder: {printable(root)}")
    workers = default_index_workers() if args.workers is None else args.workers
    if workers < 1:
        raise CliError(f"--workers must be ≥ 1; got {workers}")
    # every file of the tree is read: none of them may be overwritten by an output
    outs = OutputSet([("a file of DICOM_DIR", root)])
    out = args.out or "-"
    side = skipped_path(out) if out != "-" else None
    outs.check(out)
    if side is not None:
        outs.check(side, sidecar_of=out)
    cache = None
    if not args.no_cache:
        try:
            from hu_roi.io.cache import HeaderCache
        except ImportError:  # pragma: no cover - cache module optional
            cache = None
        else:
            cache = HeaderCache.default()
    res = index_folder(
        root,
        progress=not args.quiet,
        cache=cache,
        workers=workers,
        follow_links=getattr(args, "follow_links", False),
    )
    # and the files read through links that leave the tree
    outs.add_inputs(
        [("a file read from DICOM_DIR", sl.path) for s in res.series for sl in s.slices]
        + [("a file read from DICOM_DIR", sk.path) for sk in res.skipped]
    )
    esc = escape_cell if getattr(args, "formula_escape", True) else str
    with outs:
        outs.add(
            out,
            csv_text(
                INDEX_COLUMNS,
                index_rows(res.series, formula_escape=getattr(args, "formula_escape", True)),
            ),
        )
        if side is not None:
            outs.add(
                side,
                csv_text(
                    SKIPPED_COLUMNS,
                    [{"path": esc(s.path), "reason": esc(s.reason)} for s in res.skipped],
                ),
                sidecar_of=out,
            )
    if not args.quiet:
        n_ok = sum(1 for s in res.series if not s.refusing_problems)
        print(
            f"hu-roi index: {res.n_files} files, {len(res.series)} series "
            f"({n_ok} measurable), {len(res.skipped)} files skipped",
            file=sys.stderr,
        )
        for s in res.skipped[:20]:
            print(printable(f"  skipped {s.path}: {s.reason}"), file=sys.stderr)
        if len(res.skipped) > 20:
            print(f"  … and {len(res.skipped) - 20} more", file=sys.stderr)
        if out != "-":
            print(f"  wrote {printable(out)}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
def _optional_commands() -> list[Callable[[argparse._SubParsersAction], object]]:
    """Parser builders of the feature modules (imported lazily: ``--help`` stays fast)."""
    from hu_roi.commands import registered

    return registered()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hu-roi",
        description="Bone density (HU) of vertebral bodies in CT: index DICOM, measure stored "
        "ROIs, build longitudinal tables and the trial's statistics.",
    )
    parser.add_argument("--version", action="version", version=f"hu-roi {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_index_parser(sub)
    for add in _optional_commands():
        add(sub)
    return parser


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
