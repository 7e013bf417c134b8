"""Write real, small CT series with pydicom for tests (no mocks of DICOM).

The one public function, :func:`write_ct_series`, turns an HU array
``(slices, rows, columns)`` into a folder of single-frame CT Image Storage files with
proper file meta.  Options produce the tricky series the reader must cope with:
feet-first, anisotropic pixels, intercept -8192, unsigned 12-bit storage, gantry tilt
(via ``orientation``/``origins``), gaps and duplicates (via ``slice_positions``),
InstanceNumber order opposite to the position order, random or sequential file names,
and compressed transfer syntaxes.

Compressed transfer syntaxes that work with the packages installed in ``.venv`` (checked
by ``tests/test_sample_data.py::test_factory_roundtrip``):

* ``RLELossless`` (1.2.840.10008.1.2.5) via pylibjpeg-rle / pydicom's native RLE encoder,
* ``JPEGLSLossless`` (1.2.840.10008.1.2.4.80) via pyjpegls,
* ``JPEG2000Lossless`` (1.2.840.10008.1.2.4.90) via pylibjpeg-openjpeg -- only for
  images of at least 32 x 32 pixels (openjpeg's default 6 resolution levels),

plus the uncompressed ``ExplicitVRLittleEndian`` (default), ``ImplicitVRLittleEndian``
and ``DeflatedExplicitVRLittleEndian``.  Big-endian syntaxes are not supported here.

Example
-------
>>> import numpy as np
>>> from dicom_factory import write_ct_series   # tests/ is on sys.path under pytest
>>> hu = np.full((5, 16, 16), 40.0)
>>> paths = write_ct_series(tmp_path, hu, pixel_spacing=(0.8, 0.6),
...                         slice_positions=[0, 2, 4, 6, 10])   # a gap
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

__all__ = ["write_ct_series", "SUPPORTED_TRANSFER_SYNTAXES", "COMPRESSED_TRANSFER_SYNTAXES"]

#: Prefix of UIDs made by this factory (pydicom's generate_uid adds a random/hashed suffix).
UID_ROOT = "1.2.826.0.1.3680043.10.1234.9."

#: Transfer syntaxes written without compression.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)
#: Lossless compressed transfer syntaxes written via ``Dataset.compress``.
COMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (RLELossless, JPEGLSLossless, JPEG2000Lossless)
SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    UNCOMPRESSED_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES
)


def _stored_values(
    hu: np.ndarray, *, intercept: float, slope: float, unsigned: bool, bits_stored: int
) -> np.ndarray:
    """HU -> stored integers ``round((hu - intercept) / slope)``, range-checked."""
    stored = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope)
    if unsigned:
        lo, hi = 0, 2**bits_stored - 1
    else:
        lo, hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    if stored.size and (stored.min() < lo or stored.max() > hi):
        raise ValueError(
            f"HU range [{np.min(hu)}, {np.max(hu)}] with intercept {intercept} and slope "
            f"{slope} gives stored values [{stored.min():.0f}, {stored.max():.0f}] outside "
            f"[{lo}, {hi}] for unsigned={unsigned}, bits_stored={bits_stored}; clip the HU "
            "array or change intercept/unsigned/bits_stored."
        )
    return stored.astype(np.uint16 if unsigned else np.int16)


def _file_name(mode: str, index: int, sop_uid: str) -> str:
    if mode == "random":
        return hashlib.sha1(sop_uid.encode()).hexdigest()[:16].upper()
    if mode == "sequential":
        return f"IM{index + 1:04d}.dcm"
    raise ValueError(f"file_names must be 'random' or 'sequential', got {mode!r}.")


def write_ct_series(
    folder: str | Path,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slice_positions: Sequence[float] | np.ndarray | None = None,
    origins: np.ndarray | Sequence[Sequence[float]] | None = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    intercept: float = -1024.0,
    slope: float = 1.0,
    unsigned: bool = True,
    bits_stored: int = 16,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    file_names: Literal["random", "sequential"] = "random",
    reverse_order: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    extra_tags: Mapping[str, Any] | None = None,
    patient_position: str = "HFS",
) -> list[Path]:
    """Write an HU volume as a single-frame CT Image Storage series.

    Parameters
    ----------
    folder : str or Path
        Output folder (created if missing).  Files of several series may share a folder.
    hu : ndarray, shape (slices, rows, columns)
        Hounsfield units; stored as ``round((hu - intercept) / slope)``.
    pixel_spacing : (float, float)
        PixelSpacing (ΔR, ΔC) in mm: row spacing (between rows, along Y), column spacing.
    slice_positions : sequence of float, shape (slices,), optional
        Distance (mm) of each slice along the normal ``X × Y`` from ``origin``.  Default
        ``0, 1, 2, ...`` times ``1.0`` mm.  Gaps and duplicates are made here.  Ignored when
        ``origins`` is given.
    origins : array, shape (slices, 3), optional
        Explicit ImagePositionPatient (LPS, mm) per slice (for gantry tilt: shift the
        origins in-plane slice by slice).
    origin : (float, float, float)
        ImagePositionPatient of the slice at ``slice_positions == 0`` (LPS, mm).
    orientation : 6 floats
        ImageOrientationPatient: X (row direction) then Y (column direction).
    intercept, slope : float
        RescaleIntercept and RescaleSlope.
    unsigned : bool
        PixelRepresentation 0 (True) or 1 (False).
    bits_stored : int
        BitsStored (BitsAllocated is always 16, HighBit = bits_stored - 1).  Values must fit.
    series_uid, study_uid, frame_of_reference_uid : str, optional
        UIDs; new random UIDs under ``UID_ROOT`` when None (so two calls give two
        different series unless the same ``series_uid`` is passed).
    file_names : {"random", "sequential"}
        ``random``: 16 hex characters derived from the SOPInstanceUID, no extension;
        ``sequential``: ``IM0001.dcm`` ... in InstanceNumber order.
    reverse_order : bool
        If True, InstanceNumber runs opposite to the array's slice order (InstanceNumber 1
        is the last array slice), so a reader sorting by InstanceNumber gets it wrong.
    transfer_syntax : str
        One of :data:`SUPPORTED_TRANSFER_SYNTAXES`.  Compressed syntaxes are lossless and
        written with ``Dataset.compress``.
    extra_tags : mapping of keyword -> value, optional
        Set (or, with value None, delete) any DICOM attribute by keyword after the defaults,
        e.g. ``{"KVP": 100, "ConvolutionKernel": "B60s", "RescaleSlope": None}``.
        A callable value is called as ``value(slice_index)`` to give per-slice values.
    patient_position : str
        PatientPosition (HFS, FFS, ...).  Informative: geometry comes from
        ``orientation`` and positions only.

    Returns
    -------
    list of Path
        Written files, in array slice order.

    Raises
    ------
    ValueError
        Bad shapes, unsupported transfer syntax, values not fitting the stored range.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must have shape (slices, rows, columns), got {hu.shape}.")
    n, rows, cols = hu.shape
    ts = UID(str(transfer_syntax))
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(
            f"transfer_syntax {ts} ({ts.name}) is not supported; use one of "
            f"{[str(u) for u in SUPPORTED_TRANSFER_SYNTAXES]}."
        )
    if ts == JPEG2000Lossless and min(rows, cols) < 32:
        raise ValueError(
            f"JPEG 2000 encoding needs at least 32 x 32 pixels, got {rows} x {cols}; "
            "use a larger image or another transfer syntax."
        )
    if not 8 < bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 9..16, got {bits_stored}.")
    orient = np.asarray(orientation, dtype=float).reshape(2, 3)
    normal = np.cross(orient[0], orient[1])
    if origins is not None:
        ipp = np.asarray(origins, dtype=float)
        if ipp.shape != (n, 3):
            raise ValueError(f"origins must have shape ({n}, 3), got {ipp.shape}.")
    else:
        pos = (
            np.arange(n, dtype=float)
            if slice_positions is None
            else np.asarray(slice_positions, dtype=float)
        )
        if pos.shape != (n,):
            raise ValueError(f"slice_positions must have shape ({n},), got {pos.shape}.")
        ipp = np.asarray(origin, dtype=float)[None, :] + pos[:, None] * normal[None, :]
    stored = _stored_values(
        hu, intercept=intercept, slope=slope, unsigned=unsigned, bits_stored=bits_stored
    )
    along = ipp @ normal
    if n > 1:
        steps = np.abs(np.diff(np.sort(along)))
        steps = steps[steps > 1e-6]
        thickness = float(np.median(steps)) if steps.size else 1.0
    else:
        thickness = 1.0

    series_uid = series_uid or generate_uid(prefix=UID_ROOT)
    study_uid = study_uid or generate_uid(prefix=UID_ROOT)
    frame_of_reference_uid = frame_of_reference_uid or generate_uid(prefix=UID_ROOT)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i in range(n):
        instance_number = (n - i) if reverse_order else (i + 1)
        sop_uid = generate_uid(prefix=UID_ROOT)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts.is_compressed else ts
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20200101"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "SYNTHETIC"
        ds.ManufacturerModelName = "dicom_factory"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = "factory series"
        ds.PatientName = "TEST^FACTORY"
        ds.PatientID = "TEST"
        ds.PatientBirthDate = "19500101"
        ds.PatientSex = "O"
        ds.SliceThickness = round(thickness, 6)
        ds.KVP = 120
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = patient_position
        ds.GantryDetectorTilt = 0
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = instance_number
        ds.ImagePositionPatient = [round(float(v), 6) for v in ipp[i]]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in orient.ravel()]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = round(float(along[i]), 6)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = slope
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        frame = np.ascontiguousarray(stored[i])
        ds.PixelData = frame.tobytes()
        ds["PixelData"].VR = "OW"
        for key, value in (extra_tags or {}).items():
            if callable(value):
                value = value(i)
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        if ts.is_compressed:
            ds.compress(ts, frame, generate_instance_uid=False)
        path = folder / _file_name(file_names, instance_number - 1, sop_uid)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
