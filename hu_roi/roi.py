"""ROI sets: the ``hu-roi.roiset`` JSON file (``*.rois.json``), validated and round-tripped.

File layout (see ``/work/shared/DESIGN.md`` and ``docs/``)::

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

Unknown fields (top level, per ROI and inside ``shape``) are kept and written back.
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hu_roi import __version__
from hu_roi.errors import RoiConflictError, RoiFormatError
from hu_roi.series import SeriesInfo
from hu_roi.util import atomic_write_bytes, read_regular_file

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SHAPE_TYPES",
    "LEVELS",
    "TIMEPOINTS",
    "LESION_TYPES",
    "REFERENCE_KINDS",
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
]

FORMAT_NAME = "hu-roi.roiset"
FORMAT_VERSION = 1
#: Shape types and the fields each requires (besides ``type``).
SHAPE_TYPES: dict[str, tuple[str, ...]] = {
    "circle": ("center_mm", "radius_mm"),
    "ellipse": ("center_mm", "radii_mm"),
    "polygon": ("points_mm",),
    "sphere": ("center_mm", "radius_mm"),
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
    "shape",
)
_KNOWN_SHAPE_KEYS = ("type", "center_mm", "radius_mm", "radii_mm", "angle_deg", "points_mm")
_KNOWN_TOP_KEYS = ("format", "version", "reader", "rois", "history")


def is_valid_kind(kind: str) -> bool:
    """True for ``target``, the ``reference-*`` kinds and ``phantom-<name>``."""
    return kind == "target" or kind in REFERENCE_KINDS or bool(_PHANTOM_RE.match(kind))


# --------------------------------------------------------------------------------------
# validation helpers
def _err(roi_id: str | None, fld: str, msg: str) -> RoiFormatError:
    where = f"ROI {roi_id!r}" if roi_id is not None else "ROI set"
    return RoiFormatError(f"{where}, field {fld!r}: {msg}")


def _finite(value: Any, roi_id: str | None, fld: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(roi_id, fld, f"must be a number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise _err(roi_id, fld, f"must be finite (no NaN/inf); got {value!r}")
    return v


def _point(value: Any, roi_id: str | None, fld: str) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise _err(roi_id, fld, f"must be a list of 3 numbers [x, y, z] (LPS mm); got {value!r}")
    return tuple(_finite(v, roi_id, fld) for v in value)  # type: ignore[return-value]


def _positive(value: Any, roi_id: str | None, fld: str) -> float:
    v = _finite(value, roi_id, fld)
    if v <= 0:
        raise _err(roi_id, fld, f"must be > 0 mm; got {value!r}")
    return v


# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """Geometry of one ROI in patient coordinates (LPS, mm).

    Attributes
    ----------
    type : str
        ``circle``, ``ellipse``, ``polygon`` or ``sphere``.
    center_mm : tuple of 3 float or None
        Centre (circle, ellipse, sphere).
    radius_mm : float or None
        Radius (circle, sphere).
    radii_mm : tuple of 2 float or None
        Ellipse semi-axes (rx along image X, ry along image Y before rotation).
    angle_deg : float
        Ellipse in-plane rotation of the rx axis from X towards Y (degrees).
    points_mm : tuple of tuple of 3 float or None
        Polygon vertices in order (not repeated at the end).
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
        """True for shapes lying on one slice (circle, ellipse, polygon)."""
        return self.type != "sphere"

    @classmethod
    def from_dict(cls, d: Any, roi_id: str | None = None) -> Shape:
        """Validate and build a shape from its JSON object (raises :class:`RoiFormatError`)."""
        if not isinstance(d, Mapping):
            raise _err(roi_id, "shape", f"must be an object; got {d!r}")
        t = d.get("type")
        if not isinstance(t, str) or t not in SHAPE_TYPES:
            raise _err(
                roi_id,
                "shape.type",
                f"unknown shape type {t!r}; expected one of {sorted(SHAPE_TYPES)}",
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
                raise _err(roi_id, "shape.radii_mm", f"must be [rx, ry] in mm; got {r!r}")
            kw["radii_mm"] = tuple(_positive(v, roi_id, "shape.radii_mm") for v in r)
            if "angle_deg" in d and d["angle_deg"] is not None:
                kw["angle_deg"] = _finite(d["angle_deg"], roi_id, "shape.angle_deg")
                kw["has_angle"] = True
        if t == "polygon":
            pts = d["points_mm"]
            if not isinstance(pts, list | tuple) or len(pts) < 3:
                raise _err(roi_id, "shape.points_mm", f"needs at least 3 points; got {pts!r}")
            p = tuple(_point(v, roi_id, "shape.points_mm") for v in pts)
            _check_planar(np.array(p), roi_id)
            kw["points_mm"] = p
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
        ``target``, ``reference-air|fat|muscle|water`` or ``phantom-<name>``.
    shape : Shape
    series_key : str
        Fallback series identifier written by the index (optional).
    study_date : str
        ``YYYYMMDD`` (optional; helps matching when UIDs are empty).
    density_mg_cm3 : float or None
        Known density of a phantom insert (``phantom-*`` ROIs), mg/cm³.
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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: Any, index: int | None = None) -> Roi:
        """Validate and build an ROI from its JSON object (raises :class:`RoiFormatError`)."""
        if not isinstance(d, Mapping):
            raise RoiFormatError(f"ROI #{index}: must be a JSON object; got {d!r}")
        rid = d.get("roi_id")
        if not isinstance(rid, str) or not rid.strip():
            raise RoiFormatError(f"ROI #{index}: field 'roi_id' missing or not a non-empty string")
        for f in ("patient_id", "shape"):
            if f not in d:
                raise _err(rid, f, "missing")
        pid = d["patient_id"]
        if not isinstance(pid, str):
            raise _err(rid, "patient_id", f"must be a string; got {pid!r}")
        tp = d.get("timepoint")
        if tp is not None and tp not in TIMEPOINTS:
            raise _err(rid, "timepoint", f"must be one of {list(TIMEPOINTS)} or null; got {tp!r}")
        level = d.get("level")
        if level is not None and level not in LEVELS:
            raise _err(rid, "level", f"must be C1–C7, T1–T12, L1–L5, S1–S5 or null; got {level!r}")
        lt = d.get("lesion_type")
        if lt is not None and lt not in LESION_TYPES:
            raise _err(
                rid, "lesion_type", f"must be one of {list(LESION_TYPES)} or null; got {lt!r}"
            )
        kind = d.get("kind", "target")
        if not isinstance(kind, str) or not is_valid_kind(kind):
            raise _err(
                rid,
                "kind",
                f"must be target, {', '.join(REFERENCE_KINDS)} or phantom-<name>; got {kind!r}",
            )
        irr = d.get("irradiated")
        if irr is not None and not isinstance(irr, bool):
            raise _err(rid, "irradiated", f"must be true, false or null; got {irr!r}")
        uid = d.get("series_instance_uid", "") or ""
        key = d.get("series_key", "") or ""
        sdate = d.get("study_date", "") or ""
        for name, v in (("series_instance_uid", uid), ("series_key", key), ("study_date", sdate)):
            if not isinstance(v, str):
                raise _err(rid, name, f"must be a string; got {v!r}")
        dens = d.get("density_mg_cm3")
        dens_v = None if dens is None else _finite(dens, rid, "density_mg_cm3")
        shape = Shape.from_dict(d["shape"], rid)
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
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON object of this ROI (DESIGN.md field order, then optional and unknown fields)."""
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
                    f"ROI {r.roi_id!r}, field 'roi_id': duplicated in the set; ids must be unique"
                )
            seen.add(r.roi_id)

    @classmethod
    def from_dict(cls, d: Any) -> RoiSet:
        """Validate and build a set from the file's JSON object."""
        if not isinstance(d, Mapping):
            raise RoiFormatError(
                f"ROI set: top level must be a JSON object; got {type(d).__name__}"
            )
        if d.get("format") != FORMAT_NAME:
            raise _err(None, "format", f"must be {FORMAT_NAME!r}; got {d.get('format')!r}")
        ver = d.get("version", FORMAT_VERSION)
        if ver != FORMAT_VERSION:
            raise _err(
                None, "version", f"version {ver!r} not supported (this tool reads {FORMAT_VERSION})"
            )
        rois = d.get("rois")
        if not isinstance(rois, list):
            raise _err(None, "rois", f"must be a list; got {rois!r}")
        reader = d.get("reader", "") or ""
        if not isinstance(reader, str):
            raise _err(None, "reader", f"must be a string; got {reader!r}")
        hist = d.get("history", [])
        if not isinstance(hist, list):
            raise _err(None, "history", f"must be a list; got {hist!r}")
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
        d = json.loads(data.decode("utf-8"))
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
    return replace(rs, path=str(p), stamp=FileStamp.of_bytes(data, st))


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
            f"no series with SeriesInstanceUID {roi.series_instance_uid!r} / series_key "
            f"{roi.series_key!r} in the DICOM folder",
        )
    cands = [
        s
        for s in series
        if s.patient_id == roi.patient_id and not (set(s.problems) & _NOT_MEASURABLE)
    ]
    if roi.study_date:
        cands = [s for s in cands if s.study_date == roi.study_date]
    if len(cands) == 1:
        return SeriesMatch(cands[0], "only-series")
    if not cands:
        return SeriesMatch(
            None,
            "",
            "series-not-found",
            f"no CT series for patient {roi.patient_id!r}"
            + (f" on {roi.study_date}" if roi.study_date else ""),
        )
    return SeriesMatch(
        None,
        "",
        "series-ambiguous",
        f"{len(cands)} CT series for patient {roi.patient_id!r}"
        + (f" on {roi.study_date}" if roi.study_date else "")
        + "; the ROI needs series_instance_uid or series_key",
    )
