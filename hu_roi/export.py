"""The measurement CSV: columns declared once here, rows from :class:`Measurement`.

Columns: :data:`MEASUREMENT_COLUMNS` (docs/csv_schemas.md, in that exact order), then
:data:`EXTRA_COLUMNS`; :data:`IDENTIFIER_COLUMNS` (patient name, birth date) only when the
user asks for them.  Cell formats: floats with 15 significant digits
(:func:`hu_roi.csvtext.number_text`: the decimals a float64 holds exactly, without the
binary noise of ``repr`` such as ``167.19999999999993``), empty for missing/NaN;
booleans ``true``/``false``; ``study_date`` as ISO ``YYYY-MM-DD`` when the DICOM date has 8
digits; lists (``qc_flags``, ``slice_indices``) ``;``-separated.

Text cells (ROI ids, header text, paths, ``detail``...) that start with ``=``, ``+``, ``-``
or ``@`` get a leading apostrophe so spreadsheets do not run them as formulas
(:func:`hu_roi.csvtext.escape_cell`; ``formula_escape=False`` turns it off); numbers are
never changed, and hu-roi's readers undo the escape.

A sidecar ``<csv>.meta.json`` records tool version, date, settings and input paths, so the
CSV itself stays a plain table.  An empty input gives a CSV with the header only.  The CSV
and its sidecar are written together or not at all (:class:`hu_roi.util.OutputSet`); a
CSV written to a stream (stdout, ``/dev/null``, a FIFO) has no sidecar.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hu_roi import __version__
from hu_roi.csvtext import escape_cell, multi_value_text, number_text
from hu_roi.measure import Measurement
from hu_roi.util import OutputSet

__all__ = [
    "MEASUREMENT_COLUMNS",
    "EXTRA_COLUMNS",
    "IDENTIFIER_COLUMNS",
    "columns",
    "format_cell",
    "measurement_row",
    "measurements_csv_text",
    "meta_text",
    "write_measurements_csv",
    "meta_path",
]

#: docs/csv_schemas.md columns, in this order.
MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "roi_id",
    "patient_id",
    "timepoint",
    "study_date",
    "series_instance_uid",
    "level",
    "irradiated",
    "lesion_type",
    "kind",
    "shape",
    "slice_index",
    "n_voxels",
    "area_mm2",
    "volume_mm3",
    "mean_hu",
    "sd_hu",
    "median_hu",
    "min_hu",
    "max_hu",
    "kvp",
    "kernel",
    "slice_thickness_mm",
    "manufacturer",
    "model",
    "qc_status",
    "qc_flags",
    "reader",
)
#: Extra columns after the contract ones (units: HU, mg/cm³, mm).  ``length_mm`` first: the
#: length of a line ROI (a vertebral height), empty for area and volume ROIs.
EXTRA_COLUMNS: tuple[str, ...] = (
    "length_mm",
    "p5_hu",
    "p95_hu",
    "bmd_mg_cm3",
    "density_mg_cm3",
    "series_key",
    "roi_file",
    "slice_position_mm",
    "slice_indices",
    "n_outside",
    "n_padding",
    "cortical_fraction",
    "dose_mean_gy",
    "dose_min_gy",
    "dose_max_gy",
    "contrast_agent",
    "detail",
)
#: Direct identifiers: written only with ``include_identifiers=True``.
IDENTIFIER_COLUMNS: tuple[str, ...] = ("patient_name", "patient_birth_date")


def columns(*, include_identifiers: bool = False) -> tuple[str, ...]:
    """The CSV header."""
    return MEASUREMENT_COLUMNS + EXTRA_COLUMNS + (IDENTIFIER_COLUMNS if include_identifiers else ())


def format_cell(value: Any, *, formula_escape: bool = False) -> str:
    """One CSV cell (see the module docstring for the formats).

    With ``formula_escape``, text (a ``str``, or a list holding one) that starts with a
    formula trigger gets a leading apostrophe; numbers and booleans never do.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number_text(value)  # 15 significant digits: no binary-float noise
    if isinstance(value, tuple | list):
        text = ";".join(format_cell(v) for v in value)
        is_text = any(isinstance(v, str) for v in value)
        return escape_cell(text) if formula_escape and is_text else text
    if isinstance(value, str):
        return escape_cell(value) if formula_escape else value
    return str(value)


def _iso_date(d: str) -> str:
    d = d.strip()
    if len(d) == 8 and d.isdigit():
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"
    return d


def measurement_row(
    m: Measurement, *, include_identifiers: bool = False, formula_escape: bool = True
) -> dict[str, str]:
    """The CSV cells of one measurement, keyed by column name."""
    row = {}
    for c in columns(include_identifiers=include_identifiers):
        v = m.qc_status if c == "qc_status" else getattr(m, c)
        if c == "study_date":
            v = _iso_date(v or "")
        elif c == "kernel":
            v = multi_value_text(v or "")
        row[c] = format_cell(v, formula_escape=formula_escape)
    return row


def meta_path(csv_path: str | Path) -> Path:
    """Path of the sidecar metadata file of a CSV: ``<csv>.meta.json``."""
    p = Path(csv_path)
    return p.with_name(p.name + ".meta.json")


def measurements_csv_text(
    measurements: Iterable[Measurement],
    *,
    include_identifiers: bool = False,
    formula_escape: bool = True,
) -> str:
    """The CSV as a string (header, then one line per measurement)."""
    buf = io.StringIO()
    w = csv.DictWriter(
        buf, fieldnames=list(columns(include_identifiers=include_identifiers)), lineterminator="\n"
    )
    w.writeheader()
    for m in measurements:
        w.writerow(
            measurement_row(
                m, include_identifiers=include_identifiers, formula_escape=formula_escape
            )
        )
    return buf.getvalue()


def meta_text(
    measurements: Sequence[Measurement],
    csv_path: str | Path,
    *,
    include_identifiers: bool = False,
    formula_escape: bool = True,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The sidecar ``<csv>.meta.json`` of a measurement CSV, as JSON text."""
    info: dict[str, Any] = {
        "tool": f"hu-roi {__version__}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "csv": Path(csv_path).name,
        "n_rows": len(measurements),
        "n_fail": sum(1 for m in measurements if m.qc_status == "fail"),
        "n_warn": sum(1 for m in measurements if m.qc_status == "warn"),
        "includes_identifiers": include_identifiers,
        "formula_escape": formula_escape,
        "columns": list(columns(include_identifiers=include_identifiers)),
    }
    if meta:
        info.update(meta)
    return json.dumps(info, indent=1, default=str) + "\n"


def add_measurements_csv(
    outs: OutputSet,
    measurements: Sequence[Measurement],
    path: str | Path,
    *,
    include_identifiers: bool = False,
    formula_escape: bool = True,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Stage the measurement CSV and its sidecar in ``outs`` (written at its commit; no
    sidecar when ``path`` is a stream such as ``-`` or ``/dev/null``)."""
    opts = {"include_identifiers": include_identifiers, "formula_escape": formula_escape}
    outs.add(path, measurements_csv_text(measurements, **opts))
    outs.add(
        meta_path(path),
        meta_text(measurements, path, meta=meta, **opts),
        sidecar_of=path,
    )


def write_measurements_csv(
    measurements: Sequence[Measurement],
    path: str | Path,
    *,
    include_identifiers: bool = False,
    formula_escape: bool = True,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the measurement CSV and its sidecar ``<csv>.meta.json``, both or neither.

    Parameters
    ----------
    measurements : sequence of Measurement
    path : str or Path
        A file (missing folders are created), ``-`` for stdout, or a device/FIFO (then
        without sidecar).
    include_identifiers : bool
        Add patient name and birth date columns (off by default).
    formula_escape : bool
        Escape text cells that a spreadsheet would run as a formula (default True).
    meta : mapping, optional
        Extra provenance (settings, input paths...) merged into the sidecar.

    Returns
    -------
    Path
        The CSV path.

    Raises
    ------
    hu_roi.util.OutputError
        The CSV or its sidecar cannot be written; neither was changed.
    """
    with OutputSet() as outs:
        add_measurements_csv(
            outs,
            measurements,
            path,
            include_identifiers=include_identifiers,
            formula_escape=formula_escape,
            meta=meta,
        )
    return Path(path)
