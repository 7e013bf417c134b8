"""Declared schemas of the tables the analysis reads.

The analysis part of hu-roi depends only on CSV files, never on DICOM or ROI code, so the
trial endpoints can be reproduced from exported tables alone.  This module declares, in one
place, the columns (name, dtype, unit, meaning) of

- the **measurement CSV** (one row per ROI; columns fixed by ``DESIGN.md``),
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
``date``     ISO date ``YYYY-MM-DD``, ``datetime64[ns]``
``category`` one of a fixed set of words (case-insensitive on input, canonical on output)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hu_roi.errors import SchemaError

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
_MAX_ERRORS_SHOWN = 10


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

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"Column {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}.")
        if self.dtype == "category" and not self.allowed:
            raise ValueError(f"Column {self.name!r}: a category column needs `allowed` values.")

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
            return "a date YYYY-MM-DD"
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


def _parse_cell(col: Column, raw: str) -> tuple[object, bool]:
    """Parse one non-empty cell; returns (value, ok)."""
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
        try:
            ts = pd.Timestamp(text)
        except (ValueError, TypeError):
            return None, False
        if len(text) < 8 or pd.isna(ts):
            return None, False
        return ts.normalize(), True
    # numbers
    try:
        val = float(text)
    except ValueError:
        return None, False
    if not np.isfinite(val):
        return None, False
    if col.dtype == "int":
        if val != round(val):
            return None, False
        val = int(round(val))
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

    def read_csv(self, path: str | Path) -> pd.DataFrame:
        """Read a CSV file and validate it (see :meth:`validate`).

        Raises
        ------
        SchemaError
            File missing/unreadable, or any cell does not fit the schema.
        """
        path = Path(path)
        if not path.is_file():
            raise SchemaError(
                f"{self.name}: file {str(path)!r} does not exist or is not a file; "
                "pass the path of the CSV file."
            )
        try:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SchemaError(
                f"{self.name}: {str(path)!r} is not a readable CSV file: {exc}"
            ) from exc
        except pd.errors.EmptyDataError:
            # 0 bytes: an interrupted export or the wrong file, never "no rows" (that file
            # still has its header line)
            raise SchemaError(
                f"{self.name}: {str(path)!r} is empty (not even a header row); "
                "re-export it or pass the right file"
            ) from None
        return self.validate(raw, source=str(path))

    def validate(self, df: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
        """Check and type a table against the schema.

        Parameters
        ----------
        df : pandas.DataFrame
            Cells may be strings (as read from CSV) or already-typed values.
        source : str, optional
            File name used in messages.

        Returns
        -------
        pandas.DataFrame
            Declared columns first, typed as declared, then any undeclared extra columns
            unchanged.  An empty input gives an empty typed table.

        Raises
        ------
        SchemaError
            Required column missing, a value that does not parse or is out of range, a
            missing value in a non-nullable column, or a duplicated key.  The message names
            the row (by its key), the column and the received value.
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
        errors: list[str] = []

        def row_label(i: int) -> str:
            parts = []
            for k in self.key:
                if k in df.columns:
                    v = df[k].iloc[i]
                    parts.append(f"{k}={'' if _is_empty(v) else _cell_text(v)}")
            return f"row {i + 2} ({', '.join(parts)})" if parts else f"row {i + 2}"

        out: dict[str, pd.Series] = {}
        for col in self.columns:
            if col.name not in df.columns:
                out[col.name] = pd.Series([None] * n, dtype=object)
                values: list[object] = [None] * n
            else:
                values = []
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
                    if not ok:
                        errors.append(
                            f"{row_label(i)}, column {col.name!r}: got {_cell_text(v)!r}, "
                            f"expected {col.expectation()}."
                        )
                        values.append(None)
                    else:
                        values.append(parsed)
            out[col.name] = _typed_series(values, col)
        if errors:
            shown = errors[:_MAX_ERRORS_SHOWN]
            more = len(errors) - len(shown)
            raise SchemaError(
                f"{where}: {len(errors)} invalid value(s):\n  "
                + "\n  ".join(shown)
                + (f"\n  ... and {more} more." if more > 0 else "")
                + "\nCorrect these cells (or leave them empty where a value is optional)."
            )
        typed = pd.DataFrame(out, index=range(n))
        extra = [c for c in df.columns if c not in self.names]
        for c in extra:
            typed[c] = df[c].to_numpy()
        if self.unique_key and n and all(k in typed.columns for k in self.key):
            dup = typed.duplicated(subset=list(self.key), keep=False)
            if dup.any():
                rows = typed.loc[dup, list(self.key)].astype(str).agg("/".join, axis=1)
                raise SchemaError(
                    f"{where}: key ({', '.join(self.key)}) must be unique but these values "
                    f"occur more than once: {', '.join(sorted(set(rows)))}. "
                    "Remove or merge the duplicated rows."
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
        Column("study_date", "date", "", "StudyDate of the CT.", required=False),
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
            "target, reference-air/fat/muscle/water, phantom-<name>; analysis uses target.",
            nullable=False,
        ),
        Column(
            "shape", "str", "", "ROI shape type (circle, ellipse, polygon, sphere).", required=False
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
    ),
)
"""The measurement CSV (DESIGN.md).  Columns not needed by the analysis are optional here."""


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
    return tuple(cols)


LONGITUDINAL_SCHEMA = TableSchema(
    name="longitudinal CSV",
    key=("patient_id", "level", "kind", "reader"),
    columns=_longitudinal_columns(),
)
"""One row per patient x level x ROI kind x reader; HU per timepoint and change vs T0."""


def read_measurements(path: str | Path) -> pd.DataFrame:
    """Read and validate a measurement CSV (:data:`MEASUREMENT_SCHEMA`)."""
    return MEASUREMENT_SCHEMA.read_csv(path)


def read_longitudinal(path: str | Path) -> pd.DataFrame:
    """Read and validate a longitudinal CSV (:data:`LONGITUDINAL_SCHEMA`)."""
    return LONGITUDINAL_SCHEMA.read_csv(path)


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
        ids = ", ".join(sorted(d["roi_id"].astype(str)))
        raise SchemaError(
            f"measurement CSV: more than one usable ROI for the same patient, level, kind, reader "
            f"and timepoint: {ids}. Keep one ROI per vertebra and timepoint (or mark the others "
            "qc_status=fail)."
        )
    order = {tp: i for i, tp in enumerate(TIMEPOINTS)}
    m["_tp_order"] = m["timepoint"].map(order)
    m["_usable"] = usable
    m = m.sort_values(["_usable", "_tp_order"], ascending=[False, True])
    good = m.loc[m["_usable"]]
    out = m.groupby(key, sort=True)[["irradiated", "lesion_type"]].first()
    # note: .first() skips NA; the baseline (earliest usable) row wins because of the sort
    hu = good.pivot_table(index=key, columns="timepoint", values="mean_hu", aggfunc="first")
    out = out.join(hu.reindex(columns=list(TIMEPOINTS)).add_prefix("hu_"), how="left")
    for tp in TIMEPOINTS:
        if f"hu_{tp}" not in out.columns:
            out[f"hu_{tp}"] = np.nan
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
    return LONGITUDINAL_SCHEMA.validate(out[list(LONGITUDINAL_SCHEMA.names)])
