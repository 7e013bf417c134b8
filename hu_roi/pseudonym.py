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
  and the same ID inside other text columns (``roi_id`` such as ``4711-0815-T0-L3``,
  ``roi_file``, ``detail``) is replaced where it stands as a whole token.  The same map
  gives the same codes in every table (measurements, longitudinal, clinical), so tables
  pseudonymised separately still join.  An ID missing from the map is an error, never
  passed through.

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

from hu_roi.errors import SchemaError
from hu_roi.util import atomic_write_bytes, read_regular_file

__all__ = [
    "MAP_COLUMNS",
    "ID_COLUMNS",
    "TEXT_COLUMNS",
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
#: Text columns in which the row's patient ID is replaced where it stands as a token.
TEXT_COLUMNS: tuple[str, ...] = ("roi_id", "roi_file", "detail", "series_key", "folder")
_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _token_re(patient_id: str) -> re.Pattern[str]:
    """Matches ``patient_id`` where it is not part of a longer run of letters, digits and
    dots (so the ID ``1`` is replaced in ``1-T0-L3`` but not inside ``1.5000 mm``)."""
    return re.compile(rf"(?<![A-Za-z0-9.]){re.escape(patient_id)}(?![A-Za-z0-9.])")


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
                f"a patient_id found in the table has no study code in the pseudonym "
                f"map{where} ({len(self.codes)} IDs); extend the map with "
                "create_pseudonyms(..., existing=map) or 'hu-roi pseudonymize --extend'"
            ) from None

    def replace_in_text(self, text: str, patient_id: str) -> str:
        """``text`` with every whole-token occurrence of ``patient_id`` replaced by its code."""
        if not text or not patient_id:
            return text
        pat = self._patterns.get(patient_id)
        if pat is None:
            pat = self._patterns[patient_id] = _token_re(patient_id)
        return pat.sub(self.code(patient_id), text)

    def pseudonymize_row(
        self,
        row: Mapping[str, str],
        *,
        id_columns: Sequence[str] = ID_COLUMNS,
        text_columns: Sequence[str] = TEXT_COLUMNS,
    ) -> dict[str, str]:
        """A copy of one table row with the patient ID replaced (see module docstring).

        Rows with an empty ``patient_id`` are returned unchanged (reference/phantom rows).
        """
        out = dict(row)
        pids = {row[c] for c in id_columns if row.get(c)}
        for c in id_columns:
            if row.get(c):
                out[c] = self.code(row[c])
        for c in text_columns:
            if c in out and out[c]:
                for pid in pids:
                    out[c] = self.replace_in_text(out[c], pid)
        return out


#: Largest table or map read (bytes); a measurement CSV of 100,000 ROIs is ~50 MB.
MAX_TABLE_BYTES = 1024**3


def _read_csv_text(path: Path) -> str:
    data, _ = read_regular_file(path, MAX_TABLE_BYTES, "a hu-roi table", SchemaError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    # the universal newlines Path.read_text gave
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load_pseudonyms(path: str | os.PathLike[str]) -> PseudonymMap:
    """Read a pseudonym map (CSV ``patient_id,study_code``).

    Raises
    ------
    SchemaError
        Wrong header, empty cells, duplicate IDs or codes, a code that is also an ID.
    FileNotFoundError
    """
    p = Path(path)
    reader = csv.DictReader(io.StringIO(_read_csv_text(p)))
    if tuple(reader.fieldnames or ()) != MAP_COLUMNS:
        raise SchemaError(
            f"{p}: a pseudonym map needs exactly the columns {','.join(MAP_COLUMNS)}; "
            f"got {reader.fieldnames}"
        )
    codes: dict[str, str] = {}
    for i, row in enumerate(reader, start=2):
        pid, code = (row.get("patient_id") or "").strip(), (row.get("study_code") or "").strip()
        if not pid or not code:
            raise SchemaError(f"{p}, line {i}: patient_id and study_code must both be filled")
        if pid in codes:
            raise SchemaError(f"{p}, line {i}: a patient_id appears twice")
        codes[pid] = code
    return PseudonymMap(codes, str(p))


def _map_bytes(pmap: Mapping[str, str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MAP_COLUMNS)
    for pid, code in sorted(pmap.items(), key=lambda kv: kv[1]):
        w.writerow((pid, code))
    return buf.getvalue().encode("utf-8")


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
        A map to extend.
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
    codes = dict(existing.codes) if existing is not None else {}
    if p.exists():
        same = (
            existing is not None and existing.path and Path(existing.path).resolve() == p.resolve()
        )
        if not same:
            raise FileExistsError(
                f"{p} already exists; load it and pass it as existing= to extend it "
                "(a pseudonym map is never overwritten)"
            )
        on_disk = load_pseudonyms(p)
        if dict(on_disk.codes) != dict(existing.codes):  # type: ignore[union-attr]
            raise FileExistsError(f"{p} changed since it was loaded; load it again")
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
    pmap = PseudonymMap(codes, str(p))
    atomic_write_bytes(p, _map_bytes(codes))
    os.chmod(p, 0o600)
    return pmap


def pseudonymize_rows(
    rows: Iterable[Mapping[str, str]],
    pmap: PseudonymMap,
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    text_columns: Sequence[str] = TEXT_COLUMNS,
) -> list[dict[str, str]]:
    """:meth:`PseudonymMap.pseudonymize_row` for every row."""
    return [
        pmap.pseudonymize_row(r, id_columns=id_columns, text_columns=text_columns) for r in rows
    ]


def pseudonymize_csv(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    pmap: PseudonymMap,
    *,
    id_columns: Sequence[str] = ID_COLUMNS,
    text_columns: Sequence[str] = TEXT_COLUMNS,
) -> int:
    """Write a pseudonymised copy of a CSV table (atomically); returns the number of rows.

    Columns and their order are kept.  The whole table is checked before anything is
    written: an ID missing from the map leaves ``dst`` untouched.

    Raises
    ------
    SchemaError
        The table has none of ``id_columns``, or an ID is not in the map.
    """
    s, d = Path(src), Path(dst)
    if s.resolve() == d.resolve():
        raise SchemaError(f"{d}: write the pseudonymised table to a new file, not over {s}")
    reader = csv.DictReader(io.StringIO(_read_csv_text(s)))
    fields = list(reader.fieldnames or [])
    if not set(id_columns) & set(fields):
        raise SchemaError(f"{s}: none of the ID columns {list(id_columns)} in {fields}")
    out_rows = pseudonymize_rows(reader, pmap, id_columns=id_columns, text_columns=text_columns)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(out_rows)
    atomic_write_bytes(d, buf.getvalue().encode("utf-8"))
    return len(out_rows)


# ---------------------------------------------------------------------------------------
# command line: hu-roi pseudonymize
# ---------------------------------------------------------------------------------------
def add_pseudonymize_parser(subparsers) -> None:  # noqa: ANN001 - argparse private type
    """Add ``hu-roi pseudonymize`` (``set_defaults(func=run_pseudonymize)``)."""
    p = subparsers.add_parser(
        "pseudonymize",
        help="replace patient IDs in output CSVs by study codes (pseudonym map)",
        description="Write a copy of each TABLE.csv with patient_id replaced by its study code "
        "from MAP.csv (columns patient_id,study_code), also inside roi_id and other text "
        "columns. With --create/--extend, IDs missing from the map get new random codes. "
        "Keep MAP.csv apart from the tables you share.",
    )
    p.add_argument("tables", nargs="+", metavar="TABLE.csv")
    p.add_argument("--map", required=True, metavar="MAP.csv", help="pseudonym map")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the copies")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--create", action="store_true", help="create MAP.csv (must not exist)")
    g.add_argument("--extend", action="store_true", help="add codes for new IDs to MAP.csv")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_pseudonymize)


def run_pseudonymize(args) -> int:  # noqa: ANN001
    """Run ``hu-roi pseudonymize``; 0 on success (errors are HuRoiError/OSError)."""
    import sys

    tables = [Path(t) for t in args.tables]
    for t in tables:
        if not t.is_file():
            raise FileNotFoundError(f"no such table: {t}")
    out = Path(args.out)
    if args.create or args.extend:
        ids: set[str] = set()
        for t in tables:
            reader = csv.DictReader(io.StringIO(_read_csv_text(t)))
            ids |= {r["patient_id"] for r in reader if r.get("patient_id")}
        existing = load_pseudonyms(args.map) if args.extend else None
        pmap = create_pseudonyms(ids, args.map, existing=existing)
    else:
        pmap = load_pseudonyms(args.map)
    if out.resolve() == Path(args.map).resolve().parent and not args.quiet:
        print(
            f"hu-roi pseudonymize: warning: the map {args.map} is in the output folder; "
            "move it before sharing the folder",
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    for t in tables:
        n = pseudonymize_csv(t, out / t.name, pmap)
        if not args.quiet:
            print(f"hu-roi pseudonymize: {t} -> {out / t.name} ({n} rows)", file=sys.stderr)
    return 0
