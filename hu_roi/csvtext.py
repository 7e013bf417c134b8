"""CSV text in one place: the spreadsheet-formula escape and the strict table reader.

Formula escape (policy)
-----------------------
Spreadsheet programs (Excel, LibreOffice, Google Sheets) run a cell that starts with
``=``, ``+``, ``-`` or ``@`` as a formula, and a leading tab or carriage return can hide
one ("CSV injection", OWASP).  hu-roi copies free text from DICOM headers and ROI files
(``series_description``, ``roi_id``, ``detail``, ...) into its tables, so such text could
run as a formula when a table is opened.

- :func:`escape_cell` is applied on write to **text** cells only: a cell that starts with
  one of :data:`FORMULA_TRIGGERS` gets a leading apostrophe (OWASP's advice), which
  spreadsheets show as text.  A number (``-129.5``, ``+3``, ``-1e-05``) is never changed:
  negative HU must stay numbers.
- A cell that already starts with apostrophes followed by a trigger (``'=x``) gets one more
  apostrophe, so the escape can be undone exactly.
- :func:`unescape_cell` is applied by hu-roi's readers of its own tables (measurement,
  longitudinal, index, clinical CSV and ``hu-roi pseudonymize``) to text columns: one
  leading apostrophe before ``'*`` + trigger is removed.  ``unescape_cell(escape_cell(t))
  == t`` for every string ``t``, so the analysis reads back exactly what the tool wrote.

Strict reader
-------------
:func:`read_csv_rows` reads a CSV as text cells and refuses any row whose number of
fields differs from the header's (a cut or shifted row would put values under the wrong
columns), naming the line of every such row.  It is the one reader of the measurement,
longitudinal and clinical CSVs and of the tables ``hu-roi pseudonymize`` copies.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hu_roi.errors import SchemaError
from hu_roi.util import read_regular_file, show

__all__ = [
    "FORMULA_TRIGGERS",
    "MAX_TABLE_BYTES",
    "MAX_PROBLEMS_SHOWN",
    "CsvRows",
    "escape_cell",
    "unescape_cell",
    "is_number",
    "problem_message",
    "read_csv_rows",
]

#: First characters that make a spreadsheet cell a formula (OWASP "CSV injection").
FORMULA_TRIGGERS: frozenset[str] = frozenset("=+-@\t\r")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

#: Largest table read (bytes); a measurement CSV of 100,000 ROIs is ~50 MB.
MAX_TABLE_BYTES = 1024**3
#: Problems listed in one error message; the rest are counted ("... and N more").  With
#: the heading line and the count line a message stays within 20 lines.
MAX_PROBLEMS_SHOWN = 18


def is_number(text: str) -> bool:
    """Whether ``text`` is a plain decimal number (``-129.5``, ``+3``, ``1e-05``)."""
    return _NUMBER.fullmatch(text) is not None


def number_text(value: float, digits: int | None = None) -> str:
    """A float as a CSV cell without binary-float noise; ``""`` for NaN or infinity.

    By default (measured and header values): when the value is, to 15 significant digits
    (what a float64 holds exactly), a decimal of at most :data:`SHORT_DIGITS` digits, that
    decimal is written (``167.19999999999993`` → ``167.2``, ``0.9765625`` stays);
    otherwise Python's shortest round-trip form, so a mean such as
    ``170.5438596491228`` reads back bit-identical.  With ``digits``, that many
    significant digits (derived tables, :data:`DERIVED_DIGITS`: a difference of two HU
    values carries its operands' rounding error, ``342.3 - 340.5 = 1.8000000000000114``).
    A whole number keeps ``.0``.
    """
    import math

    v = float(value)
    if not math.isfinite(v):
        return ""
    if digits is None:
        text = f"{v:.15g}"
        mantissa = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
        if len(mantissa) > SHORT_DIGITS:
            text = repr(v)
    else:
        text = f"{v:.{digits}g}"
    if not any(ch in text for ch in ".en"):
        text += ".0"
    return text


#: Longest decimal (significant digits) that :func:`number_text` takes for noise-free.
SHORT_DIGITS = 12


#: Significant digits of derived tables (longitudinal changes, analysis tables): far
#: beyond any HU precision, short of the rounding error a subtraction leaves.
DERIVED_DIGITS = 12


def derived_number_text(value: float) -> str:
    """:func:`number_text` with :data:`DERIVED_DIGITS` (longitudinal and analysis tables)."""
    return number_text(value, DERIVED_DIGITS)


def multi_value_text(text: str) -> str:
    """A DICOM multi-valued string (``Br38f\\3``) as a CSV cell: values joined by ``;``,
    like every list cell of hu-roi's tables (``Br38f;3``)."""
    return ";".join(v.strip() for v in text.split("\\")) if "\\" in text else text


def escape_cell(text: str) -> str:
    """``text`` made safe to open in a spreadsheet (see the module docstring).

    Parameters
    ----------
    text : str
        One text cell as it will be written.

    Returns
    -------
    str
        ``"'" + text`` when ``text`` starts with a formula trigger (or with apostrophes
        followed by one); ``text`` unchanged otherwise, and always for numbers.
    """
    if not text or is_number(text):
        return text
    if text[0] in FORMULA_TRIGGERS or _ESCAPED.match(text):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell`: one leading apostrophe before ``'*`` + trigger is removed."""
    if text[:1] == "'" and _ESCAPED.match(text):
        return text[1:]
    return text


def problem_message(head: str, problems: Sequence[str], limit: int = MAX_PROBLEMS_SHOWN) -> str:
    """A multi-line error message: ``head``, then one problem per line, then the count of
    problems not shown.

    Parameters
    ----------
    head : str
        First line (what is wrong and what to do).
    problems : sequence of str
        One problem each; line breaks inside one are replaced by spaces.
    limit : int
        At most this many problems are listed.
    """
    shown = [" ".join(str(p).splitlines()) for p in problems[:limit]]
    more = len(problems) - len(shown)
    return "\n  ".join([head, *shown]) + (f"\n  ... and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class CsvRows:
    """A CSV read as text.

    Attributes
    ----------
    header : list of str
        Column names (surrounding spaces removed), unique.
    rows : list of list of str
        Data rows, each with exactly ``len(header)`` cells.  Blank lines are skipped.
    lines : list of int
        The line (1-based, in the file) on which each row starts.
    """

    header: list[str]
    rows: list[list[str]]
    lines: list[int]


def read_csv_rows(
    path: str | os.PathLike[str],
    what: str,
    *,
    max_bytes: int | None = None,
    error: type[Exception] = SchemaError,
) -> CsvRows:
    """Read a UTF-8 CSV file (BOM and CRLF accepted) strictly.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for messages (``"measurement CSV"``).
    max_bytes : int, optional
        Largest file read (default :data:`MAX_TABLE_BYTES`).
    error : exception class
        Raised on every problem below.

    Returns
    -------
    CsvRows

    Raises
    ------
    error
        Missing, not a regular file, too large, not UTF-8, empty (no header), a column
        named twice, malformed quoting, or rows whose number of fields differs from the
        header's (every such line is listed, one per line).
    """
    p = Path(path)
    if not p.exists():
        raise error(f"{what}: {str(p)!r} does not exist; pass the path of the CSV file")
    limit = MAX_TABLE_BYTES if max_bytes is None else max_bytes
    data, _ = read_regular_file(p, limit, f"a {what}", error)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} ({p}): not a UTF-8 text file ({exc.reason})") from None
    # newline="": the csv module ends rows at LF, CRLF or CR and keeps line breaks inside
    # quoted cells as they are
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[str] = []
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise error(f"{what} ({p}): line {start}: malformed CSV ({exc})") from None
        if row:  # blank lines are skipped
            if header is None:
                header = [c.strip() for c in row]
            elif len(row) != len(header):
                bad.append(f"line {start}: {len(row)} field(s)")
            else:
                rows.append(row)
                lines.append(start)
        start = reader.line_num + 1
    if header is None:
        raise error(
            f"{what}: {str(p)!r} is empty (not even a header row); re-export it or pass the "
            "right file"
        )
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise error(
            f"{what} ({p}): column(s) named more than once in the header: "
            f"{', '.join(show(c) for c in twice)}; rename or remove the copies"
        )
    if bad:
        raise error(
            problem_message(
                f"{what} ({p}): {len(bad)} row(s) do not have the header's {len(header)} "
                "fields (a cut or shifted row would put values under the wrong columns); "
                "repair or re-export these rows:",
                bad,
            )
        )
    return CsvRows(header, rows, lines)
