"""The longitudinal table: one row per patient × level × ROI kind × reader, HU per timepoint.

Vertebral heights (line ROIs of kind ``height-anterior``, ``height-middle``,
``height-posterior``; ``length_mm`` in the measurement CSV) get rows of their own, with that
kind: ``length_mm_T0..T3``, ``delta_length_mm_T1..T3`` (mm, follow-up minus baseline:
negative = height lost) and ``pct_delta_length_T1..T3`` (%); their HU columns are empty, and
the ``length*`` columns are empty on HU rows (:func:`height_table`).

Columns are declared in :data:`hu_roi.analysis.schemas.LONGITUDINAL_SCHEMA` (documented in
``docs/csv_schemas.md``, section "longitudinal"): ``patient_id, level, kind, reader,
irradiated, lesion_type, hu_T0..hu_T3, delta_hu_T1..T3, pct_delta_T1..T3, flags``, where

- ``delta_hu_Tk = hu_Tk − hu_T0`` (HU) and ``pct_delta_Tk = 100 · delta_hu_Tk / hu_T0``;
- rows with ``qc_status = fail`` or no mean are not used (the schema's ``qc-fail-Tk``);
- the reshaping is :func:`hu_roi.analysis.schemas.longitudinal_from_measurements`, so
  the CLI and the analysis build exactly the same table.

This module adds interpretation flags to ``flags``:

``pct-unstable``
    ``|hu_T0| < 50 HU`` (:data:`UNSTABLE_BASELINE_HU`): a percent change relative to a small
    baseline is unstable (at 50 HU the least significant change below is already 32 %).
    Project choice; ``pct_delta`` is still written.
``within-lsc-Tk``
    ``|delta_hu_Tk| < 16 HU`` (:data:`LSC_HU`): the change is within the least significant
    change.  LSC = 2.77 × precision error (95 % confidence for the difference of two
    measurements, 1.96·√2; Glüer et al., Osteoporos Int 1995;5:262–270, as used by the
    ISCD).  We take the conservative upper end of the 10–16 HU range quoted for
    trabecular-ROI HU measurements in the project's specification (≈ 5.8 HU precision
    error); this value is not re-derived here — set your own from a precision study.
``below-lsc-Tk``
    ``|delta_hu_Tk| <`` the LSC given with ``--lsc HU`` or ``--precision reliability.csv``
    (the ``lsc`` row written by ``hu-roi reliability``, docs/reliability.md): the change is
    smaller than the study's own least significant change.  Given an LSC, this flag takes
    the place of ``within-lsc-Tk`` (the name says which LSC was applied).
``kvp-differs-Tk``, ``kernel-differs-Tk``, ``thickness-differs-Tk``, ``scanner-differs-Tk``, ``contrast-differs-Tk``
    carried from the measurement's qc flags ``<what>-differs-from-T0``: the change at Tk
    may be (partly) technical.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hu_roi.clibase import add_common_options, add_formula_escape_option, plural
from hu_roi.errors import SchemaError

if TYPE_CHECKING:  # pandas and the schemas are imported when used: `hu-roi --help` stays fast
    import pandas as pd

__all__ = [
    "LSC_HU",
    "UNSTABLE_BASELINE_HU",
    "CARRIED_FLAGS",
    "read_measurement_targets",
    "longitudinal_table",
    "height_table",
    "read_precision_lsc",
    "longitudinal_csv_text",
    "write_longitudinal_csv",
    "add_longitudinal_parser",
    "run_longitudinal",
]

#: Least significant change (HU), see the module docstring.
LSC_HU = 16.0
#: Baselines with smaller |HU| make percent changes unstable (project choice).
UNSTABLE_BASELINE_HU = 50.0
#: Measurement qc codes carried into the longitudinal flags as ``<name>-Tk``.
CARRIED_FLAGS = {
    "kvp-differs-from-T0": "kvp-differs",
    "kernel-differs-from-T0": "kernel-differs",
    "thickness-differs-from-T0": "thickness-differs",
    "scanner-differs-from-T0": "scanner-differs",
    "contrast-differs-from-T0": "contrast-differs",
}
_KEY = ["patient_id", "level", "kind", "reader"]


def read_measurement_targets(path: str | Path) -> pd.DataFrame:
    """Read a measurement CSV, keep target and height ROIs with a level, validate them.

    The file is read by the same strict reader as the analysis
    (:meth:`hu_roi.analysis.schemas.TableSchema.read_raw`): a row with more or fewer fields
    than the header is an error naming its line, never a silently dropped ROI.  Reference
    and phantom rows are then dropped before validation (they may lack a timepoint or
    level and are not part of the longitudinal table).  Height rows (kind ``height-*``) are
    kept for :func:`height_table`.

    Raises
    ------
    SchemaError
        Unreadable file, a row with a wrong number of fields, a missing ``kind`` or
        ``level`` column, or a target row that does not fit the schema.
    """
    from hu_roi.analysis.schemas import MEASUREMENT_SCHEMA, drop_unplaced_fail_rows
    from hu_roi.roi import HEIGHT_KINDS

    p = Path(path)
    raw = MEASUREMENT_SCHEMA.read_raw(p)
    for c in ("kind", "level"):
        if c not in raw.columns:
            raise SchemaError(
                f"measurement CSV ({p}): required column {c!r} missing; is this the output of "
                "hu-roi measure?"
            )
    kind = raw["kind"].str.strip()
    placed = kind.isin(("target", *HEIGHT_KINDS)) & (raw["level"].str.strip() != "")
    raw = raw.loc[placed]
    raw = drop_unplaced_fail_rows(raw, f"measurement CSV ({p})")
    return MEASUREMENT_SCHEMA.validate(raw, source=str(p), lines=raw.index.tolist())


def longitudinal_table(measurements: pd.DataFrame, *, lsc_hu: float | None = None) -> pd.DataFrame:
    """Longitudinal table (:data:`LONGITUDINAL_SCHEMA`) with the flags of this module.

    Parameters
    ----------
    measurements : pandas.DataFrame
        Validated measurement rows (e.g. :func:`read_measurement_targets`).
    lsc_hu : float, optional
        The study's least significant change (HU, > 0): flags ``below-lsc-Tk`` at this
        value instead of ``within-lsc-Tk`` at :data:`LSC_HU`.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    from hu_roi.analysis.schemas import TIMEPOINTS, longitudinal_from_measurements

    out = longitudinal_from_measurements(measurements)
    heights = height_table(measurements)
    if not heights.empty:
        out = _concat_sorted(out, heights)
    if out.empty:
        return out
    m = measurements.copy()
    m["reader"] = m["reader"].fillna("") if "reader" in m.columns else ""
    usable = (m["qc_status"].fillna("pass") != "fail") & m["mean_hu"].notna()
    carried: dict[tuple, list[str]] = {}
    qc = m["qc_flags"].fillna("") if "qc_flags" in m.columns else pd.Series("", index=m.index)
    for i in m.index[usable]:
        k = tuple(m.loc[i, _KEY])
        for code in str(qc[i]).split(";"):
            if code in CARRIED_FLAGS:
                carried.setdefault(k, []).append(f"{CARRIED_FLAGS[code]}-{m.loc[i, 'timepoint']}")
    flags_out = []
    for _, row in out.iterrows():
        fl = [f for f in str(row["flags"] or "").split(";") if f]
        h0 = row["hu_T0"]
        if pd.notna(h0) and abs(float(h0)) < UNSTABLE_BASELINE_HU:
            fl.append("pct-unstable")
        for tp in TIMEPOINTS[1:]:
            d = row[f"delta_hu_{tp}"]
            if pd.notna(d) and abs(float(d)) < (LSC_HU if lsc_hu is None else lsc_hu):
                fl.append(f"{'within' if lsc_hu is None else 'below'}-lsc-{tp}")
        fl += carried.get(tuple(row[_KEY]), [])
        flags_out.append(";".join(dict.fromkeys(fl)))
    out["flags"] = flags_out
    return out


def height_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """Rows of the vertebral heights: one per patient × level × height kind × reader.

    ``length_mm_Tk`` is the ``length_mm`` of the usable height ROI (qc not ``fail``, a
    length, a timepoint) at Tk; ``delta_length_mm_Tk = length_mm_Tk − length_mm_T0`` (mm,
    negative = height lost) and ``pct_delta_length_Tk = 100 · delta_length_mm_Tk /
    length_mm_T0`` (%).  Flags as on HU rows: ``no-baseline``, ``qc-warn-Tk``,
    ``qc-fail-Tk``.  ``irradiated`` and ``lesion_type`` come from the baseline row (the
    earliest usable one).  Two usable heights of the same kind, patient, level, reader and
    timepoint are an error.

    Parameters
    ----------
    measurements : pandas.DataFrame
        Validated measurement rows (:func:`read_measurement_targets`); rows of other kinds
        are ignored.

    Returns
    -------
    pandas.DataFrame
        :data:`~hu_roi.analysis.schemas.LONGITUDINAL_SCHEMA` columns (HU columns empty),
        sorted by patient, level, kind, reader; empty (typed) without height rows.

    Raises
    ------
    SchemaError
        Duplicate usable heights (the message names them).
    """
    import pandas as pd

    from hu_roi.analysis.schemas import LONGITUDINAL_SCHEMA, TIMEPOINTS, wide_by_timepoint
    from hu_roi.roi import HEIGHT_KINDS
    from hu_roi.util import show

    if "length_mm" not in measurements.columns:
        return LONGITUDINAL_SCHEMA.empty()
    m = measurements.loc[
        measurements["kind"].isin(HEIGHT_KINDS) & measurements["level"].notna()
    ].copy()
    if m.empty:
        return LONGITUDINAL_SCHEMA.empty()
    m["reader"] = m["reader"].fillna("") if "reader" in m.columns else ""
    m["length_mm"] = pd.to_numeric(m["length_mm"], errors="coerce")
    usable = (
        (m["qc_status"].fillna("pass") != "fail") & m["length_mm"].notna() & m["timepoint"].notna()
    )
    dup = m.loc[usable].duplicated(subset=_KEY + ["timepoint"], keep=False)
    if dup.any():
        d = m.loc[usable].loc[dup]
        groups = [
            ", ".join(
                f"{c}={show(str(v), 40)}" for c, v in zip(_KEY + ["timepoint"], k, strict=True)
            )
            + ": roi_id "
            + ", ".join(show(str(r), 40) for r in g["roi_id"])
            for k, g in d.groupby(_KEY + ["timepoint"], sort=True)
        ]
        raise SchemaError(
            "measurement CSV: more than one usable height for the same patient, level, kind, "
            "reader and timepoint; keep one line per height and timepoint (or mark the others "
            "qc_status=fail): " + "; ".join(groups[:20])
        )
    m, good, out = wide_by_timepoint(m, usable, _KEY, "length_mm", "length_mm_")
    flags: dict[tuple, list[str]] = {k: [] for k in out.index}
    warn = good.loc[good["qc_status"] == "warn"]
    for k, tp in zip(map(tuple, warn[_KEY].to_numpy()), warn["timepoint"], strict=True):
        flags[k].append(f"qc-warn-{tp}")
    failed = m.loc[~m["_usable"] & m["timepoint"].notna()]
    for k, tp in zip(map(tuple, failed[_KEY].to_numpy()), failed["timepoint"], strict=True):
        if pd.isna(out.at[k, f"length_mm_{tp}"]) and f"qc-fail-{tp}" not in flags[k]:
            flags[k].append(f"qc-fail-{tp}")
    l0 = out["length_mm_T0"].astype(float)
    for k in out.index[l0.isna()]:
        flags[k].append("no-baseline")
    for tp in TIMEPOINTS[1:]:
        d = out[f"length_mm_{tp}"].astype(float) - l0
        out[f"delta_length_mm_{tp}"] = d
        out[f"pct_delta_length_{tp}"] = (100.0 * d / l0).where(l0 > 0)
    out["flags"] = [";".join(flags[k]) for k in out.index]
    out = out.reset_index()
    for c in LONGITUDINAL_SCHEMA.names:  # the HU columns: empty on height rows
        if c not in out.columns:
            out[c] = np.nan
    return LONGITUDINAL_SCHEMA.validate(out[list(LONGITUDINAL_SCHEMA.names)])


def _concat_sorted(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """HU rows and height rows in one table, sorted by patient, level (C1 … S5), kind, reader."""
    import pandas as pd

    from hu_roi.analysis.schemas import LEVELS, LONGITUDINAL_SCHEMA

    parts = [t for t in (a, b) if not t.empty]
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
    out["_lv"] = out["level"].map({x: i for i, x in enumerate(LEVELS)})
    out = out.sort_values(["patient_id", "_lv", "kind", "reader"], kind="stable")
    out = out.drop(columns="_lv").reset_index(drop=True)
    return LONGITUDINAL_SCHEMA.validate(out[list(LONGITUDINAL_SCHEMA.names)])


def _cell(v: object, derived: bool = False) -> str:
    import pandas as pd

    from hu_roi.csvtext import derived_number_text, number_text

    if v is None or v is pd.NA:
        return ""
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        return derived_number_text(float(v)) if derived else number_text(float(v))
    return str(v)


def longitudinal_csv_text(table: pd.DataFrame, *, formula_escape: bool = True) -> str:
    """The table as CSV text (declared columns first).

    Text cells that a spreadsheet would run as a formula get a leading apostrophe
    (:func:`hu_roi.csvtext.escape_cell`) unless ``formula_escape`` is False.
    """
    import csv

    from hu_roi.analysis.schemas import LONGITUDINAL_SCHEMA
    from hu_roi.csvtext import escape_cell

    cols = list(LONGITUDINAL_SCHEMA.names) + [
        c for c in table.columns if c not in LONGITUDINAL_SCHEMA.names
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    # changes vs T0 with DERIVED_DIGITS (a difference carries its operands' rounding
    # error); the HU values as measured (number_text: bit-identical to the measurement CSV)
    derived = [c.startswith(("delta_", "pct_delta_")) for c in cols]
    for rec in table[cols].itertuples(index=False):
        w.writerow(
            [
                escape_cell(v) if formula_escape and isinstance(v, str) else _cell(v, d)
                for v, d in zip(rec, derived, strict=True)
            ]
        )
    return buf.getvalue()


def write_longitudinal_csv(
    table: pd.DataFrame,
    path: str | Path | None,
    *,
    formula_escape: bool = True,
    inputs: Sequence[tuple[str, str | Path]] = (),
) -> None:
    """Write the table; ``None`` or ``-`` writes to stdout (the rules of
    :class:`hu_roi.util.OutputSet`: a device or FIFO as a stream, never over one of
    ``inputs``)."""
    from hu_roi.util import OutputSet

    with OutputSet(inputs) as outs:
        outs.add(
            "-" if path is None else path,
            longitudinal_csv_text(table, formula_escape=formula_escape),
        )


def add_longitudinal_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi longitudinal`` to the CLI (``set_defaults(func=run_longitudinal)``)."""
    p = subparsers.add_parser(
        "longitudinal",
        help="patient × level table of HU per timepoint with change vs T0",
        description="Read a measurement CSV (hu-roi measure) and write one row per patient × "
        "level × ROI kind × reader with HU at T0..T3, ΔHU and %Δ vs T0 and flags "
        f"(pct-unstable when |HU T0| < {UNSTABLE_BASELINE_HU:g} HU, within-lsc-Tk when "
        f"|ΔHU| < {LSC_HU:g} HU, technical differences vs T0).",
    )
    p.add_argument("measurements", metavar="MEASUREMENTS.csv")
    p.add_argument("--out", metavar="FILE.csv", help="output CSV (default: stdout)")
    lsc = p.add_mutually_exclusive_group()
    lsc.add_argument(
        "--lsc",
        metavar="HU",
        type=_lsc_value,
        help="the study's least significant change: flag below-lsc-Tk when |ΔHU| < HU "
        f"(instead of within-lsc-Tk at {LSC_HU:g} HU)",
    )
    lsc.add_argument(
        "--precision",
        metavar="RELIABILITY.csv",
        help="take the LSC from the lsc row of hu-roi reliability's reliability.csv",
    )
    add_common_options(p, quiet_help="no summary on stderr")
    add_formula_escape_option(p)
    p.set_defaults(func=run_longitudinal)


def _lsc_value(text: str) -> float:
    """``--lsc``: a finite number of HU > 0."""
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number of HU > 0, got {text!r}")
    return v


def read_precision_lsc(path: str | Path) -> float:
    """The ``lsc`` estimate (HU) of a reliability.csv written by ``hu-roi reliability``.

    Raises
    ------
    SchemaError
        Not such a file (columns ``statistic,estimate,ci_low,ci_high,n``), no ``lsc`` row
        or more than one, or an estimate that is not a number > 0.
    """
    import math

    from hu_roi.csvtext import read_csv_rows

    what = "reliability CSV"
    t = read_csv_rows(path, what)
    if t.header[:2] != ["statistic", "estimate"]:
        raise SchemaError(
            f"{what} ({path}): expected the columns statistic,estimate,ci_low,ci_high,n "
            "(reliability.csv of hu-roi reliability)"
        )
    rows = [(line, r[1].strip()) for line, r in zip(t.lines, t.rows, strict=True) if r[0] == "lsc"]
    if len(rows) != 1:
        raise SchemaError(f"{what} ({path}): {len(rows)} rows named lsc; expected one")
    line, text = rows[0]
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise SchemaError(
            f"{what} ({path}): line {line}: lsc estimate {text!r} is not a number of HU > 0"
        )
    return v


def run_longitudinal(args: argparse.Namespace) -> int:
    """Run ``hu-roi longitudinal``; raises SchemaError (exit 2 in the CLI) on a bad CSV."""
    from hu_roi.util import OutputSet, printable

    out = args.out or "-"
    precision = getattr(args, "precision", None)
    outs = OutputSet(
        [("the measurement CSV", args.measurements)]
        + ([("the reliability CSV", precision)] if precision else [])
    )
    outs.check(out)  # before reading: `longitudinal m.csv --out m.csv` is refused
    lsc = read_precision_lsc(precision) if precision else getattr(args, "lsc", None)
    m = read_measurement_targets(args.measurements)
    table = longitudinal_table(m, lsc_hu=lsc)
    with outs:
        outs.add(
            out, longitudinal_csv_text(table, formula_escape=getattr(args, "formula_escape", True))
        )
    if not getattr(args, "quiet", False):
        from hu_roi.roi import HEIGHT_KINDS

        n_heights = int(m["kind"].isin(HEIGHT_KINDS).sum())
        print(
            f"hu-roi longitudinal: {plural(len(table), 'patient × level row')} from "
            f"{plural(len(m) - n_heights, 'target ROI')}"
            + (f" and {plural(n_heights, 'height')}" if n_heights else "")
            + (f"; below-lsc at LSC {lsc:g} HU" if lsc is not None else "")
            + (f"; wrote {printable(out)}" if out != "-" else ""),
            file=sys.stderr,
        )
    return 0
