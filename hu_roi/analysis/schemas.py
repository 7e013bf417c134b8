"""Declared schemas of the tables the analysis reads.

The analysis part of hu-roi depends only on CSV files, never on DICOM or ROI code, so the
trial endpoints can be reproduced from exported tables alone.  This module declares, in one
place, the columns (name, dtype, unit, meaning) of

- the **measurement CSV** (one row per ROI; columns fixed by ``docs/csv_schemas.md``),
- the **longitudinal CSV** (one row per patient x level x ROI kind x reader, with the HU of
  every timepoint and the change against baseline),

and offers :class:`TableSchema.validate`, which turns the strings of a CSV into typed
columns and raises :class:`hu_roi.errors.SchemaError` naming the row, the column and the
value when something does not fit.  The clinical CSV schema lives in
:mod:`hu_roi.analysis.clinical`.  ``docs/csv_schemas.md`` is the human-readable copy; a
test checks that it lists the same columns.

Dtypes
------
``str``      text, stored as ``object``; empty cell = missing
``float``    number, ``float64``; empty cell = NaN
``int``      whole number, pandas ``Int64``
``bool``     ``true/false``, ``yes/no``, ``1/0`` (any case), pandas ``boolean``
``date``     ISO date ``YYYY-MM-DD`` (or ``YYYYMMDD``) from :data:`DATE_MIN` to
             :data:`DATE_MAX`, ``datetime64[ns]``; outside that range an error, or missing
             where the column says so (``Column.out_of_range``)
``category`` one of a fixed set of words (case-insensitive on input, canonical on output)
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hu_roi.csvtext import problem_message, read_csv_rows, unescape_cell
from hu_roi.errors import SchemaError
from hu_roi.util import show

logger = logging.getLogger(__name__)

DTYPES = ("str", "float", "int", "bool", "date", "category")
TIMEPOINTS = ("T0", "T1", "T2", "T3")
"""Trial timepoints: T0 baseline, T1 end of RT, T2 3 months, T3 6 months."""

LEVELS = tuple(
    [f"C{i}" for i in range(1, 8)]
    + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)]
    + [f"S{i}" for i in range(1, 6)]
)
LESION_TYPES = ("osteolytic", "osteoblastic", "mixed", "none")

_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}

#: Dates accepted in ``date`` columns.  Placeholders such as 9999-12-31 ("unknown" in many
#: clinical databases, also seen as DICOM StudyDate 99991231) and 1900-01-01 lie outside or
#: on the edge; the range also keeps every difference of two dates within pandas' limits.
DATE_MIN = datetime.date(1900, 1, 1)
DATE_MAX = datetime.date(2099, 12, 31)
_DATE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?|(\d{4})(\d{2})(\d{2})"
)
_INT = re.compile(r"[+-]?\d+")
_INT64 = 2**63


@dataclass(frozen=True)
class Column:
    """One declared column of a table.

    Parameters
    ----------
    name : str
        Column header as written in the CSV.
    dtype : {"str", "float", "int", "bool", "date", "category"}
        How cells are parsed (see module docstring).
    unit : str
        Physical unit ("HU", "mm", "mg/day", "years", ...) or "" when dimensionless.
    description : str
        Meaning, one sentence.
    required : bool
        The column must be present in the CSV.  Optional columns that are absent are
        added as all-missing columns of the declared dtype.
    nullable : bool
        Empty cells are allowed.
    allowed : tuple of str, optional
        For ``category`` columns: the canonical values.  ``aliases`` maps other spellings.
    aliases : dict, optional
        Lower-case alternative spelling -> canonical value (``category`` only).
    min_value, max_value : float, optional
        Inclusive bounds for numbers.
    out_of_range : {"error", "missing"}
        For ``date`` columns: a date outside :data:`DATE_MIN`..:data:`DATE_MAX` is an error
        (default), or -- for columns no calculation uses -- read as missing with a
        warning in the log.
    """

    name: str
    dtype: str
    unit: str = ""
    description: str = ""
    required: bool = True
    nullable: bool = True
    allowed: tuple[str, ...] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    min_value: float | None = None
    max_value: float | None = None
    out_of_range: str = "error"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"Column {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}.")
        if self.dtype == "category" and not self.allowed:
            raise ValueError(f"Column {self.name!r}: a category column needs `allowed` values.")
        if self.out_of_range not in ("error", "missing"):
            raise ValueError(f"Column {self.name!r}: out_of_range must be 'error' or 'missing'.")

    def pandas_dtype(self) -> str:
        """The pandas dtype the validated column has."""
        return {
            "str": "object",
            "category": "object",
            "float": "float64",
            "int": "Int64",
            "bool": "boolean",
            "date": "datetime64[ns]",
        }[self.dtype]

    def expectation(self) -> str:
        """Human-readable description of an acceptable value (for error messages)."""
        if self.dtype == "category":
            assert self.allowed is not None
            return "one of " + ", ".join(self.allowed)
        if self.dtype == "bool":
            return "true/false (or yes/no, 1/0)"
        if self.dtype == "date":
            return f"a date YYYY-MM-DD from {DATE_MIN} to {DATE_MAX}"
        if self.dtype == "str":
            return "text" + (f" ({self.description.rstrip('.')})" if self.description else "")
        what = "a whole number" if self.dtype == "int" else "a number"
        if self.min_value is not None and self.max_value is not None:
            what += f" in [{self.min_value:g}, {self.max_value:g}]"
        elif self.min_value is not None:
            what += f" >= {self.min_value:g}"
        elif self.max_value is not None:
            what += f" <= {self.max_value:g}"
        if self.unit:
            what += f" ({self.unit})"
        return what


#: _parse_cell's value for a date outside DATE_MIN..DATE_MAX (ok is False).
_OUT_OF_RANGE = object()


def _parse_date(text: str) -> object:
    """A ``pd.Timestamp`` (midnight), :data:`_OUT_OF_RANGE`, or None when not a date.

    Only ISO ``YYYY-MM-DD`` (optionally with a time, dropped) and DICOM ``YYYYMMDD`` are
    dates: ``01/02/2020`` means January or February depending on the country.
    """
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    y, mo, d = (int(g) for g in (m.groups()[:3] if m.group(1) else m.groups()[3:]))
    try:
        day = datetime.date(y, mo, d)
    except ValueError:  # 2017-02-31, month 13, year 0
        return None
    if not DATE_MIN <= day <= DATE_MAX:
        return _OUT_OF_RANGE
    return pd.Timestamp(day)


def _parse_int(text: str) -> int | None:
    """An exact whole number within int64 (``3``, ``3.0``, ``1e3``), else None."""
    if _INT.fullmatch(text):
        if len(text.lstrip("+-").lstrip("0")) > 19:  # also spares int() a 4,300-digit text
            return None
        val = int(text)
    else:
        try:
            f = float(text)
        except ValueError:
            return None
        # beyond 2**53 a float no longer holds every whole number: not exact
        if not np.isfinite(f) or f != round(f) or abs(f) > 2**53:
            return None
        val = int(f)
    return val if -_INT64 <= val < _INT64 else None


def _parse_cell(col: Column, raw: str) -> tuple[object, bool]:
    """Parse one non-empty cell; returns (value, ok).

    A date outside DATE_MIN..DATE_MAX gives ``(_OUT_OF_RANGE, False)``.
    """
    text = raw.strip()
    if col.dtype == "str":
        return text, True
    if col.dtype == "category":
        low = text.lower()
        assert col.allowed is not None
        for a in col.allowed:
            if a.lower() == low:
                return a, True
        if low in col.aliases:
            return col.aliases[low], True
        return None, False
    if col.dtype == "bool":
        low = text.lower()
        if low in _TRUE:
            return True, True
        if low in _FALSE:
            return False, True
        return None, False
    if col.dtype == "date":
        ts = _parse_date(text)
        return (ts, ts is not None and ts is not _OUT_OF_RANGE)
    val: float | int
    if col.dtype == "int":
        ival = _parse_int(text)
        if ival is None:
            return None, False
        val = ival
    else:
        try:
            val = float(text)
        except ValueError:
            return None, False
        if not np.isfinite(val):
            return None, False
    if col.min_value is not None and val < col.min_value:
        return None, False
    if col.max_value is not None and val > col.max_value:
        return None, False
    return val, True


def _is_empty(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    if v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, str) and v.strip() == ""


def _cell_text(v: object) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d")
    return str(v)


def _key_text(v: object) -> str:
    """A key value in a message: as is when short and printable, else its cut repr."""
    t = _cell_text(v)
    return t if t.isprintable() and len(t) <= 80 else show(t)


@dataclass(frozen=True)
class TableSchema:
    """A declared table: ordered columns and the columns that identify a row.

    Parameters
    ----------
    name : str
        Name used in error messages ("clinical CSV").
    columns : tuple of Column
        In the order they are written.
    key : tuple of str
        Columns that together identify a row (used in error messages and for uniqueness).
    unique_key : bool
        Whether the key must be unique.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    unique_key: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in declared order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The declared column ``name`` (KeyError if not declared)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no declared column {name!r}")

    def empty(self) -> pd.DataFrame:
        """An empty table with the declared columns and dtypes."""
        return pd.DataFrame({c.name: pd.Series([], dtype=c.pandas_dtype()) for c in self.columns})

    def read_raw(self, path: str | Path) -> pd.DataFrame:
        """Read a CSV file as text cells, strictly, without validating the values.

        Every row must have as many fields as the header (see
        :func:`hu_roi.csvtext.read_csv_rows`).  The spreadsheet-formula escape that hu-roi's
        writers put on text cells is undone (:func:`hu_roi.csvtext.unescape_cell`) in the
        declared text columns (``str``, ``category``) and in undeclared columns.

        Returns
        -------
        pandas.DataFrame
            All cells as ``str``; the index is the line on which each row starts in the
            file (used by :meth:`validate` to name rows).

        Raises
        ------
        SchemaError
            File missing, unreadable or malformed, or rows with a wrong number of fields.
        """
        t = read_csv_rows(path, self.name)
        typed = {c.name for c in self.columns if c.dtype not in ("str", "category")}
        text = [j for j, c in enumerate(t.header) if c not in typed]
        rows = t.rows
        for r in rows:
            for j in text:
                if r[j][:1] == "'":  # the only cells an escape can have touched
                    r[j] = unescape_cell(r[j])
        return pd.DataFrame(rows, columns=t.header, index=t.lines, dtype=object)

    def read_csv(self, path: str | Path) -> pd.DataFrame:
        """Read a CSV file (:meth:`read_raw`) and validate it (:meth:`validate`).

        Raises
        ------
        SchemaError
            File missing/unreadable, a row with a wrong number of fields, or any cell
            that does not fit the schema.
        """
        raw = self.read_raw(path)
        return self.validate(raw, source=str(path), lines=raw.index.tolist())

    def validate(
        self,
        df: pd.DataFrame,
        *,
        source: str | None = None,
        lines: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """Check and type a table against the schema.

        Parameters
        ----------
        df : pandas.DataFrame
            Cells may be strings (as read from CSV) or already-typed values.
        source : str, optional
            File name used in messages.
        lines : sequence of int, optional
            The file line of each row (from :meth:`read_raw`); rows are named by it.
            Without it, row ``i`` (0-based) is named "row i+2" (its line in a CSV with a
            header and no line breaks inside cells).

        Returns
        -------
        pandas.DataFrame
            Declared columns first, typed as declared, then any undeclared extra columns
            unchanged.  An empty input gives an empty typed table.

        Raises
        ------
        SchemaError
            Required column missing, a value that does not parse or is out of range, a
            missing value in a non-nullable column, or a duplicated key.  The message has
            one line per problem (up to :data:`hu_roi.csvtext.MAX_PROBLEMS_SHOWN`, then the
            count of the others), naming the row (line and key), the column, the received
            value and what the column expects.
        """
        where = f"{self.name}" + (f" ({source})" if source else "")
        df = df.copy()
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c.name for c in self.columns if c.required and c.name not in df.columns]
        if missing:
            raise SchemaError(
                f"{where}: required column(s) missing: {', '.join(missing)}. "
                f"Found columns: {', '.join(map(str, df.columns)) or '(none)'}. "
                "Add the missing columns (see docs/csv_schemas.md / docs/analysis.md)."
            )
        n = len(df)
        if lines is not None and len(lines) != n:
            raise ValueError(f"lines has {len(lines)} entries for {n} rows")
        errors: list[str] = []

        def row_label(i: int) -> str:
            parts = []
            for k in self.key:
                if k in df.columns:
                    v = df[k].iloc[i]
                    parts.append(f"{k}={'' if _is_empty(v) else _key_text(v)}")
            at = f"line {lines[i]}" if lines is not None else f"row {i + 2}"
            return f"{at} ({', '.join(parts)})" if parts else at

        out: dict[str, pd.Series] = {}
        for col in self.columns:
            if col.name not in df.columns:
                out[col.name] = pd.Series([None] * n, dtype=object)
                values: list[object] = [None] * n
            else:
                values = []
                dropped: list[str] = []
                for i, v in enumerate(df[col.name].tolist()):
                    if _is_empty(v):
                        if not col.nullable:
                            errors.append(
                                f"{row_label(i)}, column {col.name!r}: value is missing; "
                                f"expected {col.expectation()}."
                            )
                        values.append(None)
                        continue
                    parsed, ok = _parse_cell(col, _cell_text(v))
                    if parsed is _OUT_OF_RANGE and col.out_of_range == "missing":
                        dropped.append(f"{row_label(i)}: {show(_cell_text(v))}")
                        parsed, ok = None, True
                    if not ok:
                        errors.append(
                            f"{row_label(i)}, column {col.name!r}: got {show(_cell_text(v))}, "
                            f"expected {col.expectation()}"
                            + (
                                " (leave the cell empty when the date is not known)."
                                if parsed is _OUT_OF_RANGE
                                else "."
                            )
                        )
                        values.append(None)
                    else:
                        values.append(parsed)
                if dropped:
                    logger.warning(
                        "%s: column %r: %d date(s) outside %s..%s read as missing (the column "
                        "is descriptive; no result uses it), first %s",
                        where,
                        col.name,
                        len(dropped),
                        DATE_MIN,
                        DATE_MAX,
                        dropped[0],
                    )
            out[col.name] = _typed_series(values, col)
        if errors:
            raise SchemaError(
                problem_message(
                    f"{where}: {len(errors)} invalid value(s); correct these cells (or leave "
                    "them empty where a value is optional):",
                    errors,
                )
            )
        typed = pd.DataFrame(out, index=range(n))
        extra = [c for c in df.columns if c not in self.names]
        for c in extra:
            typed[c] = df[c].to_numpy()
        if self.unique_key and n and all(k in typed.columns for k in self.key):
            dup = typed.duplicated(subset=list(self.key), keep=False)
            if dup.any():
                rows = typed.loc[dup, list(self.key)].astype(str).agg("/".join, axis=1)
                twice = sorted(set(rows))
                raise SchemaError(
                    problem_message(
                        f"{where}: key ({', '.join(self.key)}) must be unique but "
                        f"{len(twice)} value(s) occur more than once; remove or merge the "
                        "duplicated rows:",
                        [show(r) for r in twice],
                    )
                )
        return typed

    def to_markdown(self) -> str:
        """The schema as a markdown table (name, dtype, unit, required, meaning)."""
        lines = [
            "| column | dtype | unit | required | meaning |",
            "|---|---|---|---|---|",
        ]
        for c in self.columns:
            dtype = c.dtype if c.dtype != "category" else "category: " + "/".join(c.allowed or ())
            req = "yes" if c.required else "no"
            if not c.nullable:
                req += ", non-empty"
            lines.append(f"| `{c.name}` | {dtype} | {c.unit} | {req} | {c.description} |")
        return "\n".join(lines)


def _typed_series(values: Sequence[object], col: Column) -> pd.Series:
    if col.dtype == "float":
        return pd.Series([np.nan if v is None else v for v in values], dtype="float64")
    if col.dtype == "int":
        return pd.Series(list(values), dtype="Int64")
    if col.dtype == "bool":
        return pd.Series(list(values), dtype="boolean")
    if col.dtype == "date":
        return pd.Series(pd.to_datetime(list(values)), dtype="datetime64[ns]")
    return pd.Series(list(values), dtype=object)


# --------------------------------------------------------------------------- measurement CSV

_QC = ("pass", "warn", "fail")
_KIND_TARGET = "target"

MEASUREMENT_SCHEMA = TableSchema(
    name="measurement CSV",
    key=("roi_id",),
    unique_key=False,
    columns=(
        Column(
            "roi_id", "str", "", "Identifier of the ROI (unique per timepoint).", nullable=False
        ),
        Column("patient_id", "str", "", "Pseudonymous patient identifier.", nullable=False),
        Column(
            "timepoint",
            "category",
            "",
            "T0 baseline, T1 end of RT, T2 3 months, T3 6 months (rows without one are ignored).",
            allowed=TIMEPOINTS,
        ),
        Column(
            "study_date",
            "date",
            "",
            "StudyDate of the CT (descriptive: a date outside 1900-2099 is read as missing).",
            required=False,
            out_of_range="missing",
        ),
        Column("series_instance_uid", "str", "", "SeriesInstanceUID measured.", required=False),
        Column(
            "level",
            "category",
            "",
            "Vertebral level C1-S5; empty for reference ROIs.",
            allowed=LEVELS,
        ),
        Column("irradiated", "bool", "", "The level lies in the RT field."),
        Column(
            "lesion_type",
            "category",
            "",
            "osteolytic, osteoblastic, mixed, none (unaffected vertebra).",
            allowed=LESION_TYPES,
        ),
        Column(
            "kind",
            "str",
            "",
            "target, reference-air/fat/muscle/water, phantom-<name>, height-anterior/middle/"
            "posterior (line ROIs); analysis uses target (and the heights).",
            nullable=False,
        ),
        Column(
            "shape",
            "str",
            "",
            "ROI shape type (circle, ellipse, polygon, sphere, line).",
            required=False,
        ),
        Column(
            "slice_index",
            "int",
            "",
            "Index of the slice in the series (2D shapes).",
            required=False,
        ),
        Column(
            "n_voxels", "int", "voxels", "Number of voxels in the ROI.", required=False, min_value=0
        ),
        Column(
            "area_mm2", "float", "mm^2", "In-plane area of the ROI (2D shapes).", required=False
        ),
        Column("volume_mm3", "float", "mm^3", "Volume of the ROI voxels.", required=False),
        Column(
            "mean_hu", "float", "HU", "Mean HU in the ROI: the bone density used by the analysis."
        ),
        Column("sd_hu", "float", "HU", "Sample SD (n-1) of HU in the ROI.", required=False),
        Column("median_hu", "float", "HU", "Median HU in the ROI.", required=False),
        Column("min_hu", "float", "HU", "Minimum HU in the ROI.", required=False),
        Column("max_hu", "float", "HU", "Maximum HU in the ROI.", required=False),
        Column("kvp", "float", "kV", "Tube voltage.", required=False),
        Column("kernel", "str", "", "Reconstruction kernel.", required=False),
        Column("slice_thickness_mm", "float", "mm", "SliceThickness.", required=False),
        Column("manufacturer", "str", "", "Scanner manufacturer.", required=False),
        Column("model", "str", "", "Scanner model.", required=False),
        Column(
            "qc_status", "category", "", "pass, warn or fail; fail rows are not used.", allowed=_QC
        ),
        Column("qc_flags", "str", "", "';'-separated QC codes.", required=False),
        Column("reader", "str", "", "Who placed the ROI (e.g. R1).", required=False),
        Column(
            "length_mm",
            "float",
            "mm",
            "Length of a line ROI (kind height-*): distance between its two points; empty for "
            "area ROIs and fail rows.",
            required=False,
            min_value=0.0,
        ),
        Column(
            "dose_mean_gy",
            "float",
            "Gy",
            "Mean RT dose at the ROI's voxels (hu-roi measure --rtdose); empty without a dose "
            "for its series.",
            required=False,
            min_value=0.0,
        ),
    ),
)
"""The measurement CSV (docs/csv_schemas.md).  Columns not needed by the analysis are optional here."""


# --------------------------------------------------------------------------- longitudinal CSV


def _longitudinal_columns() -> tuple[Column, ...]:
    cols: list[Column] = [
        Column("patient_id", "str", "", "Pseudonymous patient identifier.", nullable=False),
        Column("level", "category", "", "Vertebral level C1-S5.", allowed=LEVELS, nullable=False),
        Column("kind", "str", "", "ROI kind; `target` for vertebral bodies.", nullable=False),
        Column(
            "reader", "str", "", "Reader who placed the ROIs ('' if not recorded).", required=False
        ),
        Column("irradiated", "bool", "", "The level lies in the RT field (from the T0 row)."),
        Column(
            "lesion_type",
            "category",
            "",
            "Lesion type at baseline: osteolytic, osteoblastic, mixed, none.",
            allowed=LESION_TYPES,
        ),
        Column(
            "dose_mean_gy",
            "float",
            "Gy",
            "Mean RT dose of the level's ROI on the planning CT (the earliest usable row with "
            "a dose, hu-roi measure --rtdose); empty without.",
            required=False,
            min_value=0.0,
        ),
    ]
    for tp in TIMEPOINTS:
        cols.append(
            Column(
                f"hu_{tp}",
                "float",
                "HU",
                f"mean_hu at {tp}; empty when not measured or qc_status=fail.",
            )
        )
    for tp in TIMEPOINTS[1:]:
        req = tp != "T1"
        cols.append(
            Column(
                f"delta_hu_{tp}",
                "float",
                "HU",
                f"hu_{tp} - hu_T0 (positive = denser).",
                required=req,
            )
        )
        cols.append(
            Column(
                f"pct_delta_{tp}",
                "float",
                "%",
                f"100 * (hu_{tp} - hu_T0) / hu_T0; empty when abs(hu_T0) < 1 HU.",
                required=req,
            )
        )
    cols.append(
        Column(
            "flags",
            "str",
            "",
            "';'-separated codes: no-baseline, qc-warn-Tk, qc-fail-Tk, lesion-type-changed, "
            "irradiated-changed, baseline-near-zero (hu-roi longitudinal adds more, see hu_roi.longitudinal).",
            required=False,
        )
    )
    # vertebral heights (rows of kind height-*, written by hu-roi longitudinal): HU columns
    # stay empty on those rows, and these stay empty on HU rows
    for tp in TIMEPOINTS:
        cols.append(
            Column(
                f"length_mm_{tp}",
                "float",
                "mm",
                f"Height rows (kind height-*): length_mm at {tp}; empty when not measured or "
                "qc_status=fail.",
                required=False,
            )
        )
    for tp in TIMEPOINTS[1:]:
        cols.append(
            Column(
                f"delta_length_mm_{tp}",
                "float",
                "mm",
                f"Height rows: length_mm_{tp} - length_mm_T0 (negative = height lost).",
                required=False,
            )
        )
        cols.append(
            Column(
                f"pct_delta_length_{tp}",
                "float",
                "%",
                f"Height rows: 100 * (length_mm_{tp} - length_mm_T0) / length_mm_T0.",
                required=False,
            )
        )
    return tuple(cols)


LONGITUDINAL_SCHEMA = TableSchema(
    name="longitudinal CSV",
    key=("patient_id", "level", "kind", "reader"),
    columns=_longitudinal_columns(),
)
"""One row per patient x level x ROI kind x reader; HU per timepoint and change vs T0."""


def drop_unplaced_fail_rows(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Leave out ``fail`` rows without a ``patient_id`` (text cells as read).

    ``hu-roi measure`` writes such a row when an ROI names no patient and its series has
    no PatientID (``patient-id-missing``): it holds no measurement and belongs to no
    patient, so no table can place it.  Dropping it keeps one bad ROI from refusing the
    whole file; a warning names each row left out.  Any other row without a
    ``patient_id`` is still refused by the schema.
    """
    if "patient_id" not in raw.columns or "qc_status" not in raw.columns:
        return raw
    unplaced = (raw["qc_status"].str.strip() == "fail") & (raw["patient_id"].str.strip() == "")
    if unplaced.any():
        from hu_roi.util import show

        rows = raw.loc[unplaced]
        ids = rows["roi_id"] if "roi_id" in rows.columns else pd.Series("", index=rows.index)
        shown = ", ".join(f"line {i}: roi_id {show(r, 40)}" for i, r in ids.items())
        logger.warning(
            "%s: %d fail row(s) without patient_id left out (%s); give the ROI a patient_id "
            "(the study code) and measure again",
            source,
            int(unplaced.sum()),
            shown,
        )
    return raw.loc[~unplaced]


def read_measurements(path: str | Path) -> pd.DataFrame:
    """Read and validate a measurement CSV (:data:`MEASUREMENT_SCHEMA`); ``fail`` rows
    without a patient_id are left out with a warning (:func:`drop_unplaced_fail_rows`)."""
    raw = drop_unplaced_fail_rows(MEASUREMENT_SCHEMA.read_raw(path), str(path))
    return MEASUREMENT_SCHEMA.validate(raw, source=str(path), lines=raw.index.tolist())


def read_longitudinal(path: str | Path) -> pd.DataFrame:
    """Read and validate a longitudinal CSV (:data:`LONGITUDINAL_SCHEMA`)."""
    return LONGITUDINAL_SCHEMA.read_csv(path)


def wide_by_timepoint(
    m: pd.DataFrame, usable: pd.Series, key: Sequence[str], value: str, prefix: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One row per ``key`` with ``value`` per timepoint, the shared step of the HU and the
    height tables.

    Returns ``(m, good, out)``: the rows sorted usable first, then by timepoint; the usable
    rows; and per key the baseline's (earliest usable row's) ``irradiated`` and
    ``lesion_type``, the earliest usable ``dose_mean_gy`` (when the column exists), with
    columns ``prefix + T0..T3`` (NaN where no usable row).
    """
    order = {tp: i for i, tp in enumerate(TIMEPOINTS)}
    m = m.assign(_tp_order=m["timepoint"].map(order), _usable=usable)
    m = m.sort_values(["_usable", "_tp_order"], ascending=[False, True])
    good = m.loc[m["_usable"]]
    carried = ["irradiated", "lesion_type"]
    if "dose_mean_gy" in m.columns:  # the planning CT's dose: follow-ups have none
        m["dose_mean_gy"] = m["dose_mean_gy"].where(m["_usable"])
        carried.append("dose_mean_gy")
    out = m.groupby(list(key), sort=True)[carried].first()
    # note: .first() skips NA; the baseline (earliest usable) row wins because of the sort
    wide = good.pivot_table(index=list(key), columns="timepoint", values=value, aggfunc="first")
    out = out.join(wide.reindex(columns=list(TIMEPOINTS)).add_prefix(prefix), how="left")
    for tp in TIMEPOINTS:
        if f"{prefix}{tp}" not in out.columns:
            out[f"{prefix}{tp}"] = np.nan
    return m, good, out


def longitudinal_from_measurements(
    measurements: pd.DataFrame, *, kinds: Iterable[str] = (_KIND_TARGET,)
) -> pd.DataFrame:
    """Reshape validated measurement rows into the longitudinal table.

    Rows with ``qc_status == "fail"`` or an empty ``mean_hu`` are not used (their timepoint
    gets the flag ``qc-fail-Tk``).  The irradiated status and lesion type come from the
    baseline row (or the earliest row when there is no baseline).

    Parameters
    ----------
    measurements : pandas.DataFrame
        Output of :func:`read_measurements` (or ``MEASUREMENT_SCHEMA.validate``).
    kinds : iterable of str
        ROI kinds kept (default only ``target``).

    Returns
    -------
    pandas.DataFrame
        Conforms to :data:`LONGITUDINAL_SCHEMA`, sorted by patient, level, kind, reader.

    Raises
    ------
    SchemaError
        Two usable rows for the same patient, level, kind, reader and timepoint (the
        message lists them): the analysis cannot choose between them.
    """
    kinds = tuple(kinds)
    m = measurements.loc[measurements["kind"].isin(kinds) & measurements["level"].notna()].copy()
    if m.empty:
        return LONGITUDINAL_SCHEMA.empty()
    m["reader"] = m["reader"].fillna("") if "reader" in m.columns else ""
    key = ["patient_id", "level", "kind", "reader"]
    usable = (
        (m["qc_status"].fillna("pass") != "fail") & m["mean_hu"].notna() & m["timepoint"].notna()
    )
    dup = m.loc[usable].duplicated(subset=key + ["timepoint"], keep=False)
    if dup.any():
        d = m.loc[usable].loc[dup]
        groups = [
            f"{', '.join(f'{c}={_key_text(v)}' for c, v in zip(key + ['timepoint'], k, strict=True))}"
            f": roi_id {', '.join(show(str(r)) for r in g['roi_id'])}"
            for k, g in d.groupby(key + ["timepoint"], sort=True)
        ]
        raise SchemaError(
            problem_message(
                "measurement CSV: more than one usable ROI for the same patient, level, kind, "
                "reader and timepoint; keep one ROI per vertebra and timepoint (or mark the "
                "others qc_status=fail):",
                groups,
            )
        )
    m, good, out = wide_by_timepoint(m, usable, key, "mean_hu", "hu_")
    flags: dict[tuple, list[str]] = {k: [] for k in out.index}
    n_types = good.groupby(key)["lesion_type"].nunique()
    for k in n_types.index[n_types > 1]:
        flags[k].append("lesion-type-changed")
    n_irr = good.groupby(key)["irradiated"].nunique()
    for k in n_irr.index[n_irr > 1]:
        flags[k].append("irradiated-changed")
    warn = good.loc[good["qc_status"] == "warn"]
    for k, tp in zip(map(tuple, warn[key].to_numpy()), warn["timepoint"], strict=True):
        flags[k].append(f"qc-warn-{tp}")
    failed = m.loc[~m["_usable"] & m["timepoint"].notna()]
    for k, tp in zip(map(tuple, failed[key].to_numpy()), failed["timepoint"], strict=True):
        if pd.isna(out.at[k, f"hu_{tp}"]) and f"qc-fail-{tp}" not in flags[k]:
            flags[k].append(f"qc-fail-{tp}")
    h0 = out["hu_T0"].astype(float)
    for k in out.index[h0.isna()]:
        flags[k].append("no-baseline")
    for k in out.index[h0.abs() < 1.0]:
        flags[k].append("baseline-near-zero")
    ok0 = h0.abs() >= 1.0
    for tp in TIMEPOINTS[1:]:
        d = out[f"hu_{tp}"].astype(float) - h0
        out[f"delta_hu_{tp}"] = d
        out[f"pct_delta_{tp}"] = (100.0 * d / h0).where(ok0)
    out["flags"] = [";".join(flags[k]) for k in out.index]
    out = out.reset_index()
    # the optional height columns are added empty by validate
    return LONGITUDINAL_SCHEMA.validate(
        out[[c for c in LONGITUDINAL_SCHEMA.names if c in out.columns]]
    )
