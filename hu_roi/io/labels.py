"""Vertebra label maps (NIfTI or DICOM SEG) read and put on a CT series' grid.

A label map is an integer array with an affine that maps its voxel indices to patient
coordinates.  NIfTI stores RAS+ world coordinates; DICOM uses LPS, so the NIfTI affine is
turned into an LPS affine by negating its x and y rows (:data:`RAS_TO_LPS`).  TotalSegmentator's
``vertebrae_*`` label values are mapped to vertebral levels by :data:`TOTALSEG_V2_LEVELS`
(the user-facing table is docs/labels.md).

:func:`labels_on_volume` samples a label map at the centres of a CT volume's voxels (nearest
neighbour) after checking that every CT voxel centre coincides with a label voxel centre
(within :data:`ALIGN_TOL_MM`) inside the label grid: a label map on another grid, with
another affine, or covering only part of the CT is refused (:class:`LabelMapError`), never
resampled into a silently shifted mask.

:func:`seg_on_volume` puts the vertebra segments of a DICOM SEG made from the CT series
(frames by referenced SOP Instance UID or position, levels by SegmentLabel) on its slices.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hu_roi.errors import HuRoiError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hu_roi.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "ALIGN_TOL_MM",
    "RAS_TO_LPS",
    "TOTALSEG_V2_LEVELS",
    "LabelMap",
    "LabelMapError",
    "read_label_map",
    "labels_on_volume",
    "label_map_on_volume",
    "check_labels_fit",
    "seg_references",
    "is_dicom_file",
    "level_of_segment",
    "seg_on_volume",
]

#: Largest distance (mm) between a CT voxel centre and the label voxel centre it takes its
#: label from; beyond it the label map is "not on the CT's grid" and refused.
ALIGN_TOL_MM = 0.5

#: RAS+ (NIfTI world) to LPS (DICOM patient) coordinates: negate x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: TotalSegmentator v2, task "total" (``totalsegmentator/map_to_binary.py``, class_map
#: ``total``): label value -> vertebral level.  25 (``sacrum``) is no single level and is
#: left out.  TotalSegmentator v1 numbered the classes differently (vertebrae_L5 = 18);
#: its output needs another table.
TOTALSEG_V2_LEVELS: dict[int, str] = {
    26: "S1",
    27: "L5",
    28: "L4",
    29: "L3",
    30: "L2",
    31: "L1",
    **{32 + i: f"T{12 - i}" for i in range(12)},  # 32 T12 ... 43 T1
    **{44 + i: f"C{7 - i}" for i in range(7)},  # 44 C7 ... 50 C1
}


class LabelMapError(HuRoiError, ValueError):
    """A label map that cannot be read or does not fit the CT (the message says why)."""


@dataclass(frozen=True, eq=False)
class LabelMap:
    """An integer label array and the affine of its voxel indices in LPS.

    Attributes
    ----------
    labels : numpy.ndarray of int, shape (ni, nj, nk)
        Label value per voxel, indexed as stored in the file (NIfTI i, j, k).
    affine_lps : numpy.ndarray, shape (4, 4)
        Maps (i, j, k, 1) to LPS mm (voxel centres).
    path : Path
        The file it was read from.
    """

    labels: np.ndarray
    affine_lps: np.ndarray
    path: Path

    def __post_init__(self) -> None:
        if self.labels.ndim != 3:
            raise LabelMapError(
                f"{self.path}: a label map must be 3-D; got shape {self.labels.shape}"
            )
        a = np.asarray(self.affine_lps, dtype=float)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:3, :3])) < 1e-9:
            raise LabelMapError(
                f"{self.path}: the label map's affine is not invertible: {a.tolist()}"
            )
        object.__setattr__(self, "affine_lps", a)

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k (mm), shape (3,)."""
        return np.linalg.norm(self.affine_lps[:3, :3], axis=0)


def read_label_map(path: str | Path) -> LabelMap:
    """Read a NIfTI label map (``.nii`` or ``.nii.gz``).

    The affine is NIfTI's best affine (sform, else qform) turned from RAS into LPS.
    Values must be whole numbers (a label map, not an image).

    Raises
    ------
    LabelMapError
        Not a NIfTI file, not 3-D, non-integer values, or an unusable affine.
    """
    import nibabel as nib

    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        raise LabelMapError(
            f"{p} is a folder; give one multi-label NIfTI file (TotalSegmentator --ml)"
        )
    if not p.is_file():
        raise FileNotFoundError(2, "No such file or directory", str(p))
    if not name.endswith((".nii", ".nii.gz")):
        raise LabelMapError(
            f"{p}: not a NIfTI file (.nii or .nii.gz); other label map formats are not read yet"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img: Any = nib.load(str(p))
            data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise LabelMapError(f"{p}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    hdr = img.header
    if hasattr(hdr, "get_sform") and int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0:
        raise LabelMapError(
            f"{p}: neither sform nor qform is set, so its voxels have no position in the "
            "patient; write it with the CT's affine"
        )
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LabelMapError(f"{p}: a label map must be 3-D; got shape {data.shape}")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise LabelMapError(f"{p}: holds non-integer values; it is an image, not a label map")
    elif data.dtype.kind not in "iub":
        raise LabelMapError(f"{p}: values of type {data.dtype} are not labels")
    if data.size and (data.min() < 0 or data.max() > np.iinfo(np.int32).max):
        raise LabelMapError(
            f"{p}: label values must lie in 0..2³¹-1; got {data.min()}..{data.max()}"
        )
    return LabelMap(
        labels=np.asarray(data).astype(np.int32),
        affine_lps=RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64),
        path=p,
    )


def _label_index_grid(
    lm: LabelMap, volume: Volume, tol_mm: float
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Check that ``volume``'s voxel centres lie on ``lm``'s voxel centres, slice by slice.

    Yields, for every loaded slice k, (k, label index of its first pixel, label-index
    step per CT row, per CT column), all whole numbers; raises :class:`LabelMapError` at
    the first slice that is off the grid or outside it.
    """
    inv = np.linalg.inv(lm.affine_lps)
    lin = inv[:3, :3]
    dr, dc = volume.pixel_spacing_mm
    step_r = lin @ (volume.col_dir * dr)  # label-index step per CT row
    step_c = lin @ (volume.row_dir * dc)  # label-index step per CT column
    n, rows, cols = volume.shape
    spacing = lm.spacing_mm
    fix = f"write the label map on the CT's grid (same voxels), e.g. run the segmentation on this series ({lm.path.name})"

    def off_mm(idx: np.ndarray) -> float:
        """Distance (mm) from fractional label indices to the nearest label voxel centre."""
        return float(np.max(np.linalg.norm((idx - np.round(idx)) * spacing, axis=-1)))

    for name, step in (("row", step_r), ("column", step_c)):
        if off_mm(step) > tol_mm:
            raise LabelMapError(
                f"the label map is not on the CT's grid: one CT {name} step is "
                f"{np.round(step, 3).tolist()} label voxels (must be whole numbers); {fix}"
            )
    shape = np.array(lm.labels.shape)
    sr = np.round(step_r).astype(int)
    sc = np.round(step_c).astype(int)
    for k in range(n):
        o = inv[:3, :3] @ volume.slice_origins_lps_mm[k] + inv[:3, 3]
        corners = np.array(
            [o + r * step_r + c * step_c for r in (0, rows - 1) for c in (0, cols - 1)]
        )
        d = off_mm(corners)
        if d > tol_mm:
            raise LabelMapError(
                f"the label map is not aligned with the CT: CT slice {int(volume.slice_indices[k])} "
                f"lies {d:.2f} mm from the label voxel centres (tolerance {tol_mm:g} mm); {fix}"
            )
        ci = np.round(corners).astype(int)
        if np.any(ci < 0) or np.any(ci >= shape):
            lo = volume.slice_origins_lps_mm[k]
            raise LabelMapError(
                f"the label map does not cover the CT: slice {int(volume.slice_indices[k])} "
                f"(LPS {np.round(lo, 1).tolist()} mm) lies outside the label grid of shape "
                f"{tuple(int(v) for v in shape)}; {fix}"
            )
        yield k, np.round(o).astype(int), sr, sc


def check_labels_fit(lm: LabelMap, volume: Volume, *, tol_mm: float = ALIGN_TOL_MM) -> None:
    """Raise :class:`LabelMapError` unless ``lm`` lies on ``volume``'s grid (see
    :func:`labels_on_volume`); reads no label value, so ``volume`` may be a header-only
    grid (:func:`hu_roi.volume.header_volume`)."""
    for _ in _label_index_grid(lm, volume, tol_mm):
        pass


def labels_on_volume(lm: LabelMap, volume: Volume, *, tol_mm: float = ALIGN_TOL_MM) -> np.ndarray:
    """The label of every voxel of ``volume`` (nearest neighbour), shape (slices, rows, cols).

    Every CT voxel centre must lie within ``tol_mm`` of a label voxel centre, inside the
    label grid.  The grids may differ in axis order and direction (a NIfTI saved as LAS or
    RAS, a flipped axis) and the label grid may be finer by a whole factor or larger; any
    other difference is refused.

    Raises
    ------
    LabelMapError
        The label map is not on the CT's grid, or does not cover all of it.
    """
    n, rows, cols = volume.shape
    out = np.zeros((n, rows, cols), dtype=np.int32)
    r_idx = np.arange(rows)
    c_idx = np.arange(cols)
    for k, o_i, sr, sc in _label_index_grid(lm, volume, tol_mm):
        idx = o_i[None, None, :] + r_idx[:, None, None] * sr + c_idx[None, :, None] * sc
        out[k] = lm.labels[idx[..., 0], idx[..., 1], idx[..., 2]]
    return out


def label_map_on_volume(
    path: str | Path, volume: Volume, *, label_map: LabelMap | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """A label map file on a CT volume's grid, with its value -> level table.

    A DICOM SEG (a file with the DICOM preamble) goes through :func:`seg_on_volume` (levels
    from its segment labels); anything else is read as NIfTI (``label_map`` when read
    already) and put on the grid by :func:`labels_on_volume`, with the TotalSegmentator v2
    table :data:`TOTALSEG_V2_LEVELS`.

    Raises
    ------
    LabelMapError
        As :func:`read_label_map`, :func:`labels_on_volume` and :func:`seg_on_volume`.
    """
    if is_dicom_file(path):
        return seg_on_volume(path, volume)
    lm = label_map if label_map is not None else read_label_map(path)
    return labels_on_volume(lm, volume), dict(TOTALSEG_V2_LEVELS)


def seg_references(path: str | Path) -> tuple[set[str], str, dict[int, str]]:
    """The SeriesInstanceUIDs a DICOM SEG was made from, its FrameOfReferenceUID and its
    vertebra segments (segment number -> level, :func:`level_of_segment`), from the
    headers only.

    Raises
    ------
    LabelMapError
        Not a readable DICOM SEG.
    """
    ds, _ = _read_seg(path, pixels=False)
    refs = _referenced_series(ds) - {""}
    return refs, str(ds.get("FrameOfReferenceUID", "") or ""), _segments(ds)


def _read_seg(path: str | Path, *, pixels: bool = True) -> tuple[Any, np.ndarray | None]:
    from hu_roi.io.dicom import read_object

    return read_object(
        path, "SEG", LabelMapError, not_a="a SEG", read_as="DICOM SEG", pixels=pixels
    )


def _referenced_series(ds: Any) -> set[str]:
    """The SeriesInstanceUIDs a SEG names in its ReferencedSeriesSequence ("" for an item
    without one)."""
    return {str(s.get("SeriesInstanceUID", "")) for s in ds.get("ReferencedSeriesSequence", [])}


def _segments(ds: Any) -> dict[int, str]:
    """Segment number -> vertebral level of a SEG's vertebra segments (by SegmentLabel)."""
    table: dict[int, str] = {}
    for item in ds.get("SegmentSequence", []):
        level = level_of_segment(str(item.get("SegmentLabel", "")))
        if level is not None:
            table[int(item.SegmentNumber)] = level
    return table


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


_LEVEL_IN_NAME = re.compile(r"(?<![A-Za-z0-9])([CTLS])(\d{1,2})(?![0-9])")


def level_of_segment(label: str) -> str | None:
    """The vertebral level a segment's name gives (``vertebrae_L1``, ``L1 vertebra``,
    ``Vertebra T12``), or None: the name must mention a vertebra and one level only."""
    from hu_roi.roi import LEVELS

    if "vertebra" not in label.lower():
        return None
    found = {f"{a}{int(b)}" for a, b in _LEVEL_IN_NAME.findall(label.replace("_", " "))}
    found &= set(LEVELS)
    return found.pop() if len(found) == 1 else None


def seg_on_volume(path: str | Path, volume: Volume) -> tuple[np.ndarray, dict[int, str]]:
    """A DICOM SEG's vertebra segments on the CT volume it was made from.

    Frames are put on the CT slices by their referenced SOP Instance UID (else by their
    ImagePositionPatient); segments are mapped to levels by their SegmentLabel
    (:func:`level_of_segment`).  A FRACTIONAL segment counts where it is over one half.

    Returns
    -------
    (labels, table)
        Segment number per CT voxel, shape (slices, rows, columns) (0 = none; where
        segments overlap the last one wins), and segment number -> level.

    Raises
    ------
    LabelMapError
        Not a SEG, of another series or Frame of Reference, on another grid, or without
        a vertebra segment.
    """
    p = Path(path)
    info = volume.info
    ds, pixels = _read_seg(p)
    frames = np.asarray(pixels)
    if frames.ndim == 2:
        frames = frames[None]
    table = _segments(ds)
    if not table:
        raise LabelMapError(
            f"{p} holds no vertebra segment (a SegmentLabel such as vertebrae_L1 or 'L1 vertebra')"
        )
    if info is not None:
        ref = _referenced_series(ds)
        for_uid = str(ds.get("FrameOfReferenceUID", ""))
        if info.series_instance_uid and ref and info.series_instance_uid not in ref:
            raise LabelMapError(
                f"{p} belongs to another series (it references {sorted(ref)}, the CT is "
                f"{info.series_instance_uid})"
            )
        if for_uid and info.frame_of_reference_uid and for_uid != info.frame_of_reference_uid:
            raise LabelMapError(
                f"Frame of Reference mismatch: {p} lies in {for_uid}, the CT in "
                f"{info.frame_of_reference_uid}"
            )
    n, rows, cols = volume.shape
    if frames.shape[1:] != (rows, cols):
        raise LabelMapError(
            f"{p}: frames of {frames.shape[1]}x{frames.shape[2]} pixels, the CT has "
            f"{rows}x{cols}; the SEG is not on the CT's grid"
        )
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        spacing = tuple(float(v) for v in measures.PixelSpacing)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        spacing = None
    if spacing is not None and not np.allclose(spacing, volume.pixel_spacing_mm, atol=1e-3):
        raise LabelMapError(
            f"{p}: pixel spacing {spacing} mm, the CT's {volume.pixel_spacing_mm} mm; the SEG "
            "is not on the CT's grid"
        )
    # a volume may hold only some slices of the series (measure reads the slices its ROIs
    # touch): frames of the series' other slices are skipped, by UID or by position
    sop_k: dict[str, int] = {}
    series_sops: set[str] = set()
    loaded: dict[int, int] = {int(i): j for j, i in enumerate(volume.slice_indices)}
    if info is not None:
        for i, sl in enumerate(info.slices):
            if sl.sop_instance_uid:
                series_sops.add(sl.sop_instance_uid)
                if i in loaded:
                    sop_k[sl.sop_instance_uid] = loaded[i]
        all_pos = np.array([s.position_lps_mm for s in info.slices], dtype=float).reshape(-1, 3)
        all_k = [loaded.get(i) for i in range(len(info.slices))]
    else:
        all_pos = volume.slice_origins_lps_mm
        all_k = list(range(n))
    binary = str(ds.get("SegmentationType", "BINARY")) == "BINARY"
    top = float(ds.get("MaximumFractionalValue", 255) or 255)
    out = np.zeros((n, rows, cols), dtype=np.int32)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if len(per_frame) != frames.shape[0]:
        raise LabelMapError(
            f"{p}: {len(per_frame)} frame descriptions for {frames.shape[0]} frames"
        )
    for f, fg in enumerate(per_frame):
        seg_no = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if seg_no not in table:
            continue
        k: int | None = None
        of_series = False  # names a slice of the series (loaded or not)
        for d in fg.get("DerivationImageSequence", []):
            for s in d.get("SourceImageSequence", []):
                uid = str(s.get("ReferencedSOPInstanceUID", ""))
                of_series |= uid in series_sops
                k = sop_k.get(uid, k)
        ipp = None
        if "PlanePositionSequence" in fg:
            ipp = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        if ipp is not None:
            if k is None:
                d_all = np.linalg.norm(all_pos - ipp, axis=1)
                i = int(np.argmin(d_all))
                if d_all[i] > ALIGN_TOL_MM:
                    raise LabelMapError(
                        f"{p}: frame {f + 1} lies {d_all[i]:.2f} mm from the nearest CT slice; "
                        "the SEG is not on the CT's grid"
                    )
                k = all_k[i]
                if k is None:  # a slice of the series that is not loaded
                    continue
            d_mm = float(np.linalg.norm(volume.slice_origins_lps_mm[k] - ipp))
            if d_mm > ALIGN_TOL_MM:
                raise LabelMapError(
                    f"{p}: frame {f + 1} lies {d_mm:.2f} mm from its CT slice; the SEG is "
                    "not on the CT's grid"
                )
        if k is None:
            if of_series:  # a slice of the series that is not loaded
                continue
            raise LabelMapError(f"{p}: frame {f + 1} names no slice of this CT series")
        on = frames[f] > 0 if binary else frames[f] > top / 2
        out[k][on] = seg_no
    return out, table
