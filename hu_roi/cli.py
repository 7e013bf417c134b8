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


def index_rows(series: Sequence[object]) -> list[dict[str, str]]:
    """One dict per series with the :data:`INDEX_COLUMNS` (strings, CSV-ready)."""
    rows = []
    for s in series:
        row = {c: _fmt(getattr(s, c, "")) for c in INDEX_COLUMNS}
        row["problems"] = ";".join(s.problems)  # type: ignore[attr-defined]
        rows.append(row)
    return rows


def write_csv(path: str | Path | None, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write rows to ``path`` atomically, or to stdout when ``path`` is None or '-'."""
    if path is None or str(path) == "-":
        w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return
    import io

    from hu_roi.util import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(Path(path), buf.getvalue())


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
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes reading headers not in the cache (default: usable CPUs, at most 8; "
        "1 = none)",
    )
    p.set_defaults(func=run_index)


def run_index(args: argparse.Namespace) -> int:
    from hu_roi.io import index_folder
    from hu_roi.io.dicom import default_index_workers

    root = Path(args.dicom_dir)
    if not root.exists():
        raise CliError(f"no such file or folder: {root}")
    workers = default_index_workers() if args.workers is None else args.workers
    if workers < 1:
        raise CliError(f"--workers must be ≥ 1; got {workers}")
    cache = None
    if not args.no_cache:
        try:
            from hu_roi.io.cache import HeaderCache
        except ImportError:  # pragma: no cover - cache module optional
            cache = None
        else:
            cache = HeaderCache.default()
    res = index_folder(root, progress=not args.quiet, cache=cache, workers=workers)
    write_csv(args.out, INDEX_COLUMNS, index_rows(res.series))
    if args.out and args.out != "-":
        out = Path(args.out)
        skipped_path = out.with_name(out.stem + ".skipped.csv")
        write_csv(
            skipped_path,
            SKIPPED_COLUMNS,
            [{"path": s.path, "reason": s.reason} for s in res.skipped],
        )
    if not args.quiet:
        n_ok = sum(1 for s in res.series if not s.refusing_problems)
        print(
            f"hu-roi index: {res.n_files} files, {len(res.series)} series "
            f"({n_ok} measurable), {len(res.skipped)} files skipped",
            file=sys.stderr,
        )
        for s in res.skipped[:20]:
            print(f"  skipped {s.path}: {s.reason}", file=sys.stderr)
        if len(res.skipped) > 20:
            print(f"  … and {len(res.skipped) - 20} more", file=sys.stderr)
        if args.out and args.out != "-":
            print(f"  wrote {args.out}", file=sys.stderr)
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
    except (CliError, HuRoiError, OSError) as exc:
        # Cannot run (bad input, no such folder, disk full...): one line, no traceback.
        # Outputs are written atomically, so a previous file is left as it was.
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"hu-roi {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
