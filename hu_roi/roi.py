"""ROI sets: the ``hu-roi.roiset`` JSON file (``*.rois.json``), validated and round-tripped.

The format is described for users in ``docs/roi_format.md`` and as a JSON Schema in
``hu_roi/schemas/roiset.schema.json`` (:func:`schema_path`).  File layout::

    {"format": "hu-roi.roiset", "version": 1, "reader": "R1",
     "rois": [{"roi_id": "P01-T0-L3", "patient_id": "P01", "timepoint": "T0",
               "series_instance_uid": "1.2.3", "level": "L3", "irradiated": true,
               "lesion_type": "osteolytic", "kind": "target",
               "shape": {"type": "ellipse", "center_mm": [x, y, z],
                         "radii_mm": [rx, ry], "angle_deg": 0}}],
     "history": [{"when": "...", "who": "R1", "tool": "hu-roi 0.1.0",
                  "changes": ["added P01-T0-L3"]}]}

All positions are DICOM patient coordinates (LPS, mm).  Shapes:

``circle``
    ``center_mm`` (3), ``radius_mm`` — a disc in the slice plane through the centre.
``ellipse``
    ``center_mm`` (3), ``radii_mm`` [rx, ry] along the image row direction X and the column
    direction Y of the series it is drawn on, optional ``angle_deg`` (rotation of the rx
    axis from X towards Y, degrees).
``polygon``
    ``points_mm`` (n ≥ 3 × 3), coplanar (within :data:`COPLANAR_TOL_MM`) and parallel to a
    slice (checked when rasterized).
``sphere``
    ``center_mm`` (3), ``radius_mm``.
``line``
    ``points_mm`` (exactly 2 distinct points × 3): a length, not an area -- vertebral
    heights (``kind`` ``height-anterior``, ``height-middle`` or ``height-posterior``, and
    only those kinds have a line).

Unknown fields (top level, per ROI and inside ``shape``) are kept and written back, and
:func:`load_roiset` logs each unknown name once per file.  A name that looks like a
misspelt known field (:func:`misspelt_field`: same letters up to case and separators, a
known name without or with other units, or one or two edits) is an error, because the
value would otherwise be silently ignored.  Numbers must be finite (no NaN/Infinity, no
literal beyond the float range, no integer beyond Python's digit limit), a key may appear
only once per object, and every text must be valid Unicode -- anywhere in the file.
Values quoted in error messages are cut (:func:`show_value`).

Saving is atomic (temporary file in the same folder, fsync, ``os.replace``) and refuses to
overwrite a file that changed on disk since it was loaded (:class:`RoiConflictError`).
Every save appends one entry to ``history``.

Matching an ROI to a series (:func:`match_series`): by ``series_instance_uid``; else by
``series_key``; else the only CT series of the ROI's patient (and study date, when the ROI
carries ``study_date``) in the folder; otherwise no match, with the reason.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hu_roi import __version__
from hu_roi.errors import RoiConflictError, RoiFormatError
from hu_roi.series import SeriesInfo
from hu_roi.util import atomic_write_bytes, read_regular_file, show

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SHAPE_TYPES",
    "LEVELS",
    "TIMEPOINTS",
    "LESION_TYPES",
    "REFERENCE_KINDS",
    "HEIGHT_KINDS",
    "Shape",
    "Roi",
    "RoiSet",
    "FileStamp",
    "SeriesMatch",
    "load_roiset",
    "save_roiset",
    "find_roi_files",
    "match_series",
    "is_valid_kind",
    "misspelt_field",
    "show_value",
    "schema_path",
    "voxel_lps_mm",
    "unknown_fields",
    "frame_hint",
]

FORMAT_NAME = "hu-roi.roiset"
FORMAT_VERSION = 1
#: Shape types and the fields each requires (besides ``type``).
SHAPE_TYPES: dict[str, tuple[str, ...]] = {
    "circle": ("center_mm", "radius_mm"),
    "ellipse": ("center_mm", "radii_mm"),
    "polygon": ("points_mm",),
    "sphere": ("center_mm", "radius_mm"),
    "line": ("points_mm",),
}
LEVELS: tuple[str, ...] = (
    tuple(f"C{i}" for i in range(1, 8))
    + tuple(f"T{i}" for i in range(1, 13))
    + tuple(f"L{i}" for i in range(1, 6))
    + tuple(f"S{i}" for i in range(1, 6))
)
TIMEPOINTS: tuple[str, ...] = ("T0", "T1", "T2", "T3")
LESION_TYPES: tuple[str, ...] = ("osteolytic", "osteoblastic", "mixed", "none")
REFERENCE_KINDS: tuple[str, ...] = (
    "reference-air",
    "reference-fat",
    "reference-muscle",
    "reference-water",
)
#: Kinds of the line ROIs that measure vertebral body heights (mm), for the vertebral
#: compression fracture endpoint; a line ROI has one of these kinds and no other ROI has.
HEIGHT_KINDS: tuple[str, ...] = ("height-anterior", "height-middle", "height-posterior")
#: Shortest line ROI (mm): two points closer than this are one point, not a height.
MIN_LINE_MM = 1e-3
_PHANTOM_RE = re.compile(r"^phantom-[A-Za-z0-9_.+-]+$")
#: Maximal distance (mm) of a polygon vertex from the polygon's best-fit plane.
COPLANAR_TOL_MM = 0.05

_KNOWN_ROI_KEYS = (
    "roi_id",
    "patient_id",
    "timepoint",
    "series_instance_uid",
    "series_key",
    "study_date",
    "level",
    "irradiated",
    "lesion_type",
    "kind",
    "density_mg_cm3",
    "proposed",
    "registration",
    "shape",
)
_KNOWN_SHAPE_KEYS = ("type", "center_mm", "radius_mm", "radii_mm", "angle_deg", "points_mm")
_KNOWN_TOP_KEYS = ("format", "version", "reader", "rois", "history")
#: Longest ``roi_id`` / ``patient_id`` (characters): they are echoed in every row and message.
MAX_ID_CHARS = 256


def is_valid_kind(kind: str) -> bool:
    """True for ``target``, the ``reference-*`` kinds, ``phantom-<name>`` and the
    ``height-*`` kinds of line ROIs (:data:`HEIGHT_KINDS`)."""
    return (
        kind == "target"
        or kind in REFERENCE_KINDS
        or kind in HEIGHT_KINDS
        or bool(_PHANTOM_RE.match(kind))
    )


def schema_path() -> Path:
    """Path of the JSON Schema of the ROI set file (``hu_roi/schemas/roiset.schema.json``)."""
    return Path(__file__).resolve().parent / "schemas" / "roiset.schema.json"


# --------------------------------------------------------------------------------------
# quoting values in messages
def show_value(value: Any, limit: int = 80) -> str:
    """A value of an ROI file as quoted in a message: :func:`hu_roi.util.show` (``repr``
    cut to about ``limit`` characters, so it can neither forge a line nor be huge), with
    lists and objects rendered item by item only up to the limit, and numbers that did not
    parse shown as they were written."""
    if isinstance(value, _BadNumber):
        return value.text
    if isinstance(value, list | tuple | Mapping):
        return _short_container(value, limit)
    return show(value, limit)


def _short_container(value: Any, limit: int) -> str:
    """repr of a list or dict built item by item, stopping once ``limit`` is passed."""
    if isinstance(value, Mapping):
        open_, close = "{", "}"
        keys = list(value)[:20]
        parts = [f"{show_value(k, limit)}: {show_value(value[k], limit)}" for k in keys]
    else:
        open_, close = "[", "]"
        parts = [show_value(v, limit) for v in list(value[:20])]
    out = open_
    for i, part in enumerate(parts):
        nxt = out + (", " if i else "") + part
        if len(nxt) > limit:
            return out + (", " if i else "") + f"… ({len(value)} items){close}"
        out = nxt
    if len(value) > len(parts):
        return out + f", … ({len(value)} items){close}"
    return out + close


# --------------------------------------------------------------------------------------
# JSON numbers and objects that json.loads would turn into wrong or unusable values
class _BadNumber:
    """A JSON number that is not a finite float or an int Python can convert (kept as text).

    Stands in the parsed document where NaN, Infinity, a literal beyond the float range
    (``1e999``) or an integer longer than Python's digit limit stood, so that validation
    can name the ROI and field instead of json.loads failing or returning ``inf``.
    """

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str) -> None:
        self.text = text if len(text) <= 40 else f"{text[:20]}…{text[-10:]}"
        self.why = why


def _parse_float(text: str) -> float | _BadNumber:
    v = float(text)
    if math.isfinite(v):
        return v
    return _BadNumber(text, "beyond the float range of ±1.8e308")


def _parse_int(text: str) -> int | _BadNumber:
    limit = sys.get_int_max_str_digits()
    n = len(text.lstrip("-"))
    if limit and n > limit:
        return _BadNumber(text, f"an integer of {n} digits, beyond Python's limit of {limit}")
    return int(text)


def _parse_constant(text: str) -> _BadNumber:
    return _BadNumber(text, "JSON has no NaN or Infinity")


class _JsonObject(dict):  # type: ignore[type-arg]
    """A JSON object that remembers keys given more than once (json.loads keeps the last)."""

    dupes: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dupes = []
        for k, _ in pairs:
            if k in seen:
                dupes.append(k)
            seen.add(k)
        obj.dupes = tuple(dupes)
    return obj


def _loads(text: str) -> Any:
    """json.loads with the hooks above (no exception for big numbers, duplicates recorded)."""
    return json.loads(
        text,
        parse_float=_parse_float,
        parse_int=_parse_int,
        parse_constant=_parse_constant,
        object_pairs_hook=_object_pairs,
    )


def _where(doc: Any, path: Sequence[str | int]) -> tuple[str | None, str, str]:
    """(ROI label, field name, element) of a location in the document, for :func:`_err`.

    The ROI label is its ``roi_id``, or ``#i`` (its position) when it has none; the field
    is the dotted path of names (``shape.center_mm``); the element the list positions
    below it (``[0]``, or ``""``).
    """
    roi: str | None = None
    rest = list(path)
    if (
        len(rest) >= 2
        and rest[0] == "rois"
        and isinstance(rest[1], int)
        and isinstance(doc["rois"][rest[1]], Mapping)
    ):
        rid = doc["rois"][rest[1]].get("roi_id")
        ok = isinstance(rid, str) and rid.strip() and not _unicode_problem(rid)
        roi = rid if ok else f"#{rest[1]}"
        rest = rest[2:]
    last = max((i for i, k in enumerate(rest) if isinstance(k, str)), default=-1)
    fld = ".".join(k for k in rest[: last + 1] if isinstance(k, str))
    return roi, fld, "".join(f"[{k}]" for k in rest[last + 1 :])


def _check_values(doc: Any) -> None:
    """Refuse values no ROI file may hold, anywhere in the document (also unknown fields).

    Non-finite numbers (also ``float('nan')`` of a dict built in Python), numbers that
    did not parse (:class:`_BadNumber`), keys given twice in one object, and text that is
    not valid Unicode (lone surrogates, which could not be saved as UTF-8).  Iterative:
    the nesting depth json.loads allows cannot exhaust the stack here.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        v, path = stack.pop()
        problem = ""
        if isinstance(v, _BadNumber):
            problem = f"must be a finite number; got {v.text} ({v.why})"
        elif isinstance(v, float) and not math.isfinite(v):
            problem = f"must be a finite number (no NaN/inf); got {v!r}"
        elif isinstance(v, str):
            problem = _unicode_problem(v)
        elif isinstance(v, Mapping):
            dupes = getattr(v, "dupes", ())
            if dupes:
                roi, fld, _ = _where(doc, (*path, dupes[0]))
                raise _err(
                    roi,
                    fld,
                    "given more than once in one object; keep one (a JSON reader would "
                    "silently use the last)",
                )
            for k, item in v.items():
                if isinstance(k, str) and _unicode_problem(k):
                    roi, fld, elem = _where(doc, path)
                    raise _err(roi, fld + elem, f"a field name in it {_unicode_problem(k)}")
                stack.append((item, (*path, k)))
        elif isinstance(v, list | tuple):
            stack.extend((item, (*path, i)) for i, item in enumerate(v))
        if problem:
            roi, fld, elem = _where(doc, path)
            raise _err(roi, fld, f"element {elem} {problem}" if elem else problem)


def _unicode_problem(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate such as \\ud800)"
    return ""


# --------------------------------------------------------------------------------------
# misspelt field names
#: Unit suffixes of known field names; ``radius`` or ``radius_cm`` for ``radius_mm`` is
#: refused, since the value would be ignored (or read in the wrong unit).
_UNIT_SUFFIXES = ("_mg_cm3", "_mm", "_deg")
_UNIT_WORDS = {"_mg_cm3": "mg/cm³", "_mm": "mm", "_deg": "degrees"}
#: Prefix of a user's own field names that are never taken for misspellings.
OWN_FIELD_PREFIX = "x_"


def _norm(name: str) -> str:
    """Case and separators ignored: ``Roi-ID`` and ``roi_id`` compare equal."""
    return re.sub(r"[\s_.-]+", "", name.casefold())


def _max_edits(n: int) -> int:
    """Edits tolerated for a known name of ``n`` (normalised) characters.

    Short names get fewer: two edits would make ``label`` a misspelling of ``level`` and
    ``time`` one of ``type``.
    """
    return 0 if n < 4 else 1 if n <= 6 else 2


def _edits(a: str, b: str, cap: int) -> int:
    """Optimal-string-alignment (restricted Damerau–Levenshtein) distance, capped.

    Insertions, deletions, substitutions and transpositions of two neighbours count one
    each (``levle`` is one edit from ``level``).  Returns ``cap + 1`` once the distance
    exceeds ``cap``.
    """
    if abs(len(a) - len(b)) > cap:
        return cap + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > cap:
            return cap + 1
        prev2, prev = prev, cur
    return min(prev[-1], cap + 1)


def misspelt_field(name: str, known: Iterable[str]) -> tuple[str, str] | None:
    """The known field that ``name`` looks like a misspelling of, and why; else None.

    ``name`` (not itself a known name) is taken for a misspelling of a known name ``k``
    when, ignoring case and the separators ``_ - . space``:

    * it equals ``k`` (``Level``, ``roiId``, ``time_point``);
    * ``k`` has a unit suffix (``_mm``, ``_deg``, ``_mg_cm3``) and ``name`` is its stem
      alone (``radius``) or the stem with another unit (``radius_cm``, ``center_ras``,
      ``angle_rad``);
    * it is at most 1 edit from ``k`` or from that stem when they have 4–6 characters, at
      most 2 edits when they have 7 or more (insertion, deletion, substitution, or swapping
      two neighbours: ``levle``, ``timpoint``, ``centre_mm``).

    Names starting with ``x_`` (:data:`OWN_FIELD_PREFIX`) are never misspellings.

    Parameters
    ----------
    name : str
        A field name found in the file.
    known : iterable of str
        The known names at that place (top level, ROI or shape).

    Returns
    -------
    (str, str) or None
        The known name and a short reason.
    """
    if name.casefold().startswith(OWN_FIELD_PREFIX):
        return None
    n = _norm(name)
    best: tuple[int, str, str] | None = None
    for k in known:
        if k == name:
            return None
        forms = [(_norm(k), k)]
        stem = next((k[: -len(u)] for u in _UNIT_SUFFIXES if k.endswith(u)), None)
        if n == forms[0][0]:
            return k, "differs only by case or separators"
        if stem is not None:
            unit = _UNIT_WORDS[k[len(stem) :]]
            if n == _norm(stem):
                return k, f"the name carries the unit, {unit}"
            low = name.casefold()
            if re.fullmatch(re.escape(stem.casefold()) + r"[\s_.-]*[a-z0-9]+", low):
                return k, f"another unit or frame; {k!r} is read in {unit}"
            forms.append((_norm(stem), k))
        for form, _ in forms:
            cap = _max_edits(len(form))
            if cap and len(n) >= 3:
                d = _edits(n, form, cap)
                if d <= cap and (best is None or d < best[0]):
                    best = (d, k, f"{d} edit{'s' if d > 1 else ''} away")
    return (best[1], best[2]) if best else None


def _check_names(
    d: Mapping[str, Any], known: Sequence[str], roi_id: str | None, prefix: str = ""
) -> None:
    """Refuse field names of ``d`` that look like misspellings of ``known`` names."""
    for name in d:
        if not isinstance(name, str) or name in known:
            continue
        hit = misspelt_field(name, known)
        if hit is not None:
            k, why = hit
            raise _err(
                roi_id,
                prefix + name,
                f"looks like a misspelling of {prefix + k!r} ({why}); a misspelt field would "
                f"be ignored. Rename it to {k!r}, or to {OWN_FIELD_PREFIX + name!r} if it is a "
                "field of your own",
            )


# --------------------------------------------------------------------------------------
# validation helpers
def _err(roi_id: str | None, fld: str, msg: str) -> RoiFormatError:
    if roi_id is None:
        where = "ROI set"
    elif roi_id.startswith("#"):  # an ROI without a usable roi_id: its position
        where = f"ROI {roi_id}"
    else:
        where = f"ROI {show_value(roi_id)}"
    return RoiFormatError(f"{where}, field {show_value(fld)}: {msg}")


def _finite(value: Any, roi_id: str | None, fld: str) -> float:
    if isinstance(value, _BadNumber):
        raise _err(roi_id, fld, f"must be a finite number; got {value.text} ({value.why})")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(roi_id, fld, f"must be a number; got {show_value(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int of a few hundred digits
        v = math.inf
    if not math.isfinite(v):
        raise _err(
            roi_id,
            fld,
            f"must be finite (no NaN/inf, within ±1.8e308); got {show_value(value)}",
        )
    return v


def _point(value: Any, roi_id: str | None, fld: str) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise _err(
            roi_id, fld, f"must be a list of 3 numbers [x, y, z] (LPS mm); got {show_value(value)}"
        )
    return tuple(_finite(v, roi_id, fld) for v in value)  # type: ignore[return-value]


def _positive(value: Any, roi_id: str | None, fld: str) -> float:
    v = _finite(value, roi_id, fld)
    if v <= 0:
        raise _err(roi_id, fld, f"must be > 0 mm; got {show_value(value)}")
    return v


def _identifier(value: Any, roi_id: str | None, fld: str) -> str:
    """A text identifier (roi_id, patient_id): a string without control characters."""
    if not isinstance(value, str):
        raise _err(roi_id, fld, f"must be a string; got {show_value(value)}")
    if len(value) > MAX_ID_CHARS:
        raise _err(roi_id, fld, f"longer than {MAX_ID_CHARS} characters: {show_value(value)}")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        raise _err(
            roi_id,
            fld,
            f"holds a control character (newline, tab, …): {show_value(value)}; "
            "identifiers are written into every CSV row and message",
        )
    return value


# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """Geometry of one ROI in patient coordinates (LPS, mm).

    Attributes
    ----------
    type : str
        ``circle``, ``ellipse``, ``polygon``, ``sphere`` or ``line``.
    center_mm : tuple of 3 float or None
        Centre (circle, ellipse, sphere).
    radius_mm : float or None
        Radius (circle, sphere).
    radii_mm : tuple of 2 float or None
        Ellipse semi-axes (rx along image X, ry along image Y before rotation).
    angle_deg : float
        Ellipse in-plane rotation of the rx axis from X towards Y (degrees).
    points_mm : tuple of tuple of 3 float or None
        Polygon vertices in order (not repeated at the end); the two end points of a line.
    extra : dict
        Unknown fields of the ``shape`` object, kept for the round trip.
    """

    type: str
    center_mm: tuple[float, float, float] | None = None
    radius_mm: float | None = None
    radii_mm: tuple[float, float] | None = None
    angle_deg: float = 0.0
    points_mm: tuple[tuple[float, float, float], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    has_angle: bool = field(default=False, compare=False, repr=False)

    @property
    def is_2d(self) -> bool:
        """True for area shapes lying on one slice (circle, ellipse, polygon)."""
        return self.type not in ("sphere", "line")

    @property
    def is_line(self) -> bool:
        """True for a line (a length between two points; it selects no voxels)."""
        return self.type == "line"

    @property
    def length_mm(self) -> float | None:
        """Euclidean distance between the two points of a line (mm); None for other shapes."""
        if not self.is_line or self.points_mm is None:
            return None
        a, b = (np.asarray(p, dtype=float) for p in self.points_mm)
        return float(np.linalg.norm(b - a))

    @classmethod
    def from_dict(cls, d: Any, roi_id: str | None = None) -> Shape:
        """Validate and build a shape from its JSON object (raises :class:`RoiFormatError`)."""
        if not isinstance(d, Mapping):
            raise _err(roi_id, "shape", f"must be an object; got {show_value(d)}")
        _check_names(d, _KNOWN_SHAPE_KEYS, roi_id, "shape.")
        t = d.get("type")
        if not isinstance(t, str) or t not in SHAPE_TYPES:
            raise _err(
                roi_id,
                "shape.type",
                f"unknown shape type {show_value(t)}; expected one of {sorted(SHAPE_TYPES)}",
            )
        for f in SHAPE_TYPES[t]:
            if f not in d:
                raise _err(roi_id, f"shape.{f}", f"missing (a {t} needs {list(SHAPE_TYPES[t])})")
        kw: dict[str, Any] = {"type": t}
        if "center_mm" in SHAPE_TYPES[t]:
            kw["center_mm"] = _point(d["center_mm"], roi_id, "shape.center_mm")
        if "radius_mm" in SHAPE_TYPES[t]:
            kw["radius_mm"] = _positive(d["radius_mm"], roi_id, "shape.radius_mm")
        if t == "ellipse":
            r = d["radii_mm"]
            if not isinstance(r, list | tuple) or len(r) != 2:
                raise _err(roi_id, "shape.radii_mm", f"must be [rx, ry] in mm; got {show_value(r)}")
            kw["radii_mm"] = tuple(_positive(v, roi_id, "shape.radii_mm") for v in r)
            if "angle_deg" in d and d["angle_deg"] is not None:
                kw["angle_deg"] = _finite(d["angle_deg"], roi_id, "shape.angle_deg")
                kw["has_angle"] = True
        if t == "polygon":
            pts = d["points_mm"]
            if not isinstance(pts, list | tuple) or len(pts) < 3:
                raise _err(
                    roi_id, "shape.points_mm", f"needs at least 3 points; got {show_value(pts)}"
                )
            p = tuple(_point(v, roi_id, "shape.points_mm") for v in pts)
            _check_planar(np.array(p), roi_id)
            kw["points_mm"] = p
        if t == "line":
            kw["points_mm"] = _line_points(d["points_mm"], roi_id)
        extra = {k: v for k, v in d.items() if k not in _KNOWN_SHAPE_KEYS}
        # keep fields that are known but not used by this type (e.g. radius on a polygon)
        for k in _KNOWN_SHAPE_KEYS:
            if (
                k in d
                and k != "type"
                and k not in SHAPE_TYPES[t]
                and not (t == "ellipse" and k == "angle_deg")
            ):
                extra[k] = d[k]
        return cls(extra=extra, **kw)

    def to_dict(self) -> dict[str, Any]:
        """JSON object of this shape (known fields first, then unknown ones)."""
        out: dict[str, Any] = {"type": self.type}
        if self.center_mm is not None:
            out["center_mm"] = list(self.center_mm)
        if self.radius_mm is not None:
            out["radius_mm"] = self.radius_mm
        if self.radii_mm is not None:
            out["radii_mm"] = list(self.radii_mm)
        if self.type == "ellipse" and (self.has_angle or self.angle_deg != 0.0):
            out["angle_deg"] = self.angle_deg
        if self.points_mm is not None:
            out["points_mm"] = [list(p) for p in self.points_mm]
        out.update(self.extra)
        return out

    def plane_normal(self) -> np.ndarray | None:
        """Unit normal of a polygon's best-fit plane (None for other shapes), shape (3,)."""
        if self.points_mm is None:
            return None
        p = np.asarray(self.points_mm, dtype=float)
        _, _, vt = np.linalg.svd(p - p.mean(axis=0))
        return vt[2]


def _line_points(pts: Any, roi_id: str | None) -> tuple[tuple[float, float, float], ...]:
    """The two end points of a line: two finite [x, y, z] (LPS mm) at least
    :data:`MIN_LINE_MM` apart."""
    if not isinstance(pts, list | tuple) or len(pts) != 2:
        raise _err(
            roi_id,
            "shape.points_mm",
            f"a line needs exactly 2 points [[x, y, z], [x, y, z]] (LPS mm); got {show_value(pts)}",
        )
    p = tuple(_point(v, roi_id, "shape.points_mm") for v in pts)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 - (-1e308) is inf: too far
        d = float(np.linalg.norm(np.subtract(p[1], p[0])))
    if not math.isfinite(d):
        raise _err(roi_id, "shape.points_mm", "the two points are too far apart (not finite)")
    if d < MIN_LINE_MM:
        raise _err(
            roi_id,
            "shape.points_mm",
            f"the two points of the line are the same point ({d:.3g} mm apart); a height "
            "needs two distinct points",
        )
    return p


def _check_planar(p: np.ndarray, roi_id: str | None) -> None:
    c = p - p.mean(axis=0)
    _, s, vt = np.linalg.svd(c)
    if s[1] <= 1e-9 * max(1.0, s[0]):
        raise _err(roi_id, "shape.points_mm", "polygon points are collinear (zero area)")
    dist = np.abs(c @ vt[2])
    if dist.max() > COPLANAR_TOL_MM:
        raise _err(
            roi_id,
            "shape.points_mm",
            f"polygon points are not on one plane (a vertex is {dist.max():.3f} mm off the "
            f"best-fit plane; tolerance {COPLANAR_TOL_MM} mm). Draw the polygon on one slice.",
        )


@dataclass(frozen=True)
class Roi:
    """One region of interest.

    Attributes
    ----------
    roi_id : str
        Unique within its set, e.g. ``"P01-T0-L3"``.
    patient_id : str
    timepoint : str or None
        ``T0``..``T3``.
    series_instance_uid : str
        May be ``""`` for series that lack the tag.
    level : str or None
        Vertebral level (C1–C7, T1–T12, L1–L5, S1–S5) or None for reference ROIs.
    irradiated : bool or None
    lesion_type : str or None
        ``osteolytic``, ``osteoblastic``, ``mixed``, ``none`` or None.
    kind : str
        ``target``, ``reference-air|fat|muscle|water``, ``phantom-<name>``, or for line
        ROIs ``height-anterior|middle|posterior``.
    shape : Shape
    series_key : str
        Fallback series identifier written by the index (optional).
    study_date : str
        ``YYYYMMDD`` or ``YYYY-MM-DD`` (optional; helps matching when UIDs are empty).
    density_mg_cm3 : float or None
        Known density of a phantom insert (``phantom-*`` ROIs), mg/cm³.
    proposed : bool or None
        True for an ROI the tool proposed that the reader has not confirmed yet; None when
        the file does not say.
    registration : dict or None
        How a proposed ROI was registered from its baseline (``hu-roi propagate``): a JSON
        object of numbers, strings, booleans, null and lists/objects of them (metric value,
        transform parameters in mm and radians, iterations); None when absent.
    extra : dict
        Unknown ROI fields, kept for the round trip.
    """

    roi_id: str
    patient_id: str
    shape: Shape
    timepoint: str | None = None
    series_instance_uid: str = ""
    level: str | None = None
    irradiated: bool | None = None
    lesion_type: str | None = None
    kind: str = "target"
    series_key: str = ""
    study_date: str = ""
    density_mg_cm3: float | None = None
    proposed: bool | None = None
    registration: dict[str, Any] | None = field(default=None, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: Any, index: int | None = None) -> Roi:
        """Validate and build an ROI from its JSON object (raises :class:`RoiFormatError`)."""
        if not isinstance(d, Mapping):
            raise RoiFormatError(f"ROI #{index}: must be a JSON object; got {show_value(d)}")
        rid = d.get("roi_id")
        here = f"#{index if index is not None else '?'}"  # the ROI's position, before its id
        usable = isinstance(rid, str) and rid.strip() and not _unicode_problem(rid)
        _check_names(d, _KNOWN_ROI_KEYS, rid if usable else here)
        if not isinstance(rid, str) or not rid.strip():
            raise RoiFormatError(f"ROI {here}: field 'roi_id' missing or not a non-empty string")
        _identifier(rid, here, "roi_id")
        for f in ("patient_id", "shape"):
            if f not in d:
                raise _err(rid, f, "missing")
        pid = _identifier(d["patient_id"], rid, "patient_id")
        tp = d.get("timepoint")
        if tp is not None and tp not in TIMEPOINTS:
            raise _err(
                rid, "timepoint", f"must be one of {list(TIMEPOINTS)} or null; got {show_value(tp)}"
            )
        level = d.get("level")
        if level is not None and level not in LEVELS:
            raise _err(
                rid,
                "level",
                f"must be C1–C7, T1–T12, L1–L5, S1–S5 or null; got {show_value(level)}",
            )
        lt = d.get("lesion_type")
        if lt is not None and lt not in LESION_TYPES:
            raise _err(
                rid,
                "lesion_type",
                f"must be one of {list(LESION_TYPES)} or null; got {show_value(lt)}",
            )
        kind = d.get("kind", "target")
        if not isinstance(kind, str) or not is_valid_kind(kind):
            raise _err(
                rid,
                "kind",
                f"must be target, {', '.join(REFERENCE_KINDS)}, phantom-<name> or (line ROIs) "
                f"{', '.join(HEIGHT_KINDS)}; got {show_value(kind)}",
            )
        irr = d.get("irradiated")
        if irr is not None and not isinstance(irr, bool):
            raise _err(rid, "irradiated", f"must be true, false or null; got {show_value(irr)}")
        uid = d.get("series_instance_uid", "") or ""
        key = d.get("series_key", "") or ""
        sdate = d.get("study_date", "") or ""
        for name, v in (("series_instance_uid", uid), ("series_key", key), ("study_date", sdate)):
            if not isinstance(v, str):
                raise _err(rid, name, f"must be a string; got {show_value(v)}")
        dens = d.get("density_mg_cm3")
        dens_v = None if dens is None else _finite(dens, rid, "density_mg_cm3")
        proposed = d.get("proposed")
        if proposed is not None and not isinstance(proposed, bool):
            raise _err(rid, "proposed", f"must be true, false or null; got {show_value(proposed)}")
        registration = d.get("registration")
        if registration is not None and not isinstance(registration, Mapping):
            raise _err(
                rid,
                "registration",
                f"must be a JSON object or null; got {show_value(registration)}",
            )
        shape = Shape.from_dict(d["shape"], rid)
        if shape.is_line and kind not in HEIGHT_KINDS:
            raise _err(
                rid,
                "kind",
                f"a line ROI measures a vertebral height: its kind must be one of "
                f"{', '.join(HEIGHT_KINDS)}; got {show_value(kind)}",
            )
        if kind in HEIGHT_KINDS and not shape.is_line:
            raise _err(
                rid,
                "shape.type",
                f"an ROI of kind {kind!r} is a height and needs a line shape "
                f'({{"type": "line", "points_mm": [[x, y, z], [x, y, z]]}}); got {show_value(shape.type)}',
            )
        extra = {k: v for k, v in d.items() if k not in _KNOWN_ROI_KEYS}
        return cls(
            roi_id=rid,
            patient_id=pid,
            shape=shape,
            timepoint=tp,
            series_instance_uid=uid,
            level=level,
            irradiated=irr,
            lesion_type=lt,
            kind=kind,
            series_key=key,
            study_date=sdate,
            density_mg_cm3=dens_v,
            proposed=proposed,
            registration=None if registration is None else dict(registration),
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON object of this ROI (docs/roi_format.md field order, then optional and unknown fields)."""
        out: dict[str, Any] = {
            "roi_id": self.roi_id,
            "patient_id": self.patient_id,
            "timepoint": self.timepoint,
            "series_instance_uid": self.series_instance_uid,
            "level": self.level,
            "irradiated": self.irradiated,
            "lesion_type": self.lesion_type,
            "kind": self.kind,
        }
        if self.series_key:
            out["series_key"] = self.series_key
        if self.study_date:
            out["study_date"] = self.study_date
        if self.density_mg_cm3 is not None:
            out["density_mg_cm3"] = self.density_mg_cm3
        if self.proposed is not None:
            out["proposed"] = self.proposed
        if self.registration is not None:
            out["registration"] = self.registration
        out["shape"] = self.shape.to_dict()
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class FileStamp:
    """What a file looked like when it was read: to detect changes before overwriting.

    Attributes
    ----------
    mtime_ns : int
    size : int
        Bytes.
    sha256 : str
        Hex digest of the content.
    """

    mtime_ns: int
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> FileStamp:
        """Stamp of the file at ``path`` as it is now."""
        p = Path(path)
        data = p.read_bytes()
        st = p.stat()
        return cls(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())

    @classmethod
    def of_bytes(cls, data: bytes, st: os.stat_result) -> FileStamp:
        return cls(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class RoiSet:
    """A reader's ROIs, as stored in one ``*.rois.json`` file.

    Attributes
    ----------
    rois : tuple of Roi
    reader : str
        Who drew them (e.g. ``"R1"``).
    version : int
    history : tuple of dict
        Edit history entries (``when``, ``who``, ``tool``, ``changes``).
    extra : dict
        Unknown top-level fields, kept for the round trip.
    path : str or None
        File it was loaded from / saved to.
    stamp : FileStamp or None
        The file as it was when loaded or last saved; ``None`` for a new set.
    """

    rois: tuple[Roi, ...] = ()
    reader: str = ""
    version: int = FORMAT_VERSION
    history: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    path: str | None = field(default=None, compare=False)
    stamp: FileStamp | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for r in self.rois:
            if r.roi_id in seen:
                raise RoiFormatError(
                    f"ROI {show_value(r.roi_id)}, field 'roi_id': duplicated in the set; ids must be unique"
                )
            seen.add(r.roi_id)

    @classmethod
    def from_dict(cls, d: Any) -> RoiSet:
        """Validate and build a set from the file's JSON object."""
        if not isinstance(d, Mapping):
            raise RoiFormatError(
                f"ROI set: top level must be a JSON object; got {type(d).__name__}"
            )
        _check_values(d)
        _check_names(d, _KNOWN_TOP_KEYS, None)
        if d.get("format") != FORMAT_NAME:
            got = show_value(d.get("format"))
            raise _err(None, "format", f"must be {FORMAT_NAME!r}; got {got}")
        ver = d.get("version", FORMAT_VERSION)
        if type(ver) is not int or ver != FORMAT_VERSION:
            raise _err(
                None,
                "version",
                f"version {show_value(ver)} not supported (this tool reads {FORMAT_VERSION})",
            )
        rois = d.get("rois")
        if not isinstance(rois, list):
            raise _err(None, "rois", f"must be a list; got {show_value(rois)}")
        reader = _identifier(d.get("reader", "") or "", None, "reader")
        hist = d.get("history", [])
        if not isinstance(hist, list):
            raise _err(None, "history", f"must be a list; got {show_value(hist)}")
        return cls(
            rois=tuple(Roi.from_dict(r, i) for i, r in enumerate(rois)),
            reader=reader,
            version=ver,
            history=tuple(hist),
            extra={k: v for k, v in d.items() if k not in _KNOWN_TOP_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON object of the set."""
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": self.version,
            "reader": self.reader,
            "rois": [r.to_dict() for r in self.rois],
        }
        out.update(self.extra)
        out["history"] = list(self.history)
        return out

    # convenience editing (returns new sets; the stamp is kept so saving stays safe)
    def with_roi(self, roi: Roi) -> RoiSet:
        """A copy with ``roi`` added, or replacing the ROI with the same ``roi_id``."""
        rois = [r for r in self.rois if r.roi_id != roi.roi_id]
        idx = next((i for i, r in enumerate(self.rois) if r.roi_id == roi.roi_id), len(rois))
        rois.insert(idx, roi)
        return replace(self, rois=tuple(rois))

    def without_roi(self, roi_id: str) -> RoiSet:
        """A copy without the ROI ``roi_id``."""
        return replace(self, rois=tuple(r for r in self.rois if r.roi_id != roi_id))

    def get(self, roi_id: str) -> Roi:
        """The ROI ``roi_id`` (KeyError when absent)."""
        for r in self.rois:
            if r.roi_id == roi_id:
                return r
        raise KeyError(roi_id)


def _parse(data: bytes, path: Path) -> RoiSet:
    try:
        # utf-8-sig: editors on Windows start UTF-8 files with a byte-order mark
        d = _loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RoiFormatError(
            f"{path}: not a JSON file ({exc}); expected a {FORMAT_NAME} file"
        ) from exc
    except RecursionError as exc:
        raise RoiFormatError(f"{path}: JSON nested too deeply to be a {FORMAT_NAME} file") from exc
    try:
        return RoiSet.from_dict(d)
    except RoiFormatError as exc:
        raise RoiFormatError(f"{path}: {exc}") from exc


def load_roiset(path: str | Path) -> RoiSet:
    """Read and validate an ROI set file.

    Parameters
    ----------
    path : str or Path
        A ``*.rois.json`` file.

    Returns
    -------
    RoiSet
        With ``path`` and ``stamp`` (mtime_ns, size, sha256 of the bytes read) set, so that
        :func:`save_roiset` can refuse to overwrite a later change.

    Raises
    ------
    RoiFormatError
        Not JSON, wrong format name, or an invalid ROI (the message names ROI and field).
    FileNotFoundError
    """
    p = Path(path)
    data, st = _read_roi_bytes(p)
    rs = _parse(data, p)
    _warn_unknown_fields(rs, p)
    return replace(rs, path=str(p), stamp=FileStamp.of_bytes(data, st))


#: At most this many unknown field names are logged per file (then a count of the rest).
MAX_UNKNOWN_WARNINGS = 20


def unknown_fields(roiset: RoiSet) -> dict[str, int]:
    """Unknown field names of a set and how many objects carry each.

    Top-level names as they are, ROI fields as ``rois[].name``, shape fields as
    ``rois[].shape.name``.  Known fields a shape type does not use (a ``radius_mm`` on a
    polygon) are not counted.
    """
    out: dict[str, int] = {k: 1 for k in roiset.extra}
    for r in roiset.rois:
        for k in r.extra:
            out[f"rois[].{k}"] = out.get(f"rois[].{k}", 0) + 1
        for k in r.shape.extra:
            if k not in _KNOWN_SHAPE_KEYS:
                out[f"rois[].shape.{k}"] = out.get(f"rois[].shape.{k}", 0) + 1
    return out


def _warn_unknown_fields(roiset: RoiSet, path: Path) -> None:
    """Log each unknown field name once for the file (they are kept, not used)."""
    found = unknown_fields(roiset)
    for name, n in list(found.items())[:MAX_UNKNOWN_WARNINGS]:
        logger.warning(
            "%s: unknown field %s (in %d object%s) kept as it is but not used; "
            "see docs/roi_format.md",
            path,
            show_value(name),
            n,
            "" if n == 1 else "s",
        )
    if len(found) > MAX_UNKNOWN_WARNINGS:
        logger.warning(
            "%s: … and %d more unknown field names", path, len(found) - MAX_UNKNOWN_WARNINGS
        )


#: Largest ROI file read (bytes).  A reader's set for a whole trial is a few MB; anything
#: far larger is not an ROI file and is refused before it is read into memory.
MAX_ROI_FILE_BYTES = 64 * 1024**2


def _read_roi_bytes(p: Path) -> tuple[bytes, os.stat_result]:
    """Bytes and stat of an ROI file; named pipes, devices and huge files are refused."""
    return read_regular_file(p, MAX_ROI_FILE_BYTES, "an ROI file", RoiFormatError)


@contextlib.contextmanager
def _save_lock(p: Path) -> Iterator[None]:
    """Exclusive lock for the check-then-replace of a save (two editors saving at once).

    The lock is an ``flock`` on the ROI file's folder (no lock file is left behind); it
    serialises saves into one folder, which take milliseconds.  Without ``fcntl``
    (Windows) saving is unlocked and only the stamp check protects the file.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _describe_changes(old: Sequence[Roi], new: Sequence[Roi]) -> list[str]:
    o = {r.roi_id: r for r in old}
    n = {r.roi_id: r for r in new}
    changes = [f"added {k}" for k in n if k not in o]
    changes += [f"removed {k}" for k in o if k not in n]
    for k in n:
        if k in o and o[k].to_dict() != n[k].to_dict():
            od, nd = o[k].to_dict(), n[k].to_dict()
            fields = sorted(f for f in set(od) | set(nd) if od.get(f) != nd.get(f))
            changes.append(f"modified {k} ({', '.join(fields)})")
    return changes


def _who(roiset: RoiSet) -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name available (containers)
        user = ""
    if roiset.reader and user:
        return f"{roiset.reader} ({user})"
    return roiset.reader or user or "unknown"


_UNSET: Any = object()


def save_roiset(
    roiset: RoiSet,
    path: str | Path | None = None,
    *,
    expected_stamp: FileStamp | None = _UNSET,
    overwrite: bool = False,
    who: str | None = None,
) -> RoiSet:
    """Write an ROI set atomically, appending an edit-history entry.

    Parameters
    ----------
    roiset : RoiSet
    path : str or Path, optional
        Target file; defaults to ``roiset.path``.
    expected_stamp : FileStamp or None, optional
        How the file on disk must look now (default: ``roiset.stamp`` when saving to the
        file it was loaded from, else ``None`` = the file must not exist).
    overwrite : bool
        Allow replacing an existing file that this set was not loaded from.
    who : str, optional
        Name for the history entry (default: the set's reader and the OS user).

    Returns
    -------
    RoiSet
        The saved set, with the new history entry, ``path`` and ``stamp``.

    Raises
    ------
    RoiConflictError
        The file changed on disk since it was loaded (mtime, size or content), or exists
        and was not loaded by this set (pass ``overwrite=True`` to replace it).
    """
    if path is None:
        if roiset.path is None:
            raise ValueError("save_roiset: no path given and the ROI set has no path")
        path = roiset.path
    p = Path(path)
    if expected_stamp is _UNSET:
        same = roiset.path is not None and Path(roiset.path).resolve() == p.resolve()
        expected_stamp = roiset.stamp if same else None
    with _save_lock(p):
        return _save_locked(roiset, p, expected_stamp, overwrite, who)


def _save_locked(
    roiset: RoiSet, p: Path, expected_stamp: FileStamp | None, overwrite: bool, who: str | None
) -> RoiSet:
    """The body of :func:`save_roiset`, run while holding the file's save lock."""
    old_rois: Sequence[Roi] = ()
    if p.exists():
        data, st = _read_roi_bytes(p)
        current = FileStamp.of_bytes(data, st)
        if expected_stamp is None and not overwrite:
            raise RoiConflictError(
                f"{p} already exists and was not loaded by this ROI set; load it first "
                "(load_roiset) or pass overwrite=True to replace it"
            )
        if expected_stamp is not None and current != expected_stamp:
            raise RoiConflictError(
                f"{p} changed on disk since it was loaded (size {expected_stamp.size} -> "
                f"{current.size} bytes, content hash differs: "
                f"{expected_stamp.sha256 != current.sha256}); reload it and redo the edit, "
                "or save under another name"
            )
        try:
            old_rois = _parse(data, p).rois
        except RoiFormatError:
            old_rois = ()
    changes = _describe_changes(old_rois, roiset.rois) or ["no changes"]
    entry = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "who": who or _who(roiset),
        "tool": f"hu-roi {__version__}",
        "changes": changes,
    }
    saved = replace(roiset, history=(*roiset.history, entry))
    text = json.dumps(saved.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    payload = text.encode("utf-8")
    atomic_write_bytes(p, payload)
    st2 = p.stat()
    stamp = FileStamp(st2.st_mtime_ns, st2.st_size, hashlib.sha256(payload).hexdigest())
    logger.info("saved %d ROIs to %s (%s)", len(saved.rois), p, "; ".join(changes))
    return replace(saved, path=str(p), stamp=stamp)


def find_roi_files(path: str | Path) -> list[Path]:
    """ROI files at ``path``: the file itself, or every ``*.rois.json`` below a folder (sorted)."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.rglob("*.rois.json") if q.is_file())
    return [p]


# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesMatch:
    """Result of :func:`match_series`.

    Attributes
    ----------
    info : SeriesInfo or None
        The matched series, None when none matched.
    how : str
        ``"uid"``, ``"series_key"``, ``"only-series"`` or ``""``.
    reason : str
        Short code when unmatched: ``series-not-found`` or ``series-ambiguous``.
    detail : str
        Human-readable explanation.
    """

    info: SeriesInfo | None
    how: str = ""
    reason: str = ""
    detail: str = ""


_NOT_MEASURABLE = frozenset({"not-ct", "localizer"})


def match_series(roi: Roi, series: Iterable[SeriesInfo]) -> SeriesMatch:
    """Find the series an ROI was drawn on.

    Rule: the series whose ``series_instance_uid`` equals the ROI's (when not empty); else
    the series whose ``series_key`` equals the ROI's; else, if the folder holds exactly one
    CT series (not a localizer) for the ROI's patient — restricted to the ROI's
    ``study_date`` when it has one — that series.  Otherwise no match.
    """
    series = list(series)
    if roi.series_instance_uid:
        hits = [s for s in series if s.series_instance_uid == roi.series_instance_uid]
        if len(hits) == 1:
            return SeriesMatch(hits[0], "uid")
        if len(hits) > 1:
            if roi.series_key:
                k = [s for s in hits if s.series_key == roi.series_key]
                if len(k) == 1:
                    return SeriesMatch(k[0], "series_key")
            return SeriesMatch(
                None,
                "",
                "series-ambiguous",
                f"{len(hits)} series share SeriesInstanceUID {roi.series_instance_uid}",
            )
    if roi.series_key:
        hits = [s for s in series if s.series_key == roi.series_key]
        if len(hits) == 1:
            return SeriesMatch(hits[0], "series_key")
    if roi.series_instance_uid or roi.series_key:
        # an explicit identifier that is not in the folder: do not guess
        return SeriesMatch(
            None,
            "",
            "series-not-found",
            f"no series with SeriesInstanceUID {show_value(roi.series_instance_uid)} / series_key "
            f"{show_value(roi.series_key)} in the DICOM folder",
        )
    cands = [
        s
        for s in series
        if s.patient_id == roi.patient_id and not (set(s.problems) & _NOT_MEASURABLE)
    ]
    if roi.study_date:  # YYYYMMDD (DICOM) and YYYY-MM-DD (ISO) name the same day
        day = roi.study_date.replace("-", "")
        cands = [s for s in cands if s.study_date.replace("-", "") == day]
    if len(cands) == 1:
        return SeriesMatch(cands[0], "only-series")
    if not cands:
        return SeriesMatch(
            None,
            "",
            "series-not-found",
            f"no CT series for patient {show_value(roi.patient_id)}"
            + (f" on {roi.study_date}" if roi.study_date else ""),
        )
    return SeriesMatch(
        None,
        "",
        "series-ambiguous",
        f"{len(cands)} CT series for patient {show_value(roi.patient_id)}"
        + (f" on {roi.study_date}" if roi.study_date else "")
        + "; the ROI needs series_instance_uid or series_key",
    )


# --------------------------------------------------------------------------------------
def voxel_lps_mm(info: SeriesInfo, slice_index: int, row: int, col: int) -> np.ndarray:
    """LPS position (mm) of the centre of voxel (slice, row, column) of a series.

    ``IPP_k + col·ΔC·X + row·ΔR·Y``: ImagePositionPatient of slice ``slice_index`` (in the
    series' order along the normal, as ``slice_index`` in the measurement CSV), X and Y
    the row and column directions of ImageOrientationPatient, (ΔR, ΔC) = PixelSpacing.

    Parameters
    ----------
    info : SeriesInfo
    slice_index, row, col : int
        0-based; must lie inside the series (``n_slices``, ``rows``, ``columns``).

    Returns
    -------
    numpy.ndarray, shape (3,)
        x, y, z in mm (LPS).

    Raises
    ------
    ValueError
        An index outside the series.
    """
    for name, v, n in (
        ("slice", slice_index, info.n_slices),
        ("row", row, info.rows),
        ("column", col, info.columns),
    ):
        if not 0 <= v < n:
            raise ValueError(f"{name} {v} is outside the series (0 … {n - 1})")
    x = np.asarray(info.orientation[:3], dtype=float)
    y = np.asarray(info.orientation[3:], dtype=float)
    dr, dc = info.pixel_spacing_mm
    ipp = np.asarray(info.slices[slice_index].position_lps_mm, dtype=float)
    return ipp + col * dc * x + row * dr * y


def _inside_series(p: np.ndarray, info: SeriesInfo) -> bool:
    """True when point ``p`` (LPS mm) lies within the imaged block of the series.

    In-plane: within half a pixel of the outermost voxel centres; along the normal:
    within half a slice spacing of the first/last slice.
    """
    pos = info.positions_along_normal_mm
    if pos.size == 0:
        return False
    sp = info.slice_spacing_mm
    half = 0.5 * sp if math.isfinite(sp) and sp > 0 else 0.5
    h = float(p @ info.normal)
    if not pos.min() - half <= h <= pos.max() + half:
        return False
    k = int(np.argmin(np.abs(pos - h)))
    d = p - np.asarray(info.slices[k].position_lps_mm, dtype=float)
    dr, dc = info.pixel_spacing_mm
    col = float(d @ np.asarray(info.orientation[:3], dtype=float)) / dc
    row = float(d @ np.asarray(info.orientation[3:], dtype=float)) / dr
    return -0.5 <= col <= info.columns - 0.5 and -0.5 <= row <= info.rows - 0.5


def frame_hint(shape: Shape, info: SeriesInfo) -> str:
    """What to tell a user whose ROI covers no voxel of a series: where the image is.

    Gives the extent of the image's voxel centres in LPS mm and, when the shape's centre
    (a polygon's mean vertex) lies outside the image but would lie inside with x and y
    negated, says that the coordinates look like RAS (3D Slicer's frame) instead of LPS.

    Parameters
    ----------
    shape : Shape
    info : SeriesInfo
        The series the ROI was matched to.

    Returns
    -------
    str
        One line without a trailing period, e.g. ``"image extent (LPS, voxel centres): x
        -249.5 … 249.5, y -180.0 … 319.0, z -800.0 … -760.0 mm"`` (empty when the series
        has no slices).
    """
    if not info.slices or info.rows < 1 or info.columns < 1:
        return ""
    dr, dc = info.pixel_spacing_mm
    x = np.asarray(info.orientation[:3], dtype=float)
    y = np.asarray(info.orientation[3:], dtype=float)
    ends = [np.asarray(s.position_lps_mm, dtype=float) for s in (info.slices[0], info.slices[-1])]
    corners = np.array(
        [
            o + c * (info.columns - 1) * dc * x + r * (info.rows - 1) * dr * y
            for o in ends
            for c in (0, 1)
            for r in (0, 1)
        ]
    )
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    text = "image extent (LPS, voxel centres): " + ", ".join(
        f"{a} {lo[i]:.1f} … {hi[i]:.1f}" for i, a in enumerate("xyz")
    )
    text += " mm"
    if shape.center_mm is not None:
        p = np.asarray(shape.center_mm, dtype=float)
    elif shape.points_mm is not None:
        p = np.asarray(shape.points_mm, dtype=float).mean(axis=0)
    else:  # pragma: no cover - every shape has a centre or points
        return text
    with np.errstate(all="ignore"):  # absurd coordinates (1e308) are simply outside
        if not np.all(np.isfinite(p)) or _inside_series(p, info):
            return text
        ras = _inside_series(p * np.array([-1.0, -1.0, 1.0]), info)
    if ras:
        text += (
            f"; the ROI centre ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm would lie inside with x "
            "and y negated: its coordinates look like RAS (3D Slicer), but hu-roi reads LPS "
            "(negate x and y; see docs/roi_format.md)"
        )
    return text
