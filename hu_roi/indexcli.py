"""``hu-roi index``: list the series of a DICOM folder (headers only) with their problems.

Writes the index table (:data:`INDEX_COLUMNS`, documented in docs/csv_schemas.md) and the
files skipped (:data:`SKIPPED_COLUMNS`) beside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hu_roi.clibase import (
    CliError,
    add_common_options,
    add_formula_escape_option,
    csv_text,
    plural,
)

#: Columns of ``hu-roi index`` output, in order (docs/csv_schemas.md, then extras).
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
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
    "contrast_agent",
    "patient_position",
    "folder",
]

#: Columns of the skipped-files table written next to the index.
SKIPPED_COLUMNS = ["path", "reason"]


def _fmt(v: object) -> str:
    from hu_roi.csvtext import number_text

    if v is None:
        return ""
    if isinstance(v, float):
        return number_text(v)  # header values at full precision, no binary-float noise
    return str(v)


def iso_date(d: str) -> str:
    """A DICOM date ``YYYYMMDD`` as ISO ``YYYY-MM-DD`` (anything else unchanged)."""
    d = d.strip()
    if len(d) == 8 and d.isdigit():
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    return d


def _value(s: object, column: str) -> object:
    """The value of one index column for a series (before formatting)."""
    from hu_roi.csvtext import multi_value_text

    if column == "problems":
        return ";".join(s.problems)  # type: ignore[attr-defined]
    if column == "study_date":
        return iso_date(s.study_date)  # type: ignore[attr-defined]
    if column == "kernel":
        return multi_value_text(s.kernel)  # type: ignore[attr-defined]
    if column in ("pixel_spacing_row_mm", "pixel_spacing_col_mm"):
        sp = tuple(s.pixel_spacing_mm)  # type: ignore[attr-defined]
        return float(sp[0 if column == "pixel_spacing_row_mm" else 1])
    return getattr(s, column, "")


def index_rows(series: Sequence[object], *, formula_escape: bool = True) -> list[dict[str, str]]:
    """One dict per series with the :data:`INDEX_COLUMNS` (strings, CSV-ready).

    Text taken from the headers (``series_description``, ``kernel``...) is escaped for
    spreadsheets (:func:`hu_roi.csvtext.escape_cell`) unless ``formula_escape`` is False;
    numbers never are.  Dates are ISO, DICOM multi-values ``;``-separated, floats with up
    to 15 significant digits (docs/csv_schemas.md, "Index CSV").
    """
    from hu_roi.csvtext import escape_cell

    rows = []
    for s in series:
        row = {}
        for c in INDEX_COLUMNS:
            v = _value(s, c)
            cell = _fmt(v)
            row[c] = escape_cell(cell) if formula_escape and isinstance(v, str) else cell
        rows.append(row)
    return rows


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
    add_common_options(p)
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
        progress=not getattr(args, "quiet", False),
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
    if not getattr(args, "quiet", False):
        for line in summary_lines(res):
            print(line, file=sys.stderr)
        if out != "-":
            print(f"  wrote {printable(out)}", file=sys.stderr)
    return 0


def summary_lines(res: object) -> list[str]:
    """The summary of an index on stderr: counts, which series ``hu-roi measure`` would
    measure (as it does by default: ``missing-slices`` and ``gantry-tilt`` are measured
    with a warning), why the others are refused, and the files skipped."""
    from collections import Counter

    from hu_roi.series import MEASURE_ACCEPTS
    from hu_roi.util import printable

    series = list(res.series)  # type: ignore[attr-defined]
    skipped = list(res.skipped)  # type: ignore[attr-defined]
    n_files = int(res.n_files)  # type: ignore[attr-defined]
    n_ok = sum(1 for s in series if not s.measure_refuses)
    n_warn = sum(
        1 for s in series if not s.measure_refuses and set(s.problems) & set(MEASURE_ACCEPTS)
    )
    head = (
        f"hu-roi index: {plural(n_files, 'file')}, {plural(len(series), 'series', 'series')} "
        f"({n_ok} measurable by hu-roi measure"
        + (f", {n_warn} of them with a warning" if n_warn else "")
        + f"), {plural(len(skipped), 'file')} skipped"
    )
    lines = [head]
    refused = Counter(p for s in series for p in s.measure_refuses)
    if refused:
        lines.append(
            "  not measured: "
            + ", ".join(f"{plural(n, 'series', 'series')} {code}" for code, n in refused.items())
            + " (the codes: docs/design.md, Problem codes)"
        )
    if not series:
        lines.append(
            "  0 series: no DICOM image found"
            + (
                " (NIfTI, DICOMDIR and non-image files are not read; see the files skipped)"
                if skipped
                else " (hu-roi reads DICOM files, any name or extension; NIfTI is not read)"
            )
        )
    for s in skipped[:20]:
        lines.append(printable(f"  skipped {s.path}: {s.reason}"))
    if len(skipped) > 20:
        lines.append(f"  … and {len(skipped) - 20} more")
    return lines
