"""Optional pseudonymisation: patient ID → study code, applied consistently to output tables.

hu-roi never writes a patient's name or birth date unless asked (see ``docs/safety.md``),
but its tables carry ``patient_id`` -- the ID from the DICOM header, which at many sites is
the hospital's record number.  Before tables leave the hospital, replace it by a study
code with a **pseudonym map**: a two-column CSV kept apart from the shared outputs::

    patient_id,study_code
    4711-0815,S001
    4711-0999,S002

Functions
---------
- :func:`create_pseudonyms` -- make (or extend) a map for a list of patient IDs; codes are
  assigned in random order (not derived from the ID, so they cannot be recomputed from it);
  the file is written atomically with permissions 0600.
- :func:`load_pseudonyms` -- read and validate a map.
- :meth:`PseudonymMap.pseudonymize_row` / :func:`pseudonymize_rows` /
  :func:`pseudonymize_csv` -- apply it: the ``patient_id`` column is replaced by the code,
  and **every** ID of the map is replaced by its code wherever it stands in any other
  cell (``roi_id`` such as ``4711-0815.T0-L3``, paths in ``roi_file`` and ``folder``,
  ``series_description``, ``detail``, ...), see :meth:`PseudonymMap.replace_ids`.  The
  same map gives the same codes in every table (measurements, longitudinal, clinical,
  index), so tables pseudonymised separately still join.  An ID missing from the map is
  an error, never passed through.

Tables are read strictly (:func:`hu_roi.csvtext.read_csv_rows`: a row with more or fewer
fields than the header is an error naming its line) and the spreadsheet-formula escape of
text cells is undone on reading and applied again on writing
(:func:`hu_roi.csvtext.escape_cell`), so a copy differs from its source only in the IDs.

Only this module and the map file know the link; the map is never written next to the
outputs by hu-roi (you choose its path).
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from hu_roi.clibase import add_common_options, add_formula_escape_option, plural
from hu_roi.csvtext import CsvRows, escape_cell, is_number, read_csv_rows, unescape_cell
from hu_roi.errors import SchemaError
from hu_roi.util import atomic_write_bytes, show

__all__ = [
    "MAP_COLUMNS",
    "ID_COLUMNS",
    "PseudonymMap",
    "load_pseudonyms",
    "create_pseudonyms",
    "pseudonymize_rows",
    "pseudonymize_csv",
]

#: Header of a pseudonym map file.
MAP_COLUMNS: tuple[str, str] = ("patient_id", "study_code")
#: Columns whose whole value is a patient ID (replaced by the study code).
ID_COLUMNS: tuple[str, ...] = ("patient_id",)
_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Cells left as they are outside the ID columns: measurements and dates are never IDs,
#: and an ID that happens to equal a number (HU 100, patient "100") must not change it.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ][0-9:.]+)?")
#: Run of letters or digits: an ID is replaced only where it is not part of a longer one.
_ALNUM = r"[^\W_]"


def _ids_re(patient_ids: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of ``patient_ids`` between non-alphanumeric characters.

    Longer IDs come first, so ``4711-0815`` wins over ``4711``.  An ID that begins (ends)
    with a digit is not matched right after (before) a "digit." -- there it is part of a
    decimal number or a UID (``1.5000 mm``, ``1.2.840.4711.5``), not an ID.
    """
    parts = []
    for pid in sorted(set(patient_ids), key=lambda x: (-len(x), x)):
        if not pid:
            continue
        pre = r"(?<!\d\.)" if pid[0].isdigit() else ""
        post = r"(?!\.\d)" if pid[-1].isdigit() else ""
        parts.append(f"{pre}{re.escape(pid)}{post}")
    if not parts:
        return None
    return re.compile(rf"(?<!{_ALNUM})(?:{'|'.join(parts)})(?!{_ALNUM})")


@dataclass(frozen=True)
class PseudonymMap:
    """A validated patient ID → study code mapping.

    Attributes
    ----------
    codes : mapping of str to str
        patient_id → study_code; one-to-one, no code equals a patient ID.
    path : str or None
        File the map was read from or written to.
    """

    codes: Mapping[str, str]
    path: str | None = None
    _patterns: dict[str, re.Pattern[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        where = f" in {self.path}" if self.path else ""
        seen: dict[str, str] = {}
        for pid, code in self.codes.items():
            if not isinstance(pid, str) or not pid.strip():
                raise SchemaError(f"pseudonym map{where}: empty patient_id (code {code!r})")
            if not isinstance(code, str) or not _CODE_RE.match(code):
                raise SchemaError(
                    f"pseudonym map{where}: study_code {code!r} for one patient is not a plain "
                    "code (letters, digits, '_', '.', '-')"
                )
            if code in seen:
                raise SchemaError(
                    f"pseudonym map{where}: study_code {code!r} is given to two patients; "
                    "codes must be unique"
                )
            seen[code] = pid
        clash = sorted(set(seen) & set(self.codes))
        if clash:
            raise SchemaError(
                f"pseudonym map{where}: study_code(s) {clash} are also patient IDs; choose "
                "codes that cannot be mistaken for IDs (e.g. another prefix)"
            )

    def __len__(self) -> int:
        return len(self.codes)

    def code(self, patient_id: str) -> str:
        """The study code of ``patient_id``.

        Raises
        ------
        SchemaError
            The ID is not in the map (it is never passed through unchanged).
        """
        try:
            return self.codes[patient_id]
        except KeyError:
            where = f" {self.path}" if self.path else ""
            raise SchemaError(
                f"a patient_id has no study code in the pseudonym map{where} "
                f"({len(self.codes)} IDs); rerun 'hu-roi pseudonymize' with --extend to add "
                "codes for new IDs"
            ) from None

    def replace_ids(self, text: str) -> str:
        """``text`` with every ID of the map replaced by its code.

        An ID is replaced wherever it stands between non-alphanumeric characters (or the
        ends of the text): ``/data/4711-0815/4711-0815.rois.json``, ``4711-0815.T0-L1``,
        ``PHANTOM_EXAMPLE``.  Not replaced: inside a longer run of letters and digits
        (``P1`` in ``P10``), as part of a decimal number or UID (``1`` in ``1.5000 mm``),
        and cells that are a number or an ISO date as a whole (``100``, ``2017-03-12``).
        Case matters (IDs are compared as written).
        """
        if not text or is_number(text) or _ISO_DATE.fullmatch(text):
            return text
        pat = self._patterns.get("")
        if pat is None:
            pat = _ids_re(self.codes)
            if pat is None:
                return text
            self._patterns[""] = pat
        return pat.sub(lambda m: self.codes[m.group(0)], text)

    def pseudonymize_row(
        self,
        row: Mapping[str, str],
        *,
        id_columns: Sequence[str] = ID_COLUMNS,
        text_columns: Sequence[str] | None = None,
    ) -> dict[str, str]:
        """A copy of one table row with patient IDs replaced (see :meth:`replace_ids`).

        Parameters
        ----------
        row : mapping of str to str
            Column → cell text (spreadsheet-formula escape already undone).
        id_columns : sequence of str
            Columns holding a patient ID as a whole; a non-empty one must be in the map.
        text_columns : sequence of str, optional
            Columns searched for IDs; default every column not in ``id_columns``.

        Raises
        ------
        SchemaError
            A patient ID in an ID column that is not in the map.
        """
        out = dict(row)
        for c in id_columns:
            v = (row.get(c) or "").strip()
            if v:
                out[c] = self.code(v)
        cols = [c for c in out if c not in id_columns] if text_columns is None else text_columns
        for c in cols:
            if c in out and out[c] and c not in id_columns:
                out[c] = self.replace_ids(out[c])
        return out


#: Largest table or map read (bytes); a measurement CSV of 100,000 ROIs is ~50 MB.
MAX_TABLE_BYTES = 1024**3


def _read_table(path: str | os.PathLike[str], what: str = "hu-roi table") -> CsvRows:
    """A table read strictly, with the spreadsheet-formula escape of its cells undone."""
    t = read_csv_rows(path, what, max_bytes=MAX_TABLE_BYTES)
    for r in t.rows:
        r[:] = [unescape_cell(v) for v in r]
    return t


def load_pseudonyms(path: str | os.PathLike[str]) -> PseudonymMap:
    """Read a pseudonym map (CSV ``patient_id,study_code``).

    Raises
    ------
    SchemaError
        Missing or unreadable file, wrong header, a row with a wrong number of fields,
        empty cells, duplicate IDs or codes, a code that is also an ID.
    """
    p = Path(path)
    t = _read_table(p, "pseudonym map")
    if tuple(t.header) != MAP_COLUMNS:
        raise SchemaError(
            f"{p}: a pseudonym map needs exactly the columns {','.join(MAP_COLUMNS)}; "
            f"got {','.join(show(c) for c in t.header)}"
        )
    codes: dict[str, str] = {}
    for line, (pid, code) in zip(t.lines, t.rows, strict=True):
        pid, code = pid.strip(), code.strip()
        if not pid or not code:
            raise SchemaError(f"{p}, line {line}: patient_id and study_code must both be filled")
        if pid in codes:
            raise SchemaError(f"{p}, line {line}: a patient_id appears twice")
        codes[pid] = code
    return PseudonymMap(codes, str(p))


def _map_bytes(pmap: Mapping[str, str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MAP_COLUMNS)
    for pid, code in sorted(pmap.items(), key=lambda kv: kv[1]):
        w.writerow((escape_cell(pid), code))
    return buf.getvalue().encode("utf-8")


def _check_map_path(p: Path, existing: PseudonymMap | None) -> None:
    """Refuse to write a map over another file (FileExistsError naming the way out)."""
    if not p.exists():
        return
    if existing is None or not existing.path or Path(existing.path).resolve() != p.resolve():
        raise FileExistsError(
            f"the pseudonym map {p} already exists and is never overwritten; use --extend "
            "to add codes for new IDs to it, or --map with a new file name"
        )
    if dict(load_pseudonyms(p).codes) != dict(existing.codes):
        raise FileExistsError(f"the pseudonym map {p} changed while it was in use; run again")


def _assign_codes(
    patient_ids: Iterable[str],
    existing: Mapping[str, str],
    prefix: str,
    rng: Random | None,
) -> dict[str, str]:
    """``existing`` plus the next free codes, in random order, for the new IDs."""
    codes = dict(existing)
    new = sorted({str(x).strip() for x in patient_ids if str(x).strip()} - set(codes))
    if new:
        used = set(codes.values())
        width = max(3, len(str(len(codes) + len(new))))
        free: list[str] = []
        k = 1
        while len(free) < len(new):
            c = f"{prefix}{k:0{width}d}"
            if c not in used:
                free.append(c)
            k += 1
        (rng or secrets.SystemRandom()).shuffle(free)
        codes.update(zip(new, free, strict=True))
    return codes


def create_pseudonyms(
    patient_ids: Iterable[str],
    path: str | os.PathLike[str],
    *,
    prefix: str = "S",
    existing: PseudonymMap | None = None,
    rng: Random | None = None,
) -> PseudonymMap:
    """Create a pseudonym map for ``patient_ids`` (or extend ``existing``) and write it.

    New IDs get the next free codes ``<prefix>001``, ``<prefix>002``, … (more digits when
    needed) in **random** order, so a code reveals nothing about the ID or its position in
    the input.  Existing assignments are never changed.

    Parameters
    ----------
    patient_ids : iterable of str
        IDs to cover (duplicates and empty strings ignored).
    path : path-like
        Where to write the map.  Must not exist unless it is ``existing``'s own file.
    prefix : str
        Code prefix.
    existing : PseudonymMap, optional
        A map to extend (the ``--extend`` of the command).
    rng : random.Random, optional
        Source of the random order (default: the OS's cryptographic source).

    Returns
    -------
    PseudonymMap

    Raises
    ------
    FileExistsError
        ``path`` exists and is not the file of ``existing`` (a map is never overwritten).
    """
    p = Path(path)
    _check_map_path(p, existing)
    codes = _assign_codes(patient_ids, existing.codes if existing else {}, prefix, rng)
    pmap = PseudonymMap(codes, str(p))
    atomic_write_bytes(p, _map_bytes(codes))
    os.chmod(p, 0o600)
    return pmap


def pseudonymize_rows(
    rows: Iterable[Mapping[str, str]],
    pmap: PseudonymMap,
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    text_columns: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """:meth:`PseudonymMap.pseudonymize_row` for every row."""
    return [
        pmap.pseudonymize_row(r, id_columns=id_columns, text_columns=text_columns) for r in rows
    ]


def _pseudonymized_text(
    src: Path,
    table: CsvRows,
    pmap: PseudonymMap,
    *,
    id_columns: Sequence[str],
    text_columns: Sequence[str] | None,
    formula_escape: bool,
) -> str:
    """The pseudonymised copy of a table read with :func:`_read_table`, as CSV text.

    Raises
    ------
    SchemaError
        The table has none of ``id_columns``, or IDs that are not in the map (the message
        names the lines).
    """
    if not set(id_columns) & set(table.header):
        raise SchemaError(
            f"{src}: none of the ID columns {', '.join(id_columns)} in its header; is this a "
            "hu-roi table?"
        )
    unknown = [
        line
        for line, r in zip(table.lines, table.rows, strict=True)
        for c, v in zip(table.header, r, strict=True)
        if c in id_columns and v.strip() and v.strip() not in pmap.codes
    ]
    if unknown:
        where = f" {pmap.path}" if pmap.path else ""
        raise SchemaError(
            f"{src}: {len(unknown)} row(s) have a patient_id without a study code in the "
            f"pseudonym map{where} (first: line {unknown[0]}); rerun with --extend to add "
            "codes for new IDs"
        )
    rows = pseudonymize_rows(
        (dict(zip(table.header, r, strict=True)) for r in table.rows),
        pmap,
        id_columns=id_columns,
        text_columns=text_columns,
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.header)
    for r in rows:
        cells = [r[c] for c in table.header]
        w.writerow([escape_cell(v) for v in cells] if formula_escape else cells)
    return buf.getvalue()


def _same_file(a: Path, b: Path) -> bool:
    """Same path after resolving links, or the same file through a hard link."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def pseudonymize_csv(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    pmap: PseudonymMap,
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    text_columns: Sequence[str] | None = None,
    formula_escape: bool = True,
) -> int:
    """Write a pseudonymised copy of a CSV table (atomically); returns the number of rows.

    Columns and their order are kept.  The whole table is checked before anything is
    written: a row with a wrong number of fields or an ID missing from the map leaves
    ``dst`` untouched.

    Parameters
    ----------
    src, dst : path-like
        The table and its copy (a different file).
    pmap : PseudonymMap
    id_columns, text_columns : sequence of str
        See :meth:`PseudonymMap.pseudonymize_row`.
    formula_escape : bool
        Escape text cells for spreadsheets (:func:`hu_roi.csvtext.escape_cell`).

    Raises
    ------
    SchemaError
        ``dst`` is ``src``, the table is malformed, has none of ``id_columns``, or an ID
        is not in the map.
    """
    s, d = Path(src), Path(dst)
    if _same_file(s, d):
        raise SchemaError(f"{d}: write the pseudonymised table to a new file, not over {s}")
    t = _read_table(s)
    text = _pseudonymized_text(
        s, t, pmap, id_columns=id_columns, text_columns=text_columns, formula_escape=formula_escape
    )
    atomic_write_bytes(d, text.encode("utf-8"))
    return len(t.rows)


# ---------------------------------------------------------------------------------------
# command line: hu-roi pseudonymize
# ---------------------------------------------------------------------------------------
def add_pseudonymize_parser(subparsers) -> None:  # noqa: ANN001 - argparse private type
    """Add ``hu-roi pseudonymize`` (``set_defaults(func=run_pseudonymize)``)."""
    p = subparsers.add_parser(
        "pseudonymize",
        help="replace patient IDs in output CSVs by study codes (pseudonym map)",
        description="Write a copy of each TABLE.csv into DIR with patient_id replaced by its "
        "study code from MAP.csv (columns patient_id,study_code), and every patient ID of the "
        "map replaced wherever it stands in other cells (roi_id, paths, descriptions...). "
        "With --create (new map) or --extend (existing map), IDs missing from the map get new "
        "random codes. Everything is checked before anything is written. Keep MAP.csv apart "
        "from the tables you share.",
    )
    p.add_argument("tables", nargs="+", metavar="TABLE.csv")
    p.add_argument("--map", required=True, metavar="MAP.csv", help="pseudonym map")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the copies (same file names)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--create", action="store_true", help="create MAP.csv (must not exist)")
    g.add_argument("--extend", action="store_true", help="add codes for new IDs to MAP.csv")
    add_common_options(p, quiet_help="no summary on stderr")
    add_formula_escape_option(p)
    p.set_defaults(func=run_pseudonymize)


def _plan_outputs(tables: Sequence[Path], out: Path, map_path: Path) -> list[Path]:
    """The copy of each table in ``out``; refuses two tables with one name and a copy
    that would replace an input table or the map (SchemaError, nothing written)."""
    by_name: dict[str, Path] = {}
    for t in tables:
        if t.name in by_name:
            raise SchemaError(
                f"two tables are named {show(t.name)} ({by_name[t.name]} and {t}); their "
                f"copies would both be {out / t.name}: rename one, or pseudonymise them into "
                "different --out folders"
            )
        by_name[t.name] = t
    if out.exists() and not out.is_dir():
        raise SchemaError(f"--out {out} exists and is not a folder; give a folder for the copies")
    dests = [out / t.name for t in tables]
    for d in dests:
        for src, what in [(t, "the input table") for t in tables] + [(map_path, "the map")]:
            if _same_file(d, src):
                raise SchemaError(
                    f"the copy {d} would replace {what} {src}; choose another --out folder "
                    "(nothing written)"
                )
    return dests


def run_pseudonymize(args) -> int:  # noqa: ANN001
    """Run ``hu-roi pseudonymize``; 0 on success (errors are HuRoiError/OSError).

    Every table is read and pseudonymised in memory first; only when all succeeded are the
    copies and the map (``--create``/``--extend``) written, all together -- a failed run
    writes nothing, so it can simply be run again.
    """
    import sys

    tables = [Path(t) for t in args.tables]
    out, map_path = Path(args.out), Path(args.map)
    dests = _plan_outputs(tables, out, map_path)
    existing = load_pseudonyms(map_path) if not args.create else None
    if args.create:
        _check_map_path(map_path, None)
    read = [_read_table(t) for t in tables]
    if args.create or args.extend:
        ids = {
            v.strip()
            for t in read
            for r in t.rows
            for c, v in zip(t.header, r, strict=True)
            if c in ID_COLUMNS and v.strip()
        }
        codes = _assign_codes(ids, existing.codes if existing else {}, "S", None)
        pmap = PseudonymMap(codes, str(map_path))
    else:
        assert existing is not None
        pmap = existing
    escape = getattr(args, "formula_escape", True)
    texts = [
        _pseudonymized_text(
            t, r, pmap, id_columns=ID_COLUMNS, text_columns=None, formula_escape=escape
        )
        for t, r in zip(tables, read, strict=True)
    ]
    if out.resolve() == map_path.resolve().parent and not getattr(args, "quiet", False):
        print(
            f"hu-roi pseudonymize: warning: the map {args.map} is in the output folder; "
            "move it before sharing the folder",
            file=sys.stderr,
        )
    new_map = (args.create or args.extend) and (existing is None or pmap.codes != existing.codes)
    _write_outputs(dests, texts, map_path if new_map else None, pmap, existing, tables=tables)
    if not getattr(args, "quiet", False):
        for t, d, r in zip(tables, dests, read, strict=True):
            print(
                f"hu-roi pseudonymize: {t} -> {d} ({plural(len(r.rows), 'row')})", file=sys.stderr
            )
        if new_map:
            print(
                f"hu-roi pseudonymize: wrote the map {map_path} ({plural(len(pmap), 'ID')})",
                file=sys.stderr,
            )
    return 0


def _write_outputs(
    dests: Sequence[Path],
    texts: Sequence[str],
    map_path: Path | None,
    pmap: PseudonymMap,
    existing: PseudonymMap | None,
    *,
    tables: Sequence[Path] = (),
) -> None:
    """Write the copies and the map (when new or extended; mode 0600) all together or not
    at all (:class:`hu_roi.util.OutputSet`): a failed write leaves every file as it was,
    so the run can be repeated.  No copy may replace an input table or the map."""
    from hu_roi.util import OutputSet

    if map_path is not None:  # created or changed by someone else meanwhile
        _check_map_path(map_path, existing)
    inputs = [("the input table", t) for t in tables]
    if existing is not None and existing.path:
        inputs.append(("the pseudonym map", Path(existing.path)))
    with OutputSet(inputs) as outs:
        for d, text in zip(dests, texts, strict=True):
            outs.add(d, text)
        if map_path is not None:
            outs.add(map_path, _map_bytes(pmap.codes), mode=0o600, replaces=map_path)
