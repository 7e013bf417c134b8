"""DICOM out: a Structured Report (TID 1500 Measurement Report) and a binary Segmentation
per measured series, built with highdicom from hu-roi's own measurements and masks.

What goes in (see ``docs/dicom_export.md`` for how 3D Slicer and OHIF read it):

SR (Comprehensive 3D SR, TID 1500)
    One measurement group per ROI (TID 1410 planar for circle, ellipse and polygon; TID
    1411 volumetric for a sphere) with

    - tracking identifier = the ``roi_id``, tracking UID = a UID derived from the source
      series, the reader and the ``roi_id`` (the same ROI exported twice keeps its UID);
    - finding site = the vertebra (:data:`VERTEBRA_CODES`) of a target ROI, or the tissue
      of a reference ROI (:data:`KIND_CODES`); finding type = bone / the tissue;
    - time point = the ROI's ``timepoint``;
    - mean, SD and median HU as "Attenuation Coefficient" (DCM 112031) with the
      derivation Mean / Standard Deviation / Median, unit UCUM ``[hnsf'U]``; the area
      (SCT 42798000, mm2) of a 2D ROI or the volume (SCT 118565006, mm3) of a sphere.
      Every value is the float of the measurement CSV (the NUM item's FloatingPointValue;
      the DS NumericValue is its 16-character rounding).  An SD of a one-voxel ROI (NaN)
      is left out;
    - each measurement references the source images (SOP Instance UIDs) its voxels lie
      on, and the group holds the ROI geometry as SCOORD3D in the images' Frame of
      Reference: a 2D shape projected onto the slice it was measured on (ELLIPSE for a
      circle or an ellipse, POLYGON closed by repeating its first point), a sphere as an
      ELLIPSOID volume surface;
    - the qc status (``pass``/``warn``/``fail``) and every qc flag as qualitative
      evaluations coded in the private scheme :data:`QC_SCHEME` (declared in the
      Coding Scheme Identification Sequence).

    The document's evidence and image library are the images the ROIs lie on.

SEG (binary)
    One segment per ROI, in the same order as the SR's groups, on the source grid: one
    frame per source image holding any ROI voxel (empty frames are left out), and each
    segment's mask is exactly :func:`hu_roi.rasterize.rasterize_roi` -- the voxels that
    were measured.  Segment label and tracking ID = ``roi_id`` (cut to the 64 characters
    of a DICOM LO), tracking UID = the SR's.

Anonymised input: type-2 patient and study attributes missing from the source images
(PatientName, PatientID, PatientBirthDate, PatientSex, StudyID, AccessionNumber,
ReferringPhysicianName, StudyDate, StudyTime) are written empty, as DICOM allows;
nothing is filled in from elsewhere.  The SR and SEG carry the source images' own patient
and study attributes (they are derived objects of that study).

Refused, with the reason (:class:`DicomExportError`): source images without
SOPInstanceUID, SOPClassUID, SeriesInstanceUID or StudyInstanceUID (an SR or SEG could
not reference them; e.g. series that hu-roi keys ``nouid-…``); images of one series in
different Frames of Reference, or without one; an ROI whose ``frame_of_reference_uid``
field names another Frame of Reference than its series; a source file that changed since
it was measured.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hu_roi import __version__
from hu_roi.errors import HuRoiError
from hu_roi.measure import QC_FLAGS, Measurement
from hu_roi.rasterize import RoiMask
from hu_roi.roi import Roi
from hu_roi.series import SeriesInfo
from hu_roi.util import show

log = logging.getLogger(__name__)

__all__ = [
    "SR_GROUPS",
    "VERTEBRA_CODES",
    "KIND_CODES",
    "QC_SCHEME",
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "DicomExportError",
    "ExportItem",
    "SeriesExport",
    "tracking_uid",
    "read_source_images",
    "build_series_export",
]

#: SNOMED CT codes (scheme ``SCT``) of the vertebral levels: C1–L5 are DICOM CID 7603
#: "Vertebra" (the values of pydicom's ``codes.cid7603``); S1–S5 are not in CID 7603 and
#: use the SNOMED CT body-structure concepts "Structure of first … fifth sacral vertebra".
VERTEBRA_CODES: dict[str, tuple[str, str]] = {
    "C1": ("14806007", "C1 vertebra"),
    "C2": ("39976000", "C2 vertebra"),
    "C3": ("113205007", "C3 vertebra"),
    "C4": ("5329002", "C4 vertebra"),
    "C5": ("36978003", "C5 vertebra"),
    "C6": ("36054005", "C6 vertebra"),
    "C7": ("87391001", "C7 vertebra"),
    "T1": ("64864005", "T1 vertebra"),
    "T2": ("53733008", "T2 vertebra"),
    "T3": ("1626008", "T3 vertebra"),
    "T4": ("73071006", "T4 vertebra"),
    "T5": ("56401006", "T5 vertebra"),
    "T6": ("45296009", "T6 vertebra"),
    "T7": ("62487009", "T7 vertebra"),
    "T8": ("11068009", "T8 vertebra"),
    "T9": ("82687006", "T9 vertebra"),
    "T10": ("7610001", "T10 vertebra"),
    "T11": ("12989004", "T11 vertebra"),
    "T12": ("23215003", "T12 vertebra"),
    "L1": ("66794005", "L1 vertebra"),
    "L2": ("14293000", "L2 vertebra"),
    "L3": ("36470004", "L3 vertebra"),
    "L4": ("11994002", "L4 vertebra"),
    "L5": ("49668003", "L5 vertebra"),
    "S1": ("65985001", "Structure of first sacral vertebra"),
    "S2": ("11808007", "Structure of second sacral vertebra"),
    "S3": ("49967005", "Structure of third sacral vertebra"),
    "S4": ("69950008", "Structure of fourth sacral vertebra"),
    "S5": ("21452006", "Structure of fifth sacral vertebra"),
}

#: ROI kind -> (segment category, segment type / SR finding type) as SCT (code, meaning).
#: A target's finding site is its vertebra; a reference ROI's is its tissue (the type).
KIND_CODES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "target": (("85756007", "Tissue"), ("272673000", "Bone")),
    "reference-air": (("105590001", "Substance"), ("15158005", "Air")),
    "reference-fat": (("85756007", "Tissue"), ("55603005", "Fat")),
    "reference-muscle": (("85756007", "Tissue"), ("127954009", "Skeletal muscle")),
    "reference-water": (("105590001", "Substance"), ("11713004", "Water")),
    "phantom": (("260787004", "Physical object"), ("706342009", "Phantom")),
}

#: Private coding scheme of the qc status and qc flags (DICOM PS3.16 section 8.2: a
#: designator starting with ``99``).
QC_SCHEME = "99HUROI"
#: Series numbers of the written objects (project choice: far from a scanner's numbers).
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
#: What an SR measurement group can point at (:func:`build_series_export`).
SR_GROUPS: tuple[str, ...] = ("geometry", "segment")

#: Type-2 patient/study attributes that highdicom copies from the source images: written
#: empty when an anonymised image lacks them.
TYPE2_EMPTY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyTime",
)
_LO = 64  # longest DICOM LO value (segment label, tracking ID, code meaning), in bytes
_ASCII = str.maketrans(
    {"≥": ">=", "≤": "<=", "—": "-", "–": "-", "×": "x", "·": "*", "≈": "~", "…": "..."}
)


def _lo(text: str) -> str:
    """``text`` cut to the 64 bytes of a DICOM LO value once encoded as UTF-8."""
    return text.encode("utf-8")[:_LO].decode("utf-8", errors="ignore")


class DicomExportError(HuRoiError, ValueError):
    """A series cannot be exported as DICOM SR/SEG; the message says why and what to do."""


@dataclass(frozen=True)
class ExportItem:
    """One measured ROI to export.

    Attributes
    ----------
    measurement : Measurement
        Its row of the measurement CSV (the values written).
    roi : Roi
        The ROI (geometry, labels).
    mask : RoiMask
        Its voxels on the series (:func:`hu_roi.rasterize.rasterize_roi`); ``parts``
        carry the series slice index, row and column of every voxel.
    tracking_uid : str
        UID of the ROI's SR group and SEG segment (:func:`tracking_uid`).
    """

    measurement: Measurement
    roi: Roi
    mask: RoiMask
    tracking_uid: str


@dataclass(frozen=True)
class SeriesExport:
    """The encoded SR and SEG of one series (and reader).

    Attributes
    ----------
    sr, seg : bytes
        DICOM Part 10 files (Explicit VR Little Endian).
    sr_sop_instance_uid, seg_sop_instance_uid : str
    n_frames : int
        SEG frames (source images holding an ROI voxel).
    """

    sr: bytes
    seg: bytes
    sr_sop_instance_uid: str
    seg_sop_instance_uid: str
    n_frames: int


def tracking_uid(series_instance_uid: str, reader: str, roi_id: str, occurrence: int = 0) -> str:
    """A UID (``2.25.…``) derived from the series, the reader and the ``roi_id``.

    ``occurrence`` > 0 tells apart ROIs that share all three (a duplicated roi_id).
    """
    import uuid

    src = ["hu-roi tracking", series_instance_uid, reader, roi_id]
    if occurrence:
        src.append(str(occurrence))
    # a name-based (SHA-1) UUID as a 2.25 UID (PS3.5 B.2): the same inputs, the same UID
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, chr(0).join(src)).int}"


_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _valid_uid(uid: str) -> bool:
    return bool(uid) and len(uid) <= 64 and bool(_UID_RE.match(uid))


def _str(ds: Any, keyword: str) -> str:
    v = getattr(ds, keyword, "")
    return "" if v is None else str(v).strip()


def read_source_images(info: SeriesInfo, slice_indices: Sequence[int]) -> list[Any]:
    """Headers (no pixel data) of the series' images at ``slice_indices``, checked for
    what an SR and a SEG need, with the missing type-2 patient/study attributes empty.

    Every image of the series is checked for one non-empty FrameOfReferenceUID; the
    images at ``slice_indices`` must carry valid SOPInstanceUID, SOPClassUID,
    SeriesInstanceUID and StudyInstanceUID, the same ones the index saw.

    Returns
    -------
    list of pydicom.Dataset
        In the order of ``slice_indices``.

    Raises
    ------
    DicomExportError
        Missing or invalid UIDs, a Frame of Reference mismatch, a changed file.
    """
    import pydicom

    key = show(info.series_key)
    uid_tags = ["SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"]
    # every image: one Frame of Reference (a SEG and SCOORD3D live in exactly one)
    fors: dict[str, list[str]] = {}
    for s in info.slices:
        try:
            h = pydicom.dcmread(
                s.path, stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"]
            )
        except Exception as exc:  # pydicom raises many types on a garbled file
            raise DicomExportError(f"series {key}: cannot read {s.path}: {exc}") from None
        fors.setdefault(_str(h, "FrameOfReferenceUID"), []).append(s.path)
    if "" in fors:
        raise DicomExportError(
            f"series {key}: {len(fors[''])} image(s) have no FrameOfReferenceUID (e.g. "
            f"{fors[''][0]}); an SR's 3D coordinates and a SEG need one Frame of Reference"
        )
    if len(fors) > 1:
        parts = ", ".join(f"{len(v)} in {show(k)}" for k, v in sorted(fors.items()))
        raise DicomExportError(
            f"series {key}: Frame of Reference mismatch: its images lie in "
            f"{len(fors)} Frames of Reference ({parts}); positions in different frames "
            "are not comparable, so no SR/SEG is written for this series"
        )
    out = []
    for i in slice_indices:
        s = info.slices[i]
        try:
            ds = pydicom.dcmread(s.path, stop_before_pixels=True)
        except Exception as exc:
            raise DicomExportError(f"series {key}: cannot read {s.path}: {exc}") from None
        bad = [t for t in uid_tags if not _valid_uid(_str(ds, t))]
        if bad:
            raise DicomExportError(
                f"series {key}: image {s.path} has no valid {', '.join(bad)}; an SR and a "
                "SEG reference their source images by these UIDs, so this series cannot "
                "be exported (get the series with its UIDs, e.g. from the PACS)"
            )
        if s.sop_instance_uid and _str(ds, "SOPInstanceUID") != s.sop_instance_uid:
            raise DicomExportError(
                f"series {key}: {s.path} changed since it was indexed (SOPInstanceUID "
                f"{show(_str(ds, 'SOPInstanceUID'))}, indexed {show(s.sop_instance_uid)}); "
                "run the export again"
            )
        for kw in TYPE2_EMPTY:
            if kw not in ds:
                setattr(ds, kw, "")  # type 2: present and empty, never borrowed
        out.append(ds)
    series = {_str(d, "SeriesInstanceUID") for d in out}
    studies = {_str(d, "StudyInstanceUID") for d in out}
    if len(series) > 1 or len(studies) > 1:
        raise DicomExportError(
            f"series {key}: its images name {len(series)} SeriesInstanceUIDs and "
            f"{len(studies)} StudyInstanceUIDs; an SR/SEG derives from one series"
        )
    return out


# -- geometry (LPS mm) ---------------------------------------------------------------------
def _frame(info: SeriesInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = np.asarray(info.orientation, dtype=float).reshape(2, 3)
    return o[0], o[1], np.asarray(info.normal, dtype=float)


def _onto_slice(points: np.ndarray, info: SeriesInfo, slice_index: int) -> np.ndarray:
    """Project LPS points (n, 3) onto the plane of slice ``slice_index``."""
    _, _, n = _frame(info)
    p0 = np.asarray(info.slices[slice_index].position_lps_mm, dtype=float)
    d = (points - p0) @ n
    return points - d[:, None] * n[None, :]


def roi_graphic(roi: Roi, info: SeriesInfo, slice_index: int | None) -> tuple[str, np.ndarray]:
    """The ROI's SCOORD3D graphic type and points (n, 3) in LPS mm.

    2D shapes are projected onto the slice they were measured on (``slice_index``); an
    ellipse's first two points are its major axis (DICOM PS3.3 C.18.9.1.2).
    """
    X, Y, N = _frame(info)
    sh = roi.shape
    if sh.type == "polygon":
        pts = np.asarray(sh.points_mm, dtype=float)
        pts = np.vstack([pts, pts[:1]])  # SCOORD3D POLYGON: first point repeated at the end
        return "POLYGON", _onto_slice(pts, info, int(slice_index))  # type: ignore[arg-type]
    c = np.asarray(sh.center_mm, dtype=float)
    if sh.type == "sphere":
        r = float(sh.radius_mm)  # type: ignore[arg-type]
        return "ELLIPSOID", np.array(
            [c - r * X, c + r * X, c - r * Y, c + r * Y, c - r * N, c + r * N]
        )
    if sh.type == "circle":
        r = float(sh.radius_mm)  # type: ignore[arg-type]
        a, ra, b, rb = X, r, Y, r
    elif sh.type == "ellipse":
        rx, ry = (float(v) for v in sh.radii_mm)  # type: ignore[union-attr]
        t = math.radians(sh.angle_deg)
        # hu_roi.rasterize: axis a = cosθ·X + sinθ·Y (radius rx), b ⟂ a (radius ry)
        a, b = math.cos(t) * X + math.sin(t) * Y, -math.sin(t) * X + math.cos(t) * Y
        ra, rb = rx, ry
        if rb > ra:
            a, ra, b, rb = b, rb, a, ra
    else:
        raise DicomExportError(
            f"ROI {show(roi.roi_id)}: shape {show(sh.type)} has no DICOM SR region"
        )
    pts = np.array([c - ra * a, c + ra * a, c - rb * b, c + rb * b])
    return "ELLIPSE", _onto_slice(pts, info, int(slice_index))  # type: ignore[arg-type]


# -- codes ---------------------------------------------------------------------------------
def _code(value: str, scheme: str, meaning: str) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=_lo(meaning))


def _kind_codes(kind: str) -> tuple[Any, Any]:
    """(category, type) of an ROI kind (``phantom-<name>`` as ``phantom``)."""
    base = "phantom" if kind.startswith("phantom-") else kind
    if base not in KIND_CODES:
        raise DicomExportError(f"ROI kind {show(kind)} has no DICOM code in hu-roi")
    (cv, cm), (tv, tm) = KIND_CODES[base]
    return _code(cv, "SCT", cm), _code(tv, "SCT", tm)


def _site(roi: Roi) -> Any:
    """The finding site: the vertebra of a target, the tissue of a reference ROI."""
    if roi.kind == "target":
        if roi.level and roi.level in VERTEBRA_CODES:
            v, m = VERTEBRA_CODES[roi.level]
            return _code(v, "SCT", m)
        return None
    return _kind_codes(roi.kind)[1]


def _qc_concepts(m: Measurement) -> list[Any]:
    import highdicom as hd

    out = [
        hd.sr.QualitativeEvaluation(
            name=_code("qc-status", QC_SCHEME, "QC status"),
            value=_code(m.qc_status, QC_SCHEME, f"QC {m.qc_status}"),
        )
    ]
    for flag in m.qc_flags:
        meaning = QC_FLAGS[flag].meaning if flag in QC_FLAGS else flag
        meaning = meaning.translate(_ASCII)  # a readable meaning in any viewer's font
        out.append(
            hd.sr.QualitativeEvaluation(
                name=_code("qc-flag", QC_SCHEME, "QC flag"),
                value=_code(flag, QC_SCHEME, meaning),
            )
        )
    return out


# -- building ------------------------------------------------------------------------------
def _measurements(m: Measurement, refs: list[Any]) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    hu = codes.UCUM.HounsfieldUnit
    att = codes.DCM.AttenuationCoefficient
    out = []
    for value, derivation in (
        (m.mean_hu, codes.SCT.Mean),
        (m.sd_hu, codes.SCT.StandardDeviation),
        (m.median_hu, codes.SCT.Median),
    ):
        if value is not None and math.isfinite(value):  # the SD of one voxel is NaN
            out.append(
                hd.sr.Measurement(
                    name=att,
                    value=float(value),
                    unit=hu,
                    derivation=derivation,
                    referenced_images=refs,
                )
            )
    if m.area_mm2 is not None:
        out.append(
            hd.sr.Measurement(
                name=codes.SCT.Area,
                value=float(m.area_mm2),
                unit=codes.UCUM.SquareMillimeter,
                referenced_images=refs,
            )
        )
    if m.volume_mm3 is not None:
        out.append(
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=float(m.volume_mm3),
                unit=codes.UCUM.CubicMillimeter,
                referenced_images=refs,
            )
        )
    return out


def _group(
    item: ExportItem,
    info: SeriesInfo,
    by_index: dict[int, Any],
    for_uid: str,
    segment: tuple[Any, int] | None = None,
) -> Any:
    """The TID 1410/1411 group of one ROI: its geometry, or with ``segment`` = (SEG,
    segment number) a reference to its SEG segment (TID 1411 "Referenced Segment", as
    dcmqi and 3D Slicer's QuantitativeReporting write and read them)."""
    import highdicom as hd

    m, roi = item.measurement, item.roi
    touched = [p.slice_index for p in item.mask.parts if p.n_voxels]
    refs = [
        hd.sr.SourceImageForMeasurement(
            referenced_sop_class_uid=by_index[k].SOPClassUID,
            referenced_sop_instance_uid=by_index[k].SOPInstanceUID,
        )
        for k in touched
    ]
    gtype, pts = roi_graphic(roi, info, m.slice_index)
    _, finding_type = _kind_codes(roi.kind)
    site = _site(roi)
    common: dict[str, Any] = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier=roi.roi_id, uid=item.tracking_uid),
        finding_type=finding_type,
        finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
        time_point_context=hd.sr.TimePointContext(time_point=roi.timepoint)
        if roi.timepoint
        else None,
        algorithm_id=hd.sr.AlgorithmIdentification(name="hu-roi", version=__version__),
        measurements=_measurements(m, refs),
        qualitative_evaluations=_qc_concepts(m),
    )
    if segment is not None:
        seg, number = segment
        ref = hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(info.series_instance_uid),
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=ref, **common
        )
    if gtype == "ELLIPSOID":
        surface = hd.sr.VolumeSurface(
            graphic_type=gtype,
            graphic_data=[pts],
            frame_of_reference_uid=for_uid,
            source_images=[
                hd.sr.SourceImageForSegmentation(
                    referenced_sop_class_uid=by_index[k].SOPClassUID,
                    referenced_sop_instance_uid=by_index[k].SOPInstanceUID,
                )
                for k in touched
            ],
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_volume_surface=surface, **common
        )
    region = hd.sr.ImageRegion3D(
        graphic_type=gtype, graphic_data=pts, frame_of_reference_uid=for_uid
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)


def _segment(item: ExportItem, number: int) -> Any:
    import highdicom as hd

    roi = item.roi
    category, prop = _kind_codes(roi.kind)
    site = _site(roi) if roi.kind == "target" else None
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=_lo(roi.roi_id),
        segmented_property_category=category,
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=item.tracking_uid,
        tracking_id=_lo(roi.roi_id),
        anatomic_regions=[site] if site is not None else None,
    )


def _encode(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _declare_scheme(ds: Any) -> None:
    """Coding Scheme Identification Sequence entry of the private :data:`QC_SCHEME`."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.CodingSchemeDesignator = QC_SCHEME
    item.CodingSchemeName = "hu-roi quality control codes"
    item.CodingSchemeResponsibleOrganization = "hu-roi (see docs/qc_flags.md)"
    seq = getattr(ds, "CodingSchemeIdentificationSequence", None) or DicomSequence()
    seq.append(item)
    ds.CodingSchemeIdentificationSequence = seq


def build_series_export(
    info: SeriesInfo,
    items: Sequence[ExportItem],
    *,
    reader: str = "",
    sources: Sequence[Any] | None = None,
    sr_groups: str = "geometry",
) -> SeriesExport:
    """The SR and SEG of the ROIs of one series (one reader).

    Parameters
    ----------
    info : SeriesInfo
        The series (from the index) the ROIs were measured on.
    items : sequence of ExportItem
        The ROIs with their measurement rows and masks; at least one, every one with
        voxels.
    reader : str
        The ROI set's reader: the SR's person observer (empty: none) and in the
        descriptions.
    sources : sequence of pydicom.Dataset, optional
        :func:`read_source_images` of the touched slices (read here when None).
    sr_groups : {"geometry", "segment"}
        What each SR measurement group points at: the ROI's own geometry (SCOORD3D;
        TID 1410, or TID 1411 for a sphere), or its segment of the SEG written beside it
        (TID 1411 "Referenced Segment", the form dcmqi and QuantitativeReporting use).

    Returns
    -------
    SeriesExport

    Raises
    ------
    DicomExportError
        See :func:`read_source_images`, and an ROI whose ``frame_of_reference_uid`` field
        differs from its series' Frame of Reference.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if sr_groups not in SR_GROUPS:
        raise ValueError(f"sr_groups must be one of {SR_GROUPS}; got {sr_groups!r}")
    if not items:
        raise DicomExportError(f"series {show(info.series_key)}: no measured ROI to export")
    touched = sorted({p.slice_index for it in items for p in it.mask.parts if p.n_voxels})
    if not touched:
        raise DicomExportError(f"series {show(info.series_key)}: the ROIs cover no voxel")
    src = list(sources) if sources is not None else read_source_images(info, touched)
    if len(src) != len(touched):
        raise ValueError(f"{len(src)} source images for {len(touched)} touched slices")
    by_index = dict(zip(touched, src, strict=True))
    for_uid = _str(src[0], "FrameOfReferenceUID")
    for it in items:
        theirs = str(it.roi.extra.get("frame_of_reference_uid") or "").strip()
        if theirs and theirs != for_uid:
            raise DicomExportError(
                f"ROI {show(it.roi.roi_id)}: Frame of Reference mismatch: the ROI names "
                f"{show(theirs)}, its series {show(info.series_key)} lies in {show(for_uid)}; "
                "its coordinates would be placed in the wrong space"
            )
    # one frame per touched image; segment j of the stacked binary array is item j
    rows, cols = info.rows, info.columns
    frame_of = {k: f for f, k in enumerate(touched)}
    arr = np.zeros((len(touched), rows, cols, len(items)), dtype=bool)
    for j, it in enumerate(items):
        for p in it.mask.parts:
            h, w = p.mask.shape
            arr[frame_of[p.slice_index], p.row0 : p.row0 + h, p.col0 : p.col0 + w, j] |= p.mask
    who = f" (reader {reader})" if reader else ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg = hd.seg.Segmentation(
            source_images=src,
            pixel_array=arr,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment(it, j + 1) for j, it in enumerate(items)],
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="hu-roi",
            manufacturer_model_name="hu-roi",
            software_versions=__version__,
            device_serial_number="",
            content_label="HUROI",
            content_description=_lo(f"hu-roi ROIs{who}"),
            series_description=_lo(f"hu-roi ROIs{who}"),
        )
        observer = None
        if reader:
            from pydicom.valuerep import PersonName

            observer = hd.sr.ObserverContext(
                observer_type=codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name=str(PersonName.from_named_components(family_name=reader))
                ),
            )
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=str(hd.UID()), name="hu-roi", model_name=f"hu-roi {__version__}"
            ),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(
                observer_person_context=observer, observer_device_context=device
            ),
            procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
            imaging_measurements=[
                _group(
                    it, info, by_index, for_uid, (seg, j + 1) if sr_groups == "segment" else None
                )
                for j, it in enumerate(items)
            ],
            referenced_images=src,
        )
        sr = hd.sr.Comprehensive3DSR(
            # a group that references a segment makes the SEG evidence too
            evidence=[*src, seg] if sr_groups == "segment" else src,
            content=report,
            series_instance_uid=hd.UID(),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="hu-roi",
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=_lo(f"hu-roi measurements{who}"),
        )
        _declare_scheme(sr)
        for ds in (sr, seg):
            ds.SoftwareVersions = __version__
            # UTF-8: an roi_id or a qc meaning outside the source's character set is kept
            # as it is, never replaced by '?' (pydicom re-encodes the copied patient text)
            ds.SpecificCharacterSet = "ISO_IR 192"
        sr_bytes, seg_bytes = _encode(sr), _encode(seg)
    for w in caught:  # highdicom's and pydicom's remarks go to the log, never to stderr
        log.info("DICOM export: %s", w.message)
    return SeriesExport(
        sr=sr_bytes,
        seg=seg_bytes,
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        seg_sop_instance_uid=str(seg.SOPInstanceUID),
        n_frames=int(seg.NumberOfFrames),
    )


def safe_file_part(text: str) -> str:
    """``text`` as a piece of a file name: letters, digits, ``.``, ``-``, ``_`` only."""
    out = re.sub(r"[^0-9A-Za-z._-]+", "_", text).strip("._")
    return out[:80] or "x"


def path_name(path: str) -> str:
    """The file name of ``path`` (for messages)."""
    return os.path.basename(path)
