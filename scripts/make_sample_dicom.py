#!/usr/bin/env python
"""Generate the synthetic sample CT cohort in ``sample_dicom/`` (deterministic).

Usage::

    .venv/bin/python scripts/make_sample_dicom.py [--out DIR]

writes into ``DIR`` (default: ``sample_dicom/`` of the repository)::

    dicom/<patient>/<timepoint>/<16 hex chars>   CT Image Storage files, no extension
    ground_truth.csv                             one row per series x structure
    ground_truth.json                            same rows + series list (with decoys) + roi list
    rois/sample.rois.json                        ROI set (docs/roi_format.md format, reader "R1")

The cohort: 3 patients (P01, P02, P03) x 3 timepoints (T0 baseline, T2 ~3 months, T3
~6 months).  Every series is an axial Siemens-like "bone kernel" (B60s) CT of 27 slices at
3 mm covering T12, L1 and L2 (vertebral bodies with a 2-pixel cortical shell and a
homogeneous trabecular core of KNOWN HU, discs between), an elliptical torso (muscle
+40 HU inside a subcutaneous fat ring -100 HU), air outside (-1000 HU) and padding outside
the reconstruction circle.  One level per patient carries a lesion and is the irradiated
level; its core HU rises over follow-up.  P01 and P03 lie on a 3-rod calibration phantom.

Decoys: P01/T0 also holds a scout (LOCALIZER, coronal, single image) and a soft-kernel
(B30f) series of the same geometry; P03/T2 was scanned at 100 kV instead of 120 kV, so all
bone-like materials (cortical and trabecular bone, K2HPO4 rods) read 5 % higher.

Every written pixel is an integer HU; the expected ROI statistics recorded in the ground
truth are computed here, independently of ``hu_roi``, from the generated pixels with the
voxel rule of docs/roi_format.md (2D shape: voxel centres inside or on the boundary, on the slice
whose centre is nearest to the shape's plane; sphere: voxel centres within the radius).
The generator also checks that every ROI covers a single labelled region.

Everything is deterministic: fixed seeds, UIDs derived from a fixed root plus a SHA-256 of
a descriptive key, fixed dates.  Running twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import shutil
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTDoseStorage,
)

UID_ROOT = "1.2.826.0.1.3680043.10.1234."
REPO = Path(__file__).resolve().parents[1]

N_SLICES = 27
SLICE_MM = 3.0
LEVELS = ("L2", "L1", "T12")  # bottom to top (ascending z)
#: Slices (indices in ascending z order) of each vertebral body, its core, and the discs.
BODY_SLICES = {"L2": range(1, 8), "L1": range(10, 17), "T12": range(19, 26)}
CORE_SLICES = {lv: range(s.start + 1, s.stop - 1) for lv, s in BODY_SLICES.items()}
DISC_SLICES = (8, 9, 17, 18)
MID_SLICE = {lv: (s.start + s.stop - 1) // 2 for lv, s in CORE_SLICES.items()}
REF_SLICE = MID_SLICE["L1"]

TIMEPOINTS = ("T0", "T2", "T3")
DAYS = {"T0": 0, "T2": 91, "T3": 182}

# Materials (HU at 120 kV) and region labels.
AIR_HU, FAT_HU, MUSCLE_HU, CORTICAL_HU, DISC_HU, CSF_HU, ARCH_HU, BLOCK_HU = (
    -1000.0,
    -100.0,
    40.0,
    800.0,
    80.0,
    15.0,
    700.0,
    20.0,
)
NOISE_SD_HU = 10.0
SOFT_NOISE_SD_HU = 5.0
KVP100_BONE_FACTOR = 1.05
LABELS = {
    "padding": 0,
    "air": 1,
    "fat": 2,
    "muscle": 3,
    "cortical": 4,
    "disc": 5,
    "canal": 6,
    "arch": 7,
    "phantom-block": 8,
    "core-L2": 10,
    "core-L1": 11,
    "core-T12": 12,
    "phantom-water": 20,
    "phantom-k2hpo4-100": 21,
    "phantom-k2hpo4-200": 22,
}
#: Calibration rods: name -> (K2HPO4 density mg/cm3, HU at 120 kV, centre x offset mm).
RODS = {
    "phantom-water": (0.0, 0.0, -30.0),
    "phantom-k2hpo4-100": (100.0, 135.0, 0.0),
    "phantom-k2hpo4-200": (200.0, 270.0, 30.0),
}
ROD_RADIUS_MM = 9.0
ROD_Y_MM = 72.0  # posterior of the body (LPS +y), relative to the body centre


@dataclass(frozen=True)
class PatientSpec:
    """Fixed facts of one synthetic patient."""

    patient_id: str
    sex: str
    birth_date: str
    baseline: date
    matrix: int
    spacing_mm: float
    unsigned: bool
    bits_stored: int
    vb_radii_mm: tuple[float, float]
    irradiated_level: str
    lesion_type: str
    #: core HU per level per timepoint (at 120 kV)
    core_hu: dict[str, dict[str, float]]
    phantom: bool


PATIENTS = (
    PatientSpec(
        "P01",
        "M",
        "19540612",
        date(2019, 3, 4),
        96,
        2.0,
        False,
        16,
        (20.0, 15.0),
        "L1",
        "osteolytic",
        {
            "T12": {"T0": 180.0, "T2": 180.0, "T3": 180.0},
            "L1": {"T0": 80.0, "T2": 100.0, "T3": 112.0},
            "L2": {"T0": 170.0, "T2": 170.0, "T3": 170.0},
        },
        True,
    ),
    PatientSpec(
        "P02",
        "F",
        "19610130",
        date(2019, 5, 20),
        128,
        1.5,
        True,
        12,
        (22.0, 16.0),
        "T12",
        "osteoblastic",
        {
            "T12": {"T0": 500.0, "T2": 600.0, "T3": 650.0},
            "L1": {"T0": 160.0, "T2": 160.0, "T3": 160.0},
            "L2": {"T0": 150.0, "T2": 150.0, "T3": 150.0},
        },
        False,
    ),
    PatientSpec(
        "P03",
        "M",
        "19470923",
        date(2019, 9, 9),
        96,
        2.0,
        False,
        12,
        (19.0, 14.0),
        "L2",
        "mixed",
        {
            "T12": {"T0": 190.0, "T2": 190.0, "T3": 190.0},
            "L1": {"T0": 175.0, "T2": 175.0, "T3": 175.0},
            "L2": {"T0": 250.0, "T2": 300.0, "T3": 340.0},
        },
        True,
    ),
)

#: Patient position on the table per (patient, timepoint): body centre (x, y) in LPS mm
#: and z of the lowest slice.  Varies between visits as in real follow-up scans.
POSE = {
    ("P01", "T0"): (0.0, 0.0, -190.5),
    ("P01", "T2"): (2.4, -1.6, -187.0),
    ("P01", "T3"): (-1.8, 1.2, -193.0),
    ("P02", "T0"): (1.0, -2.0, -402.0),
    ("P02", "T2"): (-2.25, 0.75, -398.5),
    ("P02", "T3"): (0.5, 1.5, -405.0),
    ("P03", "T0"): (-1.0, 1.0, -120.0),
    ("P03", "T2"): (3.0, 2.0, -116.5),
    ("P03", "T3"): (0.0, -2.0, -124.0),
}
KVP = {(p.patient_id, tp): 120 for p in PATIENTS for tp in TIMEPOINTS}
KVP[("P03", "T2")] = 100

#: ROI shapes a reader used for targets (default: ellipse).
TARGET_SHAPE = {
    ("P01", "T2", "T12"): "circle",
    ("P02", "T3", "L2"): "circle",
    ("P03", "T0", "T12"): "circle",
    ("P02", "T2", "L1"): "polygon",
    ("P03", "T3", "L1"): "sphere",
    ("P01", "T3", "L2"): "ellipse-rotated",
}


def stable_int(key: str, digits: int = 24) -> int:
    """Integer from the first ``digits`` hex digits of SHA-256(key) (stable across runs)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:digits], 16)


def make_uid(key: str) -> str:
    """Deterministic UID ``UID_ROOT + decimal(hash(key))`` (<= 64 characters)."""
    uid = UID_ROOT + str(stable_int(key) or 1)
    if len(uid) > 64:
        raise ValueError(f"UID too long: {uid}")
    return uid


def jitter(key: str, scale_mm: float) -> float:
    """Deterministic offset in [-scale, +scale] mm, rounded to 0.1 mm."""
    return round((stable_int(key, 8) / 16**8 * 2.0 - 1.0) * scale_mm, 1)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Grid:
    """Axial slice grid: pixel centres in LPS mm, slices in ascending z."""

    matrix: int
    spacing_mm: float
    z_mm: np.ndarray  # (slices,)

    @property
    def x0(self) -> float:
        """x (and y) of pixel (0, 0): the grid is centred on x = y = 0."""
        return -(self.matrix - 1) / 2.0 * self.spacing_mm

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates X[r, c], Y[r, c] in LPS mm."""
        c = self.x0 + np.arange(self.matrix) * self.spacing_mm
        return np.meshgrid(c, c, indexing="xy")  # X varies along columns, Y along rows


def in_ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def vb_center(p: PatientSpec, pose: tuple[float, float, float]) -> tuple[float, float]:
    return pose[0], pose[1] + 15.0


def level_radii(p: PatientSpec, level: str) -> tuple[float, float]:
    extra = {"T12": -1.0, "L1": 0.0, "L2": 1.0}[level]
    return p.vb_radii_mm[0] + extra, p.vb_radii_mm[1] + extra


def core_radii(p: PatientSpec, level: str) -> tuple[float, float]:
    rx, ry = level_radii(p, level)
    return rx - 2 * p.spacing_mm, ry - 2 * p.spacing_mm


def build_phantom(
    p: PatientSpec, tp: str, grid: Grid, *, noise_sd: float, seed_key: str
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """HU (int16) and label volumes (slices, rows, cols) plus the set HU per label name."""
    pose = POSE[(p.patient_id, tp)]
    bone = KVP100_BONE_FACTOR if KVP[(p.patient_id, tp)] == 100 else 1.0
    x, y = grid.xy()
    bx, by = pose[0], pose[1]
    set_hu: dict[str, float] = {
        "air": AIR_HU,
        "fat": FAT_HU,
        "muscle": MUSCLE_HU,
        "cortical": round(CORTICAL_HU * bone, 4),
        "disc": DISC_HU,
        "canal": CSF_HU,
        "arch": round(ARCH_HU * bone, 4),
        "phantom-block": BLOCK_HU,
    }
    for lv in LEVELS:
        set_hu[f"core-{lv}"] = round(p.core_hu[lv][tp] * bone, 4)
    for name, (density, hu120, _) in RODS.items():
        set_hu[name] = round(hu120 * (bone if density > 0 else 1.0), 4)

    # in-plane label map common to all slices (soft tissue, phantom, canal and arch)
    lab2d = np.full(x.shape, LABELS["air"], dtype=np.int16)
    lab2d[in_ellipse(x, y, bx, by, 82.0, 58.0)] = LABELS["fat"]
    lab2d[in_ellipse(x, y, bx, by, 70.0, 46.0)] = LABELS["muscle"]
    if p.phantom:
        block = (np.abs(x - bx) <= 44.0) & (np.abs(y - (by + ROD_Y_MM)) <= 12.0)
        lab2d[block] = LABELS["phantom-block"]
        for name, (_, _, dx) in RODS.items():
            rod = in_ellipse(x, y, bx + dx, by + ROD_Y_MM, ROD_RADIUS_MM, ROD_RADIUS_MM)
            lab2d[rod] = LABELS[name]
    cx, cy = vb_center(p, pose)
    lab2d[in_ellipse(x, y, cx, cy + 27.0, 11.0, 11.0)] = LABELS["arch"]
    lab2d[in_ellipse(x, y, cx, cy + 27.0, 7.5, 7.5)] = LABELS["canal"]
    recon = (x**2 + y**2) <= (grid.matrix * grid.spacing_mm / 2.0) ** 2
    lab2d[~recon] = LABELS["padding"]

    labels = np.repeat(lab2d[None], N_SLICES, axis=0)
    for lv in LEVELS:
        rx, ry = level_radii(p, lv)
        crx, cry = core_radii(p, lv)
        outer = in_ellipse(x, y, cx, cy, rx, ry) & recon
        inner = in_ellipse(x, y, cx, cy, crx, cry) & recon
        for k in BODY_SLICES[lv]:
            labels[k][outer] = LABELS["cortical"]
            if k in CORE_SLICES[lv]:
                labels[k][inner] = LABELS[f"core-{lv}"]
    disc = in_ellipse(x, y, cx, cy, *level_radii(p, "L1")) & recon
    for k in DISC_SLICES:
        labels[k][disc] = LABELS["disc"]

    hu = np.zeros(labels.shape, dtype=np.float64)
    for name, value in set_hu.items():
        hu[labels == LABELS[name]] = value
    rng = np.random.default_rng(stable_int(seed_key, 12))
    hu += rng.normal(0.0, noise_sd, size=hu.shape)
    hu = np.clip(np.rint(hu), -1023, 3071 if p.unsigned else 1023 if p.bits_stored == 12 else 3071)
    padding_hu = -1024.0 if p.unsigned else -2048.0
    hu[labels == LABELS["padding"]] = padding_hu
    return hu.astype(np.int16), labels, set_hu


# --------------------------------------------------------------------------- DICOM


def new_dataset(sop_class: str, sop_uid: str) -> Dataset:
    """An empty instance of ``sop_class`` with its file meta (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "HU_ROI_SAMPLE_1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def write_slice(
    path: Path,
    hu_slice: np.ndarray,
    *,
    p: PatientSpec,
    common: dict[str, Any],
    sop_uid: str,
    instance_number: int,
    ipp: list[float],
    iop: list[float],
    spacing: list[float],
    slice_location: float | None,
    image_type: list[str],
) -> None:
    """Write one CT image (explicit VR little endian) with Siemens-like tags."""
    ds = new_dataset(CTImageStorage, sop_uid)
    ds.ImageType = image_type
    for key, value in common.items():
        setattr(ds, key, value)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = ipp
    ds.ImageOrientationPatient = iop
    if slice_location is not None:
        ds.SliceLocation = slice_location
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu_slice.shape
    ds.PixelSpacing = spacing
    ds.BitsAllocated = 16
    ds.BitsStored = p.bits_stored
    ds.HighBit = p.bits_stored - 1
    ds.PixelRepresentation = 0 if p.unsigned else 1
    ds.PixelPaddingValue = 0 if p.unsigned else -1024  # stored value (HU -1024 / -2048)
    stored = hu_slice.astype(np.int32) + 1024
    stored_arr = stored.astype(np.uint16 if p.unsigned else np.int16)
    ds.SmallestImagePixelValue = int(stored_arr.min())
    ds.LargestImagePixelValue = int(stored_arr.max())
    ds.WindowCenter = [450, 40]
    ds.WindowWidth = [1500, 400]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = stored_arr.tobytes()
    ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.write_bytes(buf.getvalue())


def series_common(
    p: PatientSpec, tp: str, *, kernel: str, series_number: int, description: str
) -> dict[str, Any]:
    """Tags shared by all images of one series."""
    pid = p.patient_id
    day = p.baseline + timedelta(days=DAYS[tp])
    dstr = day.strftime("%Y%m%d")
    pose = POSE[(pid, tp)]
    return {
        "StudyDate": dstr,
        "SeriesDate": dstr,
        "AcquisitionDate": dstr,
        "ContentDate": dstr,
        "StudyTime": "091500",
        "SeriesTime": f"09{16 + series_number:02d}00",
        "AcquisitionTime": f"09{16 + series_number:02d}00",
        "AccessionNumber": f"SAMPLE{pid[1:]}{tp}",
        "Modality": "CT",
        "Manufacturer": "SIEMENS",
        "InstitutionName": "SYNTHETIC SAMPLE",
        "ReferringPhysicianName": "",
        "StationName": "CTAWP00000",
        "StudyDescription": "CT SPINE",
        "SeriesDescription": description,
        "ManufacturerModelName": "SOMATOM Sensation Open",
        "PatientName": f"SAMPLE^{pid}",
        "PatientID": pid,
        "PatientBirthDate": p.birth_date,
        "PatientSex": p.sex,
        "BodyPartExamined": "SPINE",
        "SliceThickness": SLICE_MM,
        "KVP": KVP[(pid, tp)],
        "DataCollectionDiameter": 500,
        "SoftwareVersions": "syngo CT 2007S",
        "ProtocolName": "Spine_Bone",
        "ReconstructionDiameter": round(p.matrix * p.spacing_mm, 3),
        "DistanceSourceToDetector": 1040,
        "DistanceSourceToPatient": 570,
        "GantryDetectorTilt": 0,
        "TableHeight": round(160.0 + pose[1], 2),
        "RotationDirection": "CW",
        "ExposureTime": 500,
        "XRayTubeCurrent": 250,
        "Exposure": 125,
        "FilterType": "0",
        "GeneratorPower": 30,
        "FocalSpots": 1.2,
        "ConvolutionKernel": kernel,
        "PatientPosition": "HFS",
        "StudyInstanceUID": make_uid(f"study/{pid}/{tp}"),
        "SeriesInstanceUID": make_uid(f"series/{pid}/{tp}/{series_number}"),
        "StudyID": f"{pid[1:]}{tp[1:]}",
        "SeriesNumber": series_number,
        "AcquisitionNumber": 1,
        "FrameOfReferenceUID": make_uid(f"for/{pid}/{tp}"),
        "PositionReferenceIndicator": "",
    }


def write_axial_series(
    folder: Path, p: PatientSpec, tp: str, grid: Grid, hu: np.ndarray, common: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write the slices; InstanceNumber 1 is the top (highest z) slice, as scanned head first."""
    iop = [1, 0, 0, 0, 1, 0]
    files = []
    for k in range(N_SLICES):
        instance = N_SLICES - k
        sop = make_uid(f"sop/{common['SeriesInstanceUID']}/{instance}")
        name = hashlib.sha1(sop.encode()).hexdigest()[:16].upper()
        z = float(grid.z_mm[k])
        write_slice(
            folder / name,
            hu[k],
            p=p,
            common=common,
            sop_uid=sop,
            instance_number=instance,
            ipp=[grid.x0, grid.x0, z],
            iop=iop,
            spacing=[grid.spacing_mm, grid.spacing_mm],
            slice_location=z,
            image_type=["ORIGINAL", "PRIMARY", "AXIAL"],
        )
        files.append({"file": name, "slice_index": k, "instance_number": instance, "z_mm": z})
    return files


def write_scout(folder: Path, p: PatientSpec, tp: str, grid: Grid, hu: np.ndarray) -> str:
    """Coronal localizer (one image): mean attenuation along y, spine pattern repeated in z."""
    common = series_common(p, tp, kernel="T80s", series_number=1, description="Topogram 0.6 T80s")
    rows = 128
    mu = np.clip(hu.astype(np.float64), -1000, None) + 1000.0  # (slices, rows=y, cols=x)
    proj = mu.mean(axis=1)  # (slices, x): ascending z
    img = np.empty((rows, grid.matrix), dtype=np.float64)
    for r in range(rows):  # row r at z_top - r*2 mm; cycle through the axial pattern
        img[r] = proj[(N_SLICES - 1 - (r * 2 // 3)) % N_SLICES]
    img = np.rint(img * 2.0 - 1000.0).clip(-1000, 1000).astype(np.int16)
    sop = make_uid(f"sop/{common['SeriesInstanceUID']}/1")
    name = hashlib.sha1(sop.encode()).hexdigest()[:16].upper()
    z_top = float(grid.z_mm[-1]) + 60.0
    write_slice(
        folder / name,
        img,
        p=p,
        common=common,
        sop_uid=sop,
        instance_number=1,
        ipp=[grid.x0, 0.0, z_top],
        iop=[1, 0, 0, 0, 0, -1],
        spacing=[2.0, grid.spacing_mm],
        slice_location=None,
        image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"],
    )
    return common["SeriesInstanceUID"]


# --------------------------------------------------------------------------- ROIs


def roi_mask(shape: dict[str, Any], grid: Grid) -> tuple[np.ndarray, int | None]:
    """Independent rasterisation (rule of docs/roi_format.md) -> (mask (slices,rows,cols), slice index)."""
    x, y = grid.xy()
    mask = np.zeros((N_SLICES, grid.matrix, grid.matrix), dtype=bool)
    eps = 1e-9
    t = shape["type"]
    if t == "sphere":
        cx, cy, cz = shape["center_mm"]
        r = shape["radius_mm"]
        for k, z in enumerate(grid.z_mm):
            mask[k] = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r + eps
        return mask, None
    z_plane = shape["points_mm"][0][2] if t == "polygon" else shape["center_mm"][2]
    dist = np.abs(grid.z_mm - z_plane)
    k = int(np.argmin(dist))
    if np.sum(np.isclose(dist, dist[k], atol=1e-6)) > 1:
        raise ValueError(f"ROI plane z={z_plane} is halfway between two slices")
    if t == "circle":
        cx, cy, _ = shape["center_mm"]
        r = shape["radius_mm"]
        mask[k] = (x - cx) ** 2 + (y - cy) ** 2 <= r * r + eps
    elif t == "ellipse":
        cx, cy, _ = shape["center_mm"]
        rx, ry = shape["radii_mm"]
        a = math.radians(shape.get("angle_deg", 0.0))
        u = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)
        v = -(x - cx) * math.sin(a) + (y - cy) * math.cos(a)
        mask[k] = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0 + eps
    elif t == "polygon":
        pts = np.asarray(shape["points_mm"], dtype=float)[:, :2]
        mask[k] = point_in_polygon(x, y, pts)
    else:
        raise ValueError(f"unknown shape {t}")
    return mask, k


def point_in_polygon(x: np.ndarray, y: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd rule plus points on an edge (inclusive)."""
    inside = np.zeros(x.shape, dtype=bool)
    on_edge = np.zeros(x.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        x1, y1 = pts[i]
        x2, y2 = pts[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xint)
        cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
        within = (np.minimum(x1, x2) - 1e-9 <= x) & (x <= np.maximum(x1, x2) + 1e-9)
        within &= (np.minimum(y1, y2) - 1e-9 <= y) & (y <= np.maximum(y1, y2) + 1e-9)
        on_edge |= within & (np.abs(cross) <= 1e-9)
    return inside | on_edge


def target_shape(
    p: PatientSpec, tp: str, level: str, grid: Grid, cx: float, cy: float
) -> dict[str, Any]:
    """A reader's target ROI well inside the trabecular core."""
    key = f"{p.patient_id}/{tp}/{level}"
    jx, jy = jitter(key + "/x", 1.5), jitter(key + "/y", 1.2)
    crx, cry = core_radii(p, level)
    z = float(grid.z_mm[MID_SLICE[level]])
    c = [round(cx + jx, 2), round(cy + jy, 2), z]
    kind = TARGET_SHAPE.get((p.patient_id, tp, level), "ellipse")
    if kind == "circle":
        return {"type": "circle", "center_mm": c, "radius_mm": round(0.65 * cry, 1)}
    if kind == "sphere":
        return {"type": "sphere", "center_mm": c, "radius_mm": 5.0}
    if kind == "polygon":
        rx, ry = 0.55 * crx, 0.55 * cry
        pts = [
            [round(c[0] + rx * math.cos(a), 2), round(c[1] + ry * math.sin(a), 2), z]
            for a in np.linspace(0, 2 * math.pi, 7)[:-1]
        ]
        return {"type": "polygon", "points_mm": pts}
    angle = 20.0 if kind == "ellipse-rotated" else 0.0
    radii = [round(0.6 * crx, 1), round(0.6 * cry, 1)]
    return {"type": "ellipse", "center_mm": c, "radii_mm": radii, "angle_deg": angle}


def reference_rois(p: PatientSpec, tp: str, grid: Grid) -> list[tuple[str, str, dict[str, Any]]]:
    """(structure, kind, shape) of reference and phantom ROIs on the reference slice."""
    bx, by, _ = POSE[(p.patient_id, tp)]
    z = float(grid.z_mm[REF_SLICE])
    out: list[tuple[str, str, dict[str, Any]]] = [
        (
            "air",
            "reference-air",
            {
                "type": "circle",
                "center_mm": [round(bx, 2), round(by - 75.0, 2), z],
                "radius_mm": 6.0,
            },
        ),
        (
            "fat",
            "reference-fat",
            {
                "type": "ellipse",
                "center_mm": [round(bx - 76.0, 2), round(by, 2), z],
                "radii_mm": [4.0, 12.0],
                "angle_deg": 0.0,
            },
        ),
        (
            "muscle",
            "reference-muscle",
            {
                "type": "circle",
                "center_mm": [round(bx + 30.0, 2), round(by + 25.0, 2), z],
                "radius_mm": 6.0,
            },
        ),
    ]
    if p.phantom:
        for name, (_, _, dx) in RODS.items():
            out.append(
                (
                    name,
                    name,
                    {
                        "type": "circle",
                        "center_mm": [round(bx + dx, 2), round(by + ROD_Y_MM, 2), z],
                        "radius_mm": 6.0,
                    },
                )
            )
    return out


# --------------------------------------------------------------------------- main


GT_COLUMNS = [
    "patient_id",
    "timepoint",
    "study_date",
    "series_instance_uid",
    "kvp",
    "kernel",
    "structure",
    "kind",
    "level",
    "irradiated",
    "lesion_type",
    "density_mg_cm3",
    "hu_set",
    "hu_set_120kv",
    "noise_sd_hu",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "radius_x_mm",
    "radius_y_mm",
    "z_min_mm",
    "z_max_mm",
    "slice_index_min",
    "slice_index_max",
    "roi_id",
    "roi_shape",
    "roi_slice_index",
    "roi_n_voxels",
    "roi_mean_hu",
    "roi_sd_hu",
    "roi_median_hu",
    "roi_min_hu",
    "roi_max_hu",
]


def fmt(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    return v


def generate(out: Path) -> dict[str, Any]:
    """Write the whole cohort into ``out``; return the ground-truth document."""
    dicom_root = out / "dicom"
    for p in PATIENTS:
        if (dicom_root / p.patient_id).exists():
            shutil.rmtree(dicom_root / p.patient_id)
        (out / "rtdose" / f"{p.patient_id}_RD.dcm").unlink(missing_ok=True)
    gt_rows: list[dict[str, Any]] = []
    series_list: list[dict[str, Any]] = []
    rois: list[dict[str, Any]] = []
    for p in PATIENTS:
        for tp in TIMEPOINTS:
            pid = p.patient_id
            pose = POSE[(pid, tp)]
            folder = dicom_root / pid / tp
            folder.mkdir(parents=True, exist_ok=True)
            z = pose[2] + SLICE_MM * np.arange(N_SLICES)
            grid = Grid(p.matrix, p.spacing_mm, z)
            hu, labels, set_hu = build_phantom(
                p, tp, grid, noise_sd=NOISE_SD_HU, seed_key=f"noise/{pid}/{tp}/B60s"
            )
            common = series_common(
                p, tp, kernel="B60s", series_number=2, description="Spine 3.0 B60s"
            )
            uid = common["SeriesInstanceUID"]
            files = write_axial_series(folder, p, tp, grid, hu, common)
            if tp == "T0":  # the plan's dose lies in the baseline (planning) CT's frame
                write_rtdose(out / "rtdose" / f"{pid}_RD.dcm", p, common, grid)
            series_list.append(
                {
                    "patient_id": pid,
                    "timepoint": tp,
                    "folder": f"dicom/{pid}/{tp}",
                    "series_instance_uid": uid,
                    "study_instance_uid": common["StudyInstanceUID"],
                    "frame_of_reference_uid": common["FrameOfReferenceUID"],
                    "series_number": 2,
                    "series_description": common["SeriesDescription"],
                    "role": "measure",
                    "kernel": "B60s",
                    "kvp": KVP[(pid, tp)],
                    "study_date": common["StudyDate"],
                    "n_slices": N_SLICES,
                    "rows": p.matrix,
                    "columns": p.matrix,
                    "pixel_spacing_mm": [p.spacing_mm, p.spacing_mm],
                    "slice_spacing_mm": SLICE_MM,
                    "pixel_representation": 0 if p.unsigned else 1,
                    "bits_stored": p.bits_stored,
                    "padding_hu": -1024 if p.unsigned else -2048,
                    "pixel_padding_value": 0 if p.unsigned else -1024,
                    "image_position_first_mm": [grid.x0, grid.x0, float(z[0])],
                    "z_ascending_mm": [float(v) for v in z],
                    "files": files,
                }
            )
            if (pid, tp) == ("P01", "T0"):
                soft_common = series_common(
                    p, tp, kernel="B30f", series_number=3, description="Abdomen 3.0 B30f"
                )
                soft, _, _ = build_phantom(
                    p, tp, grid, noise_sd=SOFT_NOISE_SD_HU, seed_key=f"noise/{pid}/{tp}/B30f"
                )
                write_axial_series(folder, p, tp, grid, soft, soft_common)
                scout_uid = write_scout(folder, p, tp, grid, hu)
                for role, suid, desc, kern, n in (
                    (
                        "decoy-soft-kernel",
                        soft_common["SeriesInstanceUID"],
                        "Abdomen 3.0 B30f",
                        "B30f",
                        N_SLICES,
                    ),
                    ("decoy-localizer", scout_uid, "Topogram 0.6 T80s", "T80s", 1),
                ):
                    series_list.append(
                        {
                            "patient_id": pid,
                            "timepoint": tp,
                            "folder": f"dicom/{pid}/{tp}",
                            "series_instance_uid": suid,
                            "series_number": 3 if role == "decoy-soft-kernel" else 1,
                            "series_description": desc,
                            "role": role,
                            "kernel": kern,
                            "kvp": 120,
                            "study_date": common["StudyDate"],
                            "n_slices": n,
                        }
                    )

            cx, cy = vb_center(p, pose)
            entries: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
            for lv in LEVELS:
                irr = lv == p.irradiated_level
                lt = p.lesion_type if irr else "none"
                crx, cry = core_radii(p, lv)
                ks = CORE_SLICES[lv]
                geo = {
                    "level": lv,
                    "irradiated": irr,
                    "lesion_type": lt,
                    "density_mg_cm3": "",
                    "hu_set": set_hu[f"core-{lv}"],
                    "hu_set_120kv": p.core_hu[lv][tp],
                    "center_x_mm": cx,
                    "center_y_mm": cy,
                    "center_z_mm": float(z[MID_SLICE[lv]]),
                    "radius_x_mm": crx,
                    "radius_y_mm": cry,
                    "z_min_mm": float(z[ks.start]),
                    "z_max_mm": float(z[ks.stop - 1]),
                    "slice_index_min": ks.start,
                    "slice_index_max": ks.stop - 1,
                }
                entries.append((lv, "target", geo, target_shape(p, tp, lv, grid, cx, cy)))
            for structure, kind, shape in reference_rois(p, tp, grid):
                density = RODS[structure][0] if structure in RODS else ""
                hu120 = RODS[structure][1] if structure in RODS else set_hu[structure]
                if structure in RODS:
                    gx, gy, rx, ry = (
                        pose[0] + RODS[structure][2],
                        pose[1] + ROD_Y_MM,
                        ROD_RADIUS_MM,
                        ROD_RADIUS_MM,
                    )
                    zmin, zmax, kmin, kmax = float(z[0]), float(z[-1]), 0, N_SLICES - 1
                else:
                    gx = gy = rx = ry = zmin = zmax = kmin = kmax = ""  # region, not a cylinder
                geo = {
                    "level": "",
                    "irradiated": "",
                    "lesion_type": "",
                    "density_mg_cm3": density,
                    "hu_set": set_hu[structure],
                    "hu_set_120kv": hu120,
                    "center_x_mm": gx,
                    "center_y_mm": gy,
                    "center_z_mm": "",
                    "radius_x_mm": rx,
                    "radius_y_mm": ry,
                    "z_min_mm": zmin,
                    "z_max_mm": zmax,
                    "slice_index_min": kmin,
                    "slice_index_max": kmax,
                }
                entries.append((structure, kind, geo, shape))

            for structure, kind, geo, shape in entries:
                roi_id = f"{pid}-{tp}-{structure}"
                mask, k = roi_mask(shape, grid)
                region = LABELS[f"core-{structure}"] if kind == "target" else LABELS[structure]
                if not np.all(labels[mask] == region) or mask.sum() < 20:
                    raise RuntimeError(f"ROI {roi_id} leaves its region {structure}")
                vals = hu[mask].astype(np.float64)
                roi: dict[str, Any] = {
                    "roi_id": roi_id,
                    "patient_id": pid,
                    "timepoint": tp,
                    "series_instance_uid": uid,
                    "level": structure if kind == "target" else None,
                    "irradiated": geo["irradiated"] if kind == "target" else None,
                    "lesion_type": geo["lesion_type"] if kind == "target" else None,
                    "kind": kind,
                    "shape": shape,
                }
                if structure in RODS:
                    roi["density_mg_cm3"] = RODS[structure][0]
                rois.append(roi)
                gt_rows.append(
                    {
                        "patient_id": pid,
                        "timepoint": tp,
                        "study_date": common["StudyDate"],
                        "series_instance_uid": uid,
                        "kvp": KVP[(pid, tp)],
                        "kernel": "B60s",
                        "structure": structure,
                        "kind": kind,
                        **geo,
                        "noise_sd_hu": NOISE_SD_HU,
                        "roi_id": roi_id,
                        "roi_shape": shape["type"],
                        "roi_slice_index": "" if k is None else k,
                        "roi_n_voxels": int(mask.sum()),
                        "roi_mean_hu": round(float(vals.mean()), 4),
                        "roi_sd_hu": round(float(vals.std(ddof=1)), 4),
                        "roi_median_hu": float(np.median(vals)),
                        "roi_min_hu": float(vals.min()),
                        "roi_max_hu": float(vals.max()),
                    }
                )

    gt_rows = [{c: fmt(r[c]) for c in GT_COLUMNS} for r in gt_rows]
    (out / "rois").mkdir(parents=True, exist_ok=True)
    with open(out / "ground_truth.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=GT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(gt_rows)
    doc = {
        "description": "Synthetic hu-roi sample cohort; see sample_dicom/README.md",
        "generator": "scripts/make_sample_dicom.py",
        "uid_root": UID_ROOT,
        "noise_sd_hu": NOISE_SD_HU,
        "kvp100_bone_factor": KVP100_BONE_FACTOR,
        "labels_hu_120kv": {
            "air": AIR_HU,
            "fat": FAT_HU,
            "muscle": MUSCLE_HU,
            "cortical": CORTICAL_HU,
            "disc": DISC_HU,
            "canal": CSF_HU,
            "arch": ARCH_HU,
            "phantom-block": BLOCK_HU,
        },
        "roi_rule": (
            "2D shape: voxels whose centre is inside or on the boundary, on the slice whose "
            "centre is nearest to the shape plane; sphere: voxel centres within the radius. "
            "roi_* statistics computed by the generator from the written integer HU pixels."
        ),
        "columns": GT_COLUMNS,
        "rows": gt_rows,
        "series": series_list,
    }
    write_json(out / "ground_truth.json", doc)
    roiset = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": rois}
    write_json(out / "rois" / "sample.rois.json", roiset)
    return doc


# --------------------------------------------------------------------------- RT dose
#: The trial's prescription (30 Gy in 10 fractions) on the irradiated level.
PRESCRIPTION_GY = 30.0
#: Dose outside the field (scatter), Gy, and the width (mm) over which the dose falls from
#: the prescription to it beyond the irradiated body's top and bottom (the penumbra).
DOSE_OUTSIDE_GY = 1.5
PENUMBRA_MM = 9.0
DOSE_SPACING_MM = 5.0
DOSE_FRAME_MM = 2.5


def dose_profile_gy(p: PatientSpec, z_mm: np.ndarray, z0: float) -> np.ndarray:
    """Planned dose (Gy) along z: the prescription over the irradiated level's body
    (its slices ± half a slice), falling linearly to :data:`DOSE_OUTSIDE_GY` over
    :data:`PENUMBRA_MM` above and below."""
    ks = BODY_SLICES[p.irradiated_level]
    lo = z0 + SLICE_MM * (ks.start - 0.5)
    hi = z0 + SLICE_MM * (ks.stop - 1 + 0.5)
    d = np.maximum(lo - z_mm, z_mm - hi).clip(min=0.0)
    return PRESCRIPTION_GY - (PRESCRIPTION_GY - DOSE_OUTSIDE_GY) * np.minimum(d / PENUMBRA_MM, 1.0)


def write_rtdose(path: Path, p: PatientSpec, common: dict[str, Any], grid: Grid) -> None:
    """The plan's RT dose on the baseline CT (its Frame of Reference): a multi-frame grid
    of :data:`DOSE_SPACING_MM` pixels covering the CT's field of view, frames every
    :data:`DOSE_FRAME_MM` over its slices, dose varying along z only."""
    pid = p.patient_id
    half = (grid.matrix - 1) / 2.0 * grid.spacing_mm
    n_xy = int(math.floor(2 * half / DOSE_SPACING_MM)) + 1
    x0 = -(n_xy - 1) / 2.0 * DOSE_SPACING_MM
    z0 = float(grid.z_mm[0])
    n_z = int(math.floor((float(grid.z_mm[-1]) - z0) / DOSE_FRAME_MM)) + 1
    zs = z0 + DOSE_FRAME_MM * np.arange(n_z)
    scaling = 1e-3  # 30 Gy = 30000: fits 16 bits
    frames = np.rint(dose_profile_gy(p, zs, z0) / scaling).astype(np.uint16)
    pixels = np.repeat(frames[:, None, None], n_xy, axis=1).repeat(n_xy, axis=2)
    ds = new_dataset(RTDoseStorage, make_uid(f"rtdose/{pid}"))
    for key in ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "StudyInstanceUID", "StudyID", "FrameOfReferenceUID",
                "PositionReferenceIndicator", "Manufacturer"):  # fmt: skip
        setattr(ds, key, common[key])
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = make_uid(f"rtdose-series/{pid}")
    ds.SeriesNumber = 90
    ds.SeriesDescription = f"Plan dose {PRESCRIPTION_GY:g} Gy / 10 fx {p.irradiated_level}"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [x0, x0, z0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [DOSE_SPACING_MM, DOSE_SPACING_MM]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = n_z
    ds.FrameIncrementPointer = 0x3004000C
    ds.GridFrameOffsetVector = [round(DOSE_FRAME_MM * i, 4) for i in range(n_z)]
    ds.Rows = ds.Columns = n_xy
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = scaling
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "sample_dicom", help="output folder")
    args = parser.parse_args(argv)
    doc = generate(args.out)
    n_files = sum(len(s.get("files", [])) for s in doc["series"]) + N_SLICES + 1
    print(f"wrote {n_files} DICOM files, {len(doc['rows'])} ground-truth rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
