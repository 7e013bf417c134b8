"""``hu-roi rois-from-labels``: proposed target ROIs from a vertebra label map.

For every vertebral level labelled in the map (TotalSegmentator v2 ``vertebrae_*`` values,
:data:`hu_roi.io.labels.TOTALSEG_V2_LEVELS`), one ellipse is proposed in the trabecular
core of the vertebral body (:func:`propose_on_slice`) on the CT slice nearest to the
centroid of the level's label, and written as an ROI with ``"proposed": true`` for the
reader to confirm.  The label map must lie on the CT's grid
(:func:`hu_roi.io.labels.labels_on_volume`); otherwise nothing is written (exit 2, one
line).  :func:`labels_for_volume` and :func:`rois_from_labels` do the work (used by the
command and by the viewer's *Propose ROIs from labels*).  The user-facing description is
docs/labels.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hu_roi.clibase import CliError, add_common_options, plural
from hu_roi.errors import HuRoiError

if TYPE_CHECKING:
    from hu_roi.io.labels import LabelMap
    from hu_roi.roi import Roi
    from hu_roi.series import SeriesInfo
    from hu_roi.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EROSION_MM",
    "DEFAULT_CORTICAL_HU",
    "TARGET_AREA_MM2",
    "MIN_AREA_MM2",
    "BODY_AP_FRACTION",
    "Proposal",
    "core_mask",
    "propose_on_slice",
    "propose_rois",
    "require_vertebrae",
    "LabelProposalError",
    "labels_for_volume",
    "rois_from_labels",
    "add_rois_from_labels_parser",
    "run_rois_from_labels",
]

#: How far (mm) the ROI keeps from the edge of the labelled vertebra (the cortex).
DEFAULT_EROSION_MM = 3.0
#: Voxels of the core at or above this HU are taken for cortex (or a bone island) and kept
#: out of the ellipse.
DEFAULT_CORTICAL_HU = 700.0
#: The proposed ellipse is at least this large (mm²) when the core allows it.
TARGET_AREA_MM2 = 200.0
#: The vertebral body is taken as the anterior part of the level's label: this fraction of
#: the label's anterior-posterior extent (body ~35 mm of ~85 mm with arch and spinous
#: process in the lumbar spine).
BODY_AP_FRACTION = 0.45
#: Least |slice normal · head-foot axis| of a series ROIs are proposed on (axial slices).
AXIAL_MIN_COS = 0.9
#: A level whose core allows less than this (mm²) gets no ROI (noise would dominate it;
#: usually a vertebra only partly imaged or a stray label).
MIN_AREA_MM2 = 100.0
#: Margin (mm) kept from the rasteriser's on-boundary tolerance when fitting: covers the
#: rounding of the written centre and radii (1e-4 mm).
_FIT_EPS_MM = 2e-3


class LabelProposalError(HuRoiError, ValueError):
    """No ROI can be proposed from the label map (the message says why)."""


@dataclass(frozen=True)
class Proposal:
    """An ellipse proposed for one level.

    Attributes
    ----------
    level : str
    label : int
        The label value it came from.
    k : int
        Loaded slice index (into the volume) the ellipse lies on.
    center_rc : tuple of 2 float
        Centre as (row, column) on that slice.
    radii_mm : tuple of 2 float
        (rx, ry): along the rotated X and Y axes, mm.
    angle_deg : float
        Rotation of rx from the row direction X towards Y, degrees.
    core_area_mm2 : float
        Area of the body's core on that slice (after erosion and cortex exclusion), mm².
    """

    level: str
    label: int
    k: int
    center_rc: tuple[float, float]
    radii_mm: tuple[float, float]
    angle_deg: float
    core_area_mm2: float

    @property
    def area_mm2(self) -> float:
        """π·rx·ry, mm²."""
        return math.pi * self.radii_mm[0] * self.radii_mm[1]


def core_mask(
    body: np.ndarray,
    hu: np.ndarray,
    spacing_mm: tuple[float, float],
    *,
    erosion_mm: float = DEFAULT_EROSION_MM,
    cortical_hu: float = DEFAULT_CORTICAL_HU,
) -> np.ndarray:
    """The trabecular core of a vertebra on one slice, shape (rows, columns), bool.

    Voxels of ``body`` whose centre lies at least ``erosion_mm`` inside the body's edge (the
    edge is half a pixel beyond the outermost body voxel centres), below ``cortical_hu``,
    and in the largest connected piece (the body, not the pedicles or the arch).
    """
    from scipy import ndimage

    dr, dc = spacing_mm
    # distance from each body voxel centre to the nearest voxel centre outside the body,
    # less half a pixel: the distance to the body's edge
    padded = np.pad(body, 1)
    dist = ndimage.distance_transform_edt(padded, sampling=(dr, dc))[1:-1, 1:-1]
    core = body & (dist - 0.5 * min(dr, dc) >= erosion_mm - 1e-9) & (hu < cortical_hu)
    lab, n = ndimage.label(core)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        core = lab == (int(np.argmax(sizes)) + 1)
    return core


def _ellipse_pixels(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    center_rc: tuple[float, float],
    radii_mm: tuple[float, float],
    angle_deg: float,
) -> np.ndarray:
    """Pixels whose centre lies in the ellipse, with the rasteriser's boundary tolerance
    plus a margin (so a fit here is inside with hu-roi's own rasterisation too)."""
    from hu_roi.rasterize import EPS_MM

    dr, dc = spacing_mm
    rows, cols = np.indices(shape)
    du = (cols - center_rc[1]) * dc
    dv = (rows - center_rc[0]) * dr
    t = math.radians(angle_deg)
    a = du * math.cos(t) + dv * math.sin(t)
    b = -du * math.sin(t) + dv * math.cos(t)
    rx, ry = radii_mm
    tol = (EPS_MM + _FIT_EPS_MM) / min(rx, ry)
    return (a / rx) ** 2 + (b / ry) ** 2 <= (1.0 + tol) ** 2  # type: ignore[no-any-return]


def _fit(
    core: np.ndarray, spacing_mm: tuple[float, float], center_rc: tuple[float, float]
) -> tuple[tuple[float, float], float] | None:
    """Largest scaled copy of the core's moment ellipse at ``center_rc`` inside the core."""
    dr, dc = spacing_mm
    rr, cc = np.nonzero(core)
    x = (cc - center_rc[1]) * dc
    y = (rr - center_rc[0]) * dr
    cov = np.cov(np.vstack([x, y])) if x.size > 2 else np.eye(2)
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 1e-6)
    major = v[:, 1]
    angle = math.degrees(math.atan2(float(major[1]), float(major[0])))
    # radii of the ellipse with the core's second moments (2·sqrt(λ))
    base = (2.0 * math.sqrt(float(w[1])), 2.0 * math.sqrt(float(w[0])))

    def inside(rx: float, ry: float) -> bool:
        m = _ellipse_pixels(core.shape, spacing_mm, center_rc, (rx, ry), angle)
        return bool(np.all(core[m]))

    def largest(f: Any, hi: float) -> float:
        """Largest s in [0, hi] with f(s) true (f monotone), by bisection."""
        if f(hi):
            return hi
        lo = 0.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if f(mid) else (lo, mid)
        return lo

    # the moment ellipse scaled down until it holds only core voxels, then each radius
    # grown on its own as far as the core allows (pixel steps leave room)
    s = largest(lambda t: inside(base[0] * t, base[1] * t), 1.0)
    if s <= 0 or base[1] * s < 0.5 * min(dr, dc):
        return None
    rx, ry = base[0] * s, base[1] * s
    rx *= largest(lambda t: inside(rx * t, ry), 2.0 / max(s, 0.5))
    ry *= largest(lambda t: inside(rx, ry * t), 2.0 / max(s, 0.5))
    return (rx, ry), angle


def propose_on_slice(
    body: np.ndarray,
    hu: np.ndarray,
    spacing_mm: tuple[float, float],
    *,
    erosion_mm: float = DEFAULT_EROSION_MM,
    cortical_hu: float = DEFAULT_CORTICAL_HU,
) -> tuple[tuple[float, float], tuple[float, float], float, float] | None:
    """Ellipse in the trabecular core of one vertebra on one slice.

    Parameters
    ----------
    body : numpy.ndarray of bool, shape (rows, columns)
        The vertebra's label on the slice.
    hu : numpy.ndarray, shape (rows, columns)
        HU of the slice.
    spacing_mm : (float, float)
        (ΔR, ΔC), mm.

    Returns
    -------
    (center_rc, radii_mm, angle_deg, core_area_mm2) or None
        The largest copy of the core's moment ellipse (same orientation and aspect) that
        holds only core voxels, centred at the core's centroid or, when larger, at its
        deepest point; None when the core is empty.
    """
    from scipy import ndimage

    rows, cols = np.nonzero(body)
    if rows.size == 0:
        return None
    # work on the body's bounding box (plus a margin): the same result, much faster
    r0, c0 = max(int(rows.min()) - 2, 0), max(int(cols.min()) - 2, 0)
    box = (slice(r0, int(rows.max()) + 3), slice(c0, int(cols.max()) + 3))
    body, hu = body[box], hu[box]
    core = core_mask(body, hu, spacing_mm, erosion_mm=erosion_mm, cortical_hu=cortical_hu)
    if not core.any():
        return None
    dr, dc = spacing_mm
    rr, cc = np.nonzero(core)
    centres = [(float(rr.mean()), float(cc.mean()))]
    dist = ndimage.distance_transform_edt(np.pad(core, 1), sampling=(dr, dc))[1:-1, 1:-1]
    deep = np.unravel_index(int(np.argmax(dist)), dist.shape)
    centres.append((float(deep[0]), float(deep[1])))
    best = None
    for c in centres:
        fit = _fit(core, spacing_mm, c)
        if fit and (best is None or fit[0][0] * fit[0][1] > best[1][0] * best[1][1]):
            best = (c, fit[0], fit[1])
    if best is None:
        return None
    centre = (best[0][0] + r0, best[0][1] + c0)
    return centre, best[1], best[2], float(core.sum() * dr * dc)


def propose_rois(
    labels: np.ndarray,
    volume: Volume,
    table: dict[int, str],
    *,
    erosion_mm: float = DEFAULT_EROSION_MM,
    cortical_hu: float = DEFAULT_CORTICAL_HU,
) -> tuple[list[Proposal], list[str]]:
    """One proposal per labelled level of ``table`` found in ``labels``.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (slices, rows, columns)
        Label per voxel of ``volume`` (:func:`hu_roi.io.labels.labels_on_volume`).
    table : dict of int -> str
        Label value -> level.

    Returns
    -------
    (proposals, skipped)
        ``skipped``: one line per level that gave no ROI, with the reason.
    """
    n = volume.normal
    if abs(float(n[2])) < AXIAL_MIN_COS:
        raise LabelProposalError(
            "ROIs are proposed on axial slices; this series' slice normal is "
            f"{np.round(n, 3).tolist()} (LPS), not head-foot"
        )
    present = [int(v) for v in np.unique(labels) if int(v) in table]
    out: list[Proposal] = []
    skipped: list[str] = []
    pos = volume.slice_positions_mm
    nk, nr, nc = labels.shape
    dr, dc = volume.pixel_spacing_mm
    # anterior coordinate (mm, -y of LPS) of every pixel of every slice: the body is the
    # anterior part of a vertebra label that also holds the arch and spinous process
    ant_o = -volume.slice_origins_lps_mm[:, 1]
    ant_r = -float(volume.col_dir[1]) * dr
    ant_c = -float(volume.row_dir[1]) * dc
    grid = np.arange(nr)[:, None] * ant_r + np.arange(nc)[None, :] * ant_c
    for value in present:
        level = table[value]
        ks, rs, cs = np.nonzero(labels == value)
        ant = ant_o[ks] + rs * ant_r + cs * ant_c
        a_lo, a_hi = float(ant.min()), float(ant.max())
        front = a_hi - BODY_AP_FRACTION * (a_hi - a_lo)
        in_body = ant >= front
        # centroid of the body part along the slice normal, in mm (uneven slices allowed)
        z = float(pos[ks[in_body]].mean())
        order = np.argsort(np.abs(pos - z), kind="stable")
        done = False
        for k in order[:3]:  # the nearest slice, or a neighbour if that one has no core
            body = (labels[k] == value) & (ant_o[k] + grid >= front)
            if not body.any():
                continue
            fit = propose_on_slice(
                body,
                np.asarray(volume.hu[k], dtype=float),
                volume.pixel_spacing_mm,
                erosion_mm=erosion_mm,
                cortical_hu=cortical_hu,
            )
            if fit is None:
                continue
            centre, radii, angle, core_area = fit
            out.append(Proposal(level, value, int(k), centre, radii, angle, core_area))
            done = True
            break
        if not done:
            skipped.append(
                f"{level} (label {value}): no voxel of its body lies {erosion_mm:g} mm inside "
                f"its edge below {cortical_hu:g} HU near its centroid; no ROI proposed"
            )
    return out, skipped


def labels_for_volume(
    path: str | Path, volume: Volume, *, label_map: LabelMap | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """A label map file (NIfTI or DICOM SEG) on a CT volume's grid, with its level table.

    Parameters
    ----------
    path : path
        ``.nii``/``.nii.gz`` (TotalSegmentator v2 values, :data:`TOTALSEG_V2_LEVELS`) or a
        DICOM SEG made from the CT (levels from its segment labels).
    volume : Volume
        The whole CT series (every slice).
    label_map : LabelMap, optional
        The NIfTI at ``path`` read and checked already (:func:`hu_roi.io.labels.read_label_map`,
        :func:`require_vertebrae`), as the command does before it reads the CT.

    Returns
    -------
    (labels, table)
        Label per CT voxel, shape (slices, rows, columns) int32, and label value -> level.

    Raises
    ------
    LabelMapError
        Not readable, not on the CT's grid, of another series (:mod:`hu_roi.io.labels`).
    LabelProposalError
        No vertebra label at all, or none on this series' voxels.
    """
    from hu_roi.io.labels import (
        TOTALSEG_V2_LEVELS,
        is_dicom_file,
        label_map_on_volume,
        read_label_map,
    )

    name = Path(path).name
    if label_map is None and not is_dicom_file(path):  # refused before the grid check
        label_map = read_label_map(path)
        require_vertebrae(label_map.labels, TOTALSEG_V2_LEVELS, label_map.path)
    labels, table = label_map_on_volume(path, volume, label_map=label_map)
    if not np.isin(labels, list(table)).any():
        where = f"series {volume.info.series_key}" if volume.info is not None else "this CT"
        raise LabelProposalError(f"no vertebra label of {name} lies on the voxels of {where}")
    return labels, table


def require_vertebrae(values: np.ndarray, table: dict[int, str], path: Path) -> None:
    """Refuse a label map none of whose values is a vertebra of ``table``."""
    if not np.isin(values, list(table)).any():
        raise LabelProposalError(
            f"{path} holds no vertebra label (TotalSegmentator v2 values 26-50, "
            "vertebrae_S1 … vertebrae_C1; see docs/labels.md)"
        )


def rois_from_labels(
    labels: np.ndarray,
    volume: Volume,
    table: dict[int, str],
    *,
    timepoint: str,
    patient_id: str,
    source: str,
    info: SeriesInfo | None = None,
    erosion_mm: float = DEFAULT_EROSION_MM,
    cortical_hu: float = DEFAULT_CORTICAL_HU,
) -> tuple[list[Roi], list[str]]:
    """Proposed target ROIs (``proposed=True``), one per labelled level with a usable core.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (slices, rows, columns)
        Label per voxel of ``volume`` (:func:`labels_for_volume`).
    volume : Volume
        The whole CT series.
    table : dict of int -> str
        Label value -> level.
    timepoint, patient_id : str
        Of the new ROIs (``roi_id`` = ``PATIENT-TIMEPOINT-LEVEL``).
    source : str
        Name of the label map, written into each ROI's ``registration`` record.
    info : SeriesInfo, optional
        The CT series (default ``volume.info``).
    erosion_mm : float
        Distance kept from the vertebra's edge, mm (at least 3).
    cortical_hu : float
        Voxels at or above this HU are left out as cortex.

    Returns
    -------
    (rois, notes)
        ``notes``: one line per level without an ROI or with a small one, with the reason.

    Raises
    ------
    LabelProposalError
        Bad options, a non-axial series, or no ROI at all (the message says why).
    """
    from hu_roi.rasterize import mask_on_slice
    from hu_roi.roi import Roi

    info = info if info is not None else volume.info
    if info is None:
        raise LabelProposalError("the CT volume carries no series header")
    if not (math.isfinite(erosion_mm) and erosion_mm >= 3.0):
        raise LabelProposalError(f"the erosion must be at least 3 mm; got {erosion_mm}")
    if not math.isfinite(cortical_hu):
        raise LabelProposalError(f"the cortical HU threshold must be a number; got {cortical_hu}")
    if not (patient_id or "").strip():
        raise LabelProposalError(f"series {info.series_key} has no patient id; give one")
    proposals, skipped = propose_rois(
        labels, volume, table, erosion_mm=erosion_mm, cortical_hu=cortical_hu
    )
    if not proposals:
        raise LabelProposalError(
            f"no vertebra of {source} lies in series {info.series_key}"
            + (f" with a usable core: {'; '.join(skipped)}" if skipped else "")
        )
    rois: list[Roi] = []
    for pr in proposals:
        centre = volume.pixel_to_lps(pr.k, np.array(pr.center_rc[0]), np.array(pr.center_rc[1]))
        d: dict[str, Any] = {
            "roi_id": f"{patient_id}-{timepoint}-{pr.level}",
            "patient_id": patient_id,
            "timepoint": timepoint,
            "series_instance_uid": info.series_instance_uid,
            "level": pr.level,
            "irradiated": None,
            "lesion_type": None,
            "kind": "target",
            "proposed": True,
            "shape": {
                "type": "ellipse",
                "center_mm": [round(float(v), 4) for v in centre],
                "radii_mm": [math.floor(r * 1e4) / 1e4 for r in pr.radii_mm],
                "angle_deg": round(pr.angle_deg, 4),
            },
            "registration": {
                "method": "vertebra label map (hu-roi rois-from-labels)",
                "labels": source,
                "label": pr.label,
                "core_area_mm2": round(pr.core_area_mm2, 1),
                "erosion_mm": erosion_mm,
                "cortical_hu": cortical_hu,
            },
        }
        if not info.series_instance_uid:
            d["series_key"] = info.series_key
        if info.study_date:
            d["study_date"] = info.study_date
        roi = Roi.from_dict(d)
        # the written (rounded) ellipse, rasterised as every measurement will, must hold
        # only voxels of the level's label: a proposal is never placed off its vertebra
        m = mask_on_slice(volume, roi, pr.k)
        if not m.any() or np.any(labels[pr.k][m] != pr.label):
            raise LabelProposalError(
                f"internal check failed: the ROI proposed for {pr.level} leaves its label"
            )
        area = float(m.sum()) * volume.pixel_spacing_mm[0] * volume.pixel_spacing_mm[1]
        edge = (
            "; its label reaches the first or last slice (partly imaged?)"
            if np.any(labels[[0, -1]] == pr.label)
            else ""
        )
        if area < MIN_AREA_MM2:
            skipped.append(
                f"{pr.level}: the body's core allows only {area:.0f} mm² "
                f"(< {MIN_AREA_MM2:g} mm²); no ROI proposed, place it by hand{edge}"
            )
            continue
        if area < TARGET_AREA_MM2:
            skipped.append(
                f"{pr.level}: the body's core allows only {area:.0f} mm² "
                f"(< {TARGET_AREA_MM2:g} mm²); check the proposed ROI{edge}"
            )
        rois.append(roi)
    if not rois:
        raise LabelProposalError(
            f"no ROI proposed from {source} on series {info.series_key}: " + "; ".join(skipped)
        )
    return rois, skipped


# --------------------------------------------------------------------------------------
def _find_series(series: list[Any], key: str | None, dicom: Path) -> Any:
    from hu_roi.util import show

    if key is None:
        ct = [s for s in series if s.modality == "CT"]
        if len(ct) == 1:
            return ct[0]
        if not ct:
            raise CliError(f"no CT series in {dicom}")
        raise CliError(
            f"{len(ct)} CT series in {dicom}; choose one with --series (see `hu-roi index {dicom}`)"
        )
    hits = [s for s in series if key in (s.series_key, s.series_instance_uid)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise CliError(
            f"no series {show(key)} in {dicom} (see `hu-roi index {dicom}` for the series_key "
            "and SeriesInstanceUID of each series)"
        )
    raise CliError(f"{len(hits)} series match {show(key)} in {dicom}; give the series_key")


def add_rois_from_labels_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi rois-from-labels`` (``set_defaults(func=run_rois_from_labels)``)."""
    from hu_roi.roi import TIMEPOINTS

    p = subparsers.add_parser(
        "rois-from-labels",
        help="proposed target ROIs from a vertebra label map (NIfTI or DICOM SEG)",
        description="Propose one target ROI (an ellipse in the trabecular core of the "
        "vertebral body) per labelled level of a vertebra label map on the CT slice through "
        'the level\'s centroid, written with "proposed": true. The label map must lie on '
        "the CT's grid. See docs/labels.md.",
    )
    p.add_argument(
        "--labels", required=True, metavar="LABELMAP", help="label map (.nii, .nii.gz) or DICOM SEG"
    )
    p.add_argument("--dicom", required=True, metavar="DIR", help="DICOM folder of the CT")
    p.add_argument(
        "--series",
        metavar="UID_OR_KEY",
        help="SeriesInstanceUID or series_key of the CT (needed when the folder holds several)",
    )
    p.add_argument("--out", required=True, metavar="FILE.rois.json", help="new ROI set")
    p.add_argument("--timepoint", required=True, choices=TIMEPOINTS, help="timepoint of the CT")
    p.add_argument(
        "--patient-id",
        metavar="ID",
        help="patient_id of the ROIs (default: the CT's PatientID; required when it is empty)",
    )
    p.add_argument("--reader", default="", metavar="NAME", help="reader of the ROI set")
    p.add_argument(
        "--erosion-mm",
        type=float,
        default=DEFAULT_EROSION_MM,
        metavar="MM",
        help=f"distance kept from the vertebra's edge (default {DEFAULT_EROSION_MM:g}; at least 3)",
    )
    p.add_argument(
        "--cortical-hu",
        type=float,
        default=DEFAULT_CORTICAL_HU,
        metavar="HU",
        help=f"voxels at or above this HU are left out as cortex (default {DEFAULT_CORTICAL_HU:g})",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the header cache")
    add_common_options(p, quiet_help="no summary line")
    p.set_defaults(func=run_rois_from_labels)


def run_rois_from_labels(args: argparse.Namespace) -> int:
    """Run ``hu-roi rois-from-labels`` (see the module docstring; the work is
    :func:`labels_for_volume` and :func:`rois_from_labels`)."""
    from hu_roi.io import index_folder, load_series
    from hu_roi.io.labels import TOTALSEG_V2_LEVELS, is_dicom_file, read_label_map
    from hu_roi.roi import RoiSet, save_roiset
    from hu_roi.util import OutputSet, printable

    dicom = Path(args.dicom)
    out = Path(args.out)
    if not dicom.is_dir():
        raise CliError(f"no such DICOM folder: {dicom}")
    if not (math.isfinite(args.erosion_mm) and args.erosion_mm >= 3.0):
        raise CliError(f"--erosion-mm must be at least 3 mm; got {args.erosion_mm}")
    if not math.isfinite(args.cortical_hu):
        raise CliError(f"--cortical-hu must be a number; got {args.cortical_hu}")
    OutputSet([("the label map", args.labels), ("the DICOM folder", dicom)]).check(out)
    if out.exists():
        raise CliError(f"{printable(out)} exists; choose another --out (nothing written)")
    lm = None
    if not is_dicom_file(args.labels):  # refused before the CT is indexed and read
        lm = read_label_map(args.labels)
        require_vertebrae(lm.labels, TOTALSEG_V2_LEVELS, lm.path)
    cache = None
    if not args.no_cache:
        from hu_roi.io.cache import HeaderCache

        cache = HeaderCache.default()
    index = index_folder(dicom, cache=cache)
    info = _find_series(list(index.series), args.series, dicom)
    patient = args.patient_id if args.patient_id is not None else info.patient_id
    if not (patient or "").strip():
        raise CliError(f"series {info.series_key} has no PatientID; give --patient-id")
    volume = load_series(info)
    labels, table = labels_for_volume(args.labels, volume, label_map=lm)
    rois, skipped = rois_from_labels(
        labels,
        volume,
        table,
        info=info,
        timepoint=args.timepoint,
        patient_id=patient,
        source=Path(args.labels).name,
        erosion_mm=args.erosion_mm,
        cortical_hu=args.cortical_hu,
    )
    saved = save_roiset(RoiSet(reader=args.reader, rois=tuple(rois)), out, expected_stamp=None)
    for line in skipped:
        logger.warning("%s", line)
    if not getattr(args, "quiet", False):
        print(
            f"hu-roi rois-from-labels: {plural(len(saved.rois), 'ROI')} proposed on series "
            f"{info.series_key} ({', '.join(str(r.level) for r in saved.rois)}); wrote "
            f"{printable(out)}",
            file=sys.stderr,
        )
    return 0
