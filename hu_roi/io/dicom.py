"""Header-only indexing of DICOM trees into CT series (the only place that parses headers).

:func:`index_folder` walks a folder recursively, reads the header of every file (no pixel
decoding), skips what is not a usable image with a one-line reason, groups images into
series and names the problems of each series (codes in :data:`hu_roi.series.PROBLEM_CODES`).

Grouping
--------
Images are grouped by SeriesInstanceUID.  When that tag is empty or missing (seen in real,
partly anonymised Siemens data), by their content: images with the same

    PatientID, StudyInstanceUID, StudyDate, StudyTime, FrameOfReferenceUID, Modality,
    SeriesNumber, SeriesDescription, ImageOrientationPatient (rounded to 1e-4), Rows,
    Columns

form one series, with ``series_key = content_series_key(...)`` (``"nouid-"`` + 16 hex
digits of a SHA-1 over those fields and the sorted SOPInstanceUIDs, or the sorted
positions when SOPInstanceUIDs are empty) and the ``empty-uid`` problem.  No path enters
the grouping or the key: the key is the same for any spelling, copy or location of the
folder, and a copy of such a series in two folders of one tree is one series with
``duplicate-positions`` (as two copies of a series with a UID are).  AcquisitionNumber is
not part of the key because sequential (step-and-shoot) acquisitions change it from one
slice group to the next.  ROIs that carry the older, path-based key are resolved by
:mod:`hu_roi.series_lookup`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hu_roi.errors import DicomReadError
from hu_roi.parallel import map_tasks, usable_cpus
from hu_roi.series import PROBLEM_CODES, SeriesInfo, SliceRef, orientation_problem

if TYPE_CHECKING:
    import pydicom

# pydicom is imported when the first header is read, not with this module: importing it
# loads every pixel decoder it knows (GDCM, pylibjpeg, Pillow, CharLS; ~0.3 s), which a
# measurement whose headers all come from the header cache never needs.

log = logging.getLogger(__name__)

#: SOP classes whose images hu-roi can read as CT.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: ImageType values that mean "not Hounsfield units" even when Modality is CT.
NON_HU_IMAGE_TYPES = frozenset({"PERFUSION", "RCBF", "RCBV", "MTT", "TTP", "IODINE", "VNC_MAP"})

#: Largest image hu-roi accepts (pixels per frame); larger files are refused before any
#: allocation (a malicious or corrupt header can claim gigabytes).
MAX_PIXELS_PER_FRAME = 8192 * 8192

#: Relative tolerances of the geometry checks.
GAP_FACTOR = 1.5  # a step larger than 1.5x the median step is a gap (missing slices)
UNIFORM_TOL = 0.01  # steps differing by more than 1% (and 0.01 mm) are non-uniform
TILT_TOL_DEG = 0.5  # stacking direction more than 0.5° off the normal is a tilt
DUPLICATE_TOL_MM = 0.01

_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "ConvolutionKernel",
    "SliceThickness",
    "ContrastBolusAgent",
    "SeriesDescription",
    "SeriesNumber",
    "AcquisitionNumber",
    "InstanceNumber",
    "StudyDate",
    "StudyTime",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientPosition",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "GantryDetectorTilt",
    "NumberOfFrames",
    "PixelPaddingValue",
    "DirectoryRecordSequence",
]


@dataclass(frozen=True)
class SkippedFile:
    """A file the index could not use, with a one-line reason."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImageHeader:
    """Header facts of one image file, as read by :func:`read_header`."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    manufacturer: str
    model: str
    kvp: float | None
    kernel: str
    slice_thickness_mm: float | None
    contrast_agent: str
    series_description: str
    series_number: int | None
    acquisition_number: int | None
    instance_number: int | None
    study_date: str
    study_time: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_position: str
    image_type: tuple[str, ...]
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    rescale_slope: float | None
    rescale_intercept: float | None
    rescale_type: str
    gantry_tilt_deg: float | None
    number_of_frames: int
    transfer_syntax: str


@dataclass
class IndexResult:
    """What :func:`index_folder` found.

    Attributes
    ----------
    series : list of SeriesInfo
        One per series, sorted by (patient_id, study_date, series_key).
    skipped : list of SkippedFile
        Files that are not usable images, each with its reason.
    n_files : int
        Number of files looked at.
    """

    series: list[SeriesInfo] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    n_files: int = 0

    def ct_series(self) -> list[SeriesInfo]:
        """Series that are CT images without a refusing problem."""
        return [s for s in self.series if not s.refusing_problems]


# ---------------------------------------------------------------------------------------
# Reading one header
# ---------------------------------------------------------------------------------------
#: Control characters no short text VR (CS, SH, LO, PN, UI, DA, TM) may hold (ESC is
#: allowed: ISO 2022 code extensions).  Seen when a damaged length swallows other elements.
_UID_RE = re.compile(r"[0-9.]{1,64}")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")


def _str(ds: pydicom.Dataset, keyword: str) -> str:
    v = _get(ds, keyword)
    if v is None:
        return ""
    from pydicom.multival import MultiValue

    if isinstance(v, MultiValue):
        s = "\\".join(str(x) for x in v)
    else:
        s = str(v).strip()
    s = s.rstrip("\x00 ")
    if _CONTROL_CHARS.search(s):
        # Never put the value in the message: it may hold swallowed patient data.
        raise DicomReadError(f"garbled DICOM header: {keyword} holds binary data")
    return s


#: What a patient identifier inside a free-text tag is replaced with.
REDACTED = "[redacted]"
#: Shortest name component redacted (shorter ones, "Li", would hit ordinary words).
MIN_NAME_PART = 3
#: ImageHeader fields of free text (LO/SH/CS values a person typed or a device copied):
#: identifiers found in them are redacted when the header is read.
FREE_TEXT_FIELDS = ("series_description", "manufacturer", "model", "kernel", "contrast_agent")


def _date_forms(da: str) -> list[str]:
    """A DICOM date ``YYYYMMDD`` as written in free text: DICOM, ISO and common forms."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", da.strip())
    if not m:
        return []
    y, mo, d = m.groups()
    return [
        f"{y}{mo}{d}",
        f"{y}-{mo}-{d}",
        f"{y}/{mo}/{d}",
        f"{y}.{mo}.{d}",
        f"{d}.{mo}.{y}",
        f"{d}/{mo}/{y}",
        f"{d}-{mo}-{y}",
        f"{mo}/{d}/{y}",
    ]


def identifier_pattern(name: str, patient_id: str, birth_date: str) -> re.Pattern[str] | None:
    """A case-insensitive pattern of the patient's identifiers as they appear in free text.

    Parameters
    ----------
    name : str
        PatientName (PN: ``Family^Given^Middle^Prefix^Suffix``, groups split by ``=``).
        The whole name and each component of at least :data:`MIN_NAME_PART` characters
        (split at ``^``, ``=``, blanks and punctuation) are matched anywhere.
    patient_id : str
        PatientID: matched anywhere when it has at least 3 characters, else only as a
        whole word (between non-alphanumeric characters).
    birth_date : str
        PatientBirthDate ``YYYYMMDD``: matched in the forms of :func:`_date_forms` (DICOM,
        ISO ``YYYY-MM-DD``, ``DD.MM.YYYY`` ...).

    Returns
    -------
    re.Pattern or None
        None when there is nothing to look for.
    """
    words: set[str] = set()
    name = name.strip()
    if name:
        for group in name.split("="):
            g = group.strip("^ ")
            if len(g) >= MIN_NAME_PART:
                words.add(g)
                words.add(re.sub(r"\^+", " ", g).strip())
            for part in re.split(r"[\W_]+", g):
                if len(part) >= MIN_NAME_PART:
                    words.add(part)
    pid = patient_id.strip()
    if len(pid) >= 3:
        words.add(pid)
    words.update(_date_forms(birth_date))
    alts = [re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)) if w]
    if pid and len(pid) < 3:
        alts.append(r"(?<![^\W_])" + re.escape(pid) + r"(?![^\W_])")
    if not alts:
        return None
    return re.compile("|".join(alts), re.IGNORECASE)


def redact_identifiers(text: str, pattern: re.Pattern[str] | None) -> str:
    """``text`` with every match of ``pattern`` (:func:`identifier_pattern`) replaced by
    :data:`REDACTED`."""
    if not text or pattern is None:
        return text
    return pattern.sub(REDACTED, text)


#: Numeric tags without which pixel values cannot be turned into HU or laid out: a value
#: that is present but not a finite number refuses the file (naming the tag).  Other
#: numeric tags (KVP, SliceThickness, SeriesNumber, ...) are informative: a garbled one
#: is read as missing.
_ESSENTIAL_NUMBERS = frozenset(
    {
        "Rows",
        "Columns",
        "NumberOfFrames",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
    }
)


def _get(ds: pydicom.Dataset, keyword: str) -> object:
    """``ds.get(keyword)``; a value pydicom cannot convert is a :class:`DicomReadError`
    naming the tag -- never the raw text (pydicom's message quotes it, and a damaged
    length can make it hold the patient's name)."""
    try:
        return ds.get(keyword, None)
    except Exception as exc:  # pydicom converts on access: ValueError, TypeError, ...
        log.debug("%s: %s while converting", keyword, type(exc).__name__)
        raise DicomReadError(f"garbled DICOM header: {keyword} cannot be read") from None


def _garbled_number(keyword: str) -> None:
    """Refuse a file whose essential numeric tag is garbled; informative tags are missing."""
    if keyword in _ESSENTIAL_NUMBERS:
        raise DicomReadError(f"garbled DICOM header: {keyword} is not a finite number")
    log.debug("%s is not a number; read as missing", keyword)


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    v = _get(ds, keyword)
    if v is None or v == "":
        return None
    from pydicom.multival import MultiValue

    try:
        if isinstance(v, MultiValue):
            v = v[0]
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError, OverflowError):
        _garbled_number(keyword)
        return None
    if not np.isfinite(f):
        _garbled_number(keyword)
        return None
    return f


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    f = _float(ds, keyword)
    return None if f is None else int(f)


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    """``n`` finite numbers, or None (missing or garbled: the caller names the tag)."""
    from pydicom.multival import MultiValue

    v = _get(ds, keyword)
    if v is None or not isinstance(v, MultiValue | list | tuple):
        return None
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError, OverflowError):
        return None
    if len(vals) != n or not all(np.isfinite(vals)):
        return None
    return vals


def _may_be_dicom(path: str) -> bool:
    """False when pydicom would refuse ``path`` for its preamble: no ``DICM`` at byte 128
    and not a data set without preamble (:func:`_looks_like_raw_dataset`).  True when the
    file cannot be read here (pydicom then gives the reason)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return True
    except OSError:
        return True
    return _looks_like_raw_dataset(path)


def _looks_like_raw_dataset(path: str) -> bool:
    """True when a file without preamble starts like a DICOM data set (group 0x0008 tag)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return (
        len(head) == 8
        and head[:2] == b"\x08\x00"
        and head[2:4] in (b"\x00\x00", b"\x05\x00", b"\x08\x00", b"\x16\x00", b"\x18\x00")
    )


@cache
def _header_tag_values() -> list[int]:
    """:data:`_HEADER_TAGS` as pydicom tags: pydicom converts keywords on every call, which
    was two thirds of the time spent on each non-DICOM file of a big tree."""
    from pydicom.tag import Tag

    return [Tag(k) for k in _HEADER_TAGS]


#: Read calls pydicom may make while parsing one header before the file is refused.  Real
#: headers need a few hundred (most in ../shared/real_ct: 439, an Enhanced CT); a file of
#: zeros after a valid preamble needs millions (17 s per 10 MB), so without a budget one
#: such file stalls the index.
MAX_HEADER_READS = 100_000


class _HeaderBudgetExceeded(Exception):
    """Raised by :class:`_BudgetReader` once the read budget is spent."""


class _BudgetReader(io.BufferedReader):
    """A buffered file reader that refuses more than ``budget`` read calls."""

    def __init__(self, path: str, budget: int) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.left = budget

    def read(self, size: int | None = -1) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise _HeaderBudgetExceeded
        return super().read(size)


def _dcmread_header(path: str, *, force: bool = False) -> pydicom.Dataset:
    """pydicom's header-only read of ``path`` within :data:`MAX_HEADER_READS` reads."""
    import pydicom

    with _BudgetReader(path, MAX_HEADER_READS) as fh:
        try:
            return pydicom.dcmread(
                fh, stop_before_pixels=True, specific_tags=_header_tag_values(), force=force
            )
        except Exception:
            if fh.left < 0:
                raise DicomReadError(
                    f"header still not finished after {MAX_HEADER_READS} reads (a damaged "
                    "or hostile file, e.g. zeros after the preamble); refused"
                ) from None
            raise


def read_object(
    path: str | os.PathLike[str],
    modality: str,
    error: type[Exception],
    *,
    not_a: str,
    read_as: str,
    pixels: bool = True,
) -> tuple[pydicom.Dataset, np.ndarray | None]:
    """Read a non-image DICOM object (a SEG, an RTDOSE) that must be of ``modality``.

    Any failure is one ``error`` naming the file: another modality (``"<path>: a DICOM
    CT file, not <not_a>"``) or a file pydicom cannot read or decode (``"<path>: cannot
    read as <read_as> (<exception>)"``).  pydicom's warnings are kept quiet.

    Returns
    -------
    (dataset, pixels)
        ``pixels`` is the decoded pixel array, or None with ``pixels=False`` (headers only).
    """
    import pydicom

    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(p), stop_before_pixels=not pixels)
            if ds.get("Modality") != modality:
                raise error(f"{p}: a DICOM {ds.get('Modality', '?')} file, not {not_a}")
            arr = np.asarray(ds.pixel_array) if pixels else None
    except error:
        raise
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise error(f"{p}: cannot read as {read_as} ({type(exc).__name__}: {exc})") from exc
    return ds, arr


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Read the header of one DICOM image file without touching its pixel data.

    pydicom's value-validation warnings are silenced here: they quote raw header values,
    which on a damaged file can hold the patient's name and birth date (docs/safety.md).
    See :func:`_read_header` for parameters, return value and errors.
    """
    if not _may_be_dicom(str(path)):
        # pydicom would say so too; checked first so that a tree's non-DICOM files (read
        # again on every run: only images are cached) do not import pydicom.
        raise DicomReadError("not a DICOM file (no DICM preamble)")
    from pydicom.config import disable_value_validation

    with warnings.catch_warnings(), disable_value_validation():
        warnings.simplefilter("ignore")
        try:
            return _read_header(path)
        except DicomReadError:
            raise
        except Exception as exc:  # e.g. NotImplementedError for a garbled VR on access
            # The exception text may quote header values: log it only at debug level.
            log.debug("%s: %s: %s", path, type(exc).__name__, exc)
            raise DicomReadError(
                f"garbled DICOM header ({type(exc).__name__} while reading its values)"
            ) from None


def _read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Read the header of one DICOM image file without touching its pixel data.

    Parameters
    ----------
    path : path-like
        File of any name (no extension needed).

    Returns
    -------
    ImageHeader

    Raises
    ------
    DicomReadError
        When the file is not DICOM, is a DICOMDIR, holds no image, or lacks the geometry
        a CT measurement needs; the message is the one-line reason.
    """
    from pydicom.errors import InvalidDicomError

    p = str(path)
    try:
        ds = _dcmread_header(p)
    except InvalidDicomError:
        # Old ACR-NEMA style files have no preamble but start with a group 0x0008 tag.
        if not _looks_like_raw_dataset(p):
            raise DicomReadError("not a DICOM file (no DICM preamble)") from None
        try:
            ds = _dcmread_header(p, force=True)
        except DicomReadError:
            raise
        except Exception as exc:
            log.debug("%s: %s", p, type(exc).__name__)
            raise DicomReadError(
                f"not a DICOM file ({type(exc).__name__} reading it without preamble)"
            ) from None
    except DicomReadError:
        raise
    except (OSError, EOFError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise DicomReadError(f"cannot read file: {why}") from None
    except Exception as exc:  # pydicom raises many types on garbled bytes
        # Its message may quote header bytes (a name swallowed by a damaged length):
        # the reason names the kind of failure only.
        log.debug("%s: %s while parsing", p, type(exc).__name__)
        raise DicomReadError(
            f"garbled DICOM header ({type(exc).__name__} while parsing it)"
        ) from None

    meta = getattr(ds, "file_meta", None)
    ms_class = _str(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if ms_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise DicomReadError("DICOMDIR (a directory index, not an image)")
    ts = _str(meta, "TransferSyntaxUID") if meta is not None else ""
    sop_class = _str(ds, "SOPClassUID") or ms_class
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        uid = sop_class if _UID_RE.fullmatch(sop_class) else "unknown"  # never raw text
        raise DicomReadError(f"no image in this file (SOP class {uid})")
    frames = _int(ds, "NumberOfFrames") or 1
    if rows * cols > MAX_PIXELS_PER_FRAME or rows <= 0 or cols <= 0 or frames <= 0:
        raise DicomReadError(
            f"image size {rows}x{cols}x{frames} is implausible; refused before reading pixels"
        )
    try:
        # identifiers typed into free text (a name in SeriesDescription) never leave here:
        # not into the index, the header cache or a CSV (docs/safety.md)
        ids = identifier_pattern(
            _str(ds, "PatientName"), _str(ds, "PatientID"), _str(ds, "PatientBirthDate")
        )

        def text(keyword: str) -> str:
            return redact_identifiers(_str(ds, keyword), ids)

        header = ImageHeader(
            path=p,
            sop_class_uid=sop_class,
            sop_instance_uid=_str(ds, "SOPInstanceUID")
            or (str(meta.get("MediaStorageSOPInstanceUID", "")) if meta is not None else ""),
            study_instance_uid=_str(ds, "StudyInstanceUID"),
            series_instance_uid=_str(ds, "SeriesInstanceUID"),
            frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
            modality=_str(ds, "Modality").upper(),
            manufacturer=text("Manufacturer"),
            model=text("ManufacturerModelName"),
            kvp=_float(ds, "KVP"),
            kernel=text("ConvolutionKernel"),
            slice_thickness_mm=_float(ds, "SliceThickness"),
            contrast_agent=text("ContrastBolusAgent"),
            series_description=text("SeriesDescription"),
            series_number=_int(ds, "SeriesNumber"),
            acquisition_number=_int(ds, "AcquisitionNumber"),
            instance_number=_int(ds, "InstanceNumber"),
            study_date=_str(ds, "StudyDate"),
            study_time=_str(ds, "StudyTime"),
            patient_id=_str(ds, "PatientID"),
            patient_name=_str(ds, "PatientName"),
            patient_birth_date=_str(ds, "PatientBirthDate"),
            patient_position=_str(ds, "PatientPosition"),
            image_type=tuple(x.strip().upper() for x in _str(ds, "ImageType").split("\\") if x),
            position=_floats(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
            orientation=_floats(ds, "ImageOrientationPatient", 6),  # type: ignore[arg-type]
            pixel_spacing=_floats(ds, "PixelSpacing", 2),  # type: ignore[arg-type]
            rows=rows,
            columns=cols,
            bits_allocated=_int(ds, "BitsAllocated") or 16,
            bits_stored=_int(ds, "BitsStored") or (_int(ds, "BitsAllocated") or 16),
            pixel_representation=_int(ds, "PixelRepresentation") or 0,
            rescale_slope=_float(ds, "RescaleSlope"),
            rescale_intercept=_float(ds, "RescaleIntercept"),
            rescale_type=_str(ds, "RescaleType"),
            gantry_tilt_deg=_float(ds, "GantryDetectorTilt"),
            number_of_frames=frames,
            transfer_syntax=ts,
        )
    except DicomReadError:
        raise
    except Exception as exc:  # a value pydicom cannot convert: still a one-line reason
        log.debug("%s: %s while reading values", p, type(exc).__name__)
        raise DicomReadError(
            f"garbled DICOM header ({type(exc).__name__} while reading its values)"
        ) from None
    if header.number_of_frames == 1:
        missing = [
            k
            for k, v in (
                ("ImagePositionPatient", header.position),
                ("ImageOrientationPatient", header.orientation),
                ("PixelSpacing", header.pixel_spacing),
            )
            if v is None
        ]
        if missing:
            raise DicomReadError(
                f"missing or invalid {', '.join(missing)}: the image cannot be placed in "
                "patient coordinates"
            )
        if header.pixel_spacing is not None and min(header.pixel_spacing) <= 0:
            raise DicomReadError(f"PixelSpacing {header.pixel_spacing} is not positive")
        # the tolerance of every Volume too: index and measure give one verdict
        why = orientation_problem(header.orientation)  # type: ignore[arg-type]
        if why:
            raise DicomReadError(
                f"ImageOrientationPatient {header.orientation} ({why}) is not two "
                "orthonormal vectors"
            )
    return header


# ---------------------------------------------------------------------------------------
# Walking a tree
# ---------------------------------------------------------------------------------------
def iter_files(
    root: str | os.PathLike[str], skipped: list[SkippedFile], *, follow_links: bool = False
) -> Iterator[str]:
    """Yield every regular file under ``root`` (sorted, symlink loops avoided).

    Symbolic links to files are read wherever they point.  Symbolic links to folders are
    followed when their target lies inside the tree (``root`` with links resolved); links
    to folders outside it only with ``follow_links`` -- a link to ``/usr/share`` would
    otherwise make the index read a whole system folder.  Links not followed, loops and
    unreadable folders are reported in ``skipped``, once each.
    """
    for path, _ in _iter_files_stat(root, skipped, follow_links=follow_links):
        yield path


#: Skip reason of a link to a folder outside the tree (without ``follow_links``).
LINK_OUTSIDE_REASON = (
    "symbolic link to a folder outside the scanned tree; not followed (--follow-links follows it)"
)


def _iter_files_stat(
    root: str | os.PathLike[str], skipped: list[SkippedFile], *, follow_links: bool = False
) -> Iterator[tuple[str, os.stat_result | None]]:
    """:func:`iter_files` with each file's ``os.stat`` (None when it cannot be stat-ed)."""
    root_s = str(root)
    if os.path.isfile(root_s):
        yield root_s, None
        return
    seen: set[tuple[int, int]] = set()
    root_real = os.path.realpath(root_s)

    def onerror(exc: OSError) -> None:
        skipped.append(SkippedFile(str(exc.filename), f"cannot list folder: {exc.strerror}"))

    def _inside(parent: str, child: str) -> bool:
        try:
            return os.path.commonpath([parent, child]) == parent
        except ValueError:  # different drives
            return False

    def _not_followed(dirpath: str, name: str) -> bool:
        """A folder link not to walk: one to a folder that contains the tree (``/``,
        ``..``: a loop that would otherwise walk the whole file system before it is
        noticed), and without ``follow_links`` one that leaves the tree."""
        full = os.path.join(dirpath, name)
        if not os.path.islink(full):
            return False
        target = os.path.realpath(full)
        if _inside(target, root_real):
            reason = "symbolic-link loop (links to a folder that contains the tree); not followed"
        elif not follow_links and not _inside(root_real, target):
            reason = LINK_OUTSIDE_REASON
        else:
            return False
        skipped.append(SkippedFile(full, reason))
        return True

    for dirpath, dirnames, filenames in os.walk(root_s, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a symbolic-link loop or a second link to one folder
            dirnames[:] = []
            skipped.append(SkippedFile(dirpath, "folder already visited (symbolic-link loop)"))
            continue
        seen.add(key)
        dirnames[:] = [d for d in sorted(dirnames) if not _not_followed(dirpath, d)]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                yield path, None  # dangling link, vanished file: read_header reports why
                continue
            if not stat.S_ISREG(st.st_mode):  # a named pipe would block the read forever
                skipped.append(
                    SkippedFile(path, "not a regular file (named pipe, socket or device); not read")
                )
                continue
            yield path, st


def _content_fields(h: ImageHeader) -> tuple[object, ...]:
    """The header facts that put an image without SeriesInstanceUID into its series.

    Only the file's content: never its path, so the grouping (and the key) is the same
    for any spelling or location of the folder.
    """
    ori = tuple(round(v, 4) + 0.0 for v in h.orientation) if h.orientation else None
    return (
        h.patient_id,
        h.study_instance_uid,
        h.study_date,
        h.study_time,
        h.frame_of_reference_uid,
        h.modality,
        h.series_number,
        h.series_description,
        ori,
        h.rows,
        h.columns,
    )


def content_series_key(headers: Sequence[ImageHeader]) -> str:
    """The ``series_key`` of a series whose images have no SeriesInstanceUID.

    ``"nouid-"`` + the first 16 hex digits of the SHA-1 of the repr of
    ``(content fields, members)``: the content fields of :func:`_content_fields` (patient,
    study UID/date/time, frame of reference, modality, SeriesNumber, SeriesDescription,
    orientation rounded to 1e-4, Rows, Columns) and the sorted SOPInstanceUIDs of the
    images -- or, when any of them is empty, their sorted ImagePositionPatient rounded to
    0.001 mm.  It depends on the files' content only, never on their paths.

    Parameters
    ----------
    headers : sequence of ImageHeader
        The images of one series (all with the same content fields).
    """
    if not headers:
        raise ValueError("content_series_key needs at least one header")
    sops = [h.sop_instance_uid for h in headers]
    members: tuple[object, ...]
    if all(sops):
        members = ("sop", tuple(sorted(sops)))
    else:
        members = (
            "position",
            tuple(
                sorted(
                    tuple(round(v, 3) + 0.0 for v in h.position) if h.position else ()
                    for h in headers
                )
            ),
        )
    text = repr((_content_fields(headers[0]), members))
    return "nouid-" + hashlib.sha1(text.encode()).hexdigest()[:16]


#: Files per header-cache query in :func:`index_folder`.
_INDEX_CHUNK = 512
#: :func:`index_folder` reads headers in worker processes only when at least this many
#: are not in the cache (starting the processes costs more than reading a few files).
PARALLEL_INDEX_MIN_FILES = 256


def default_index_workers() -> int:
    """Worker processes for reading headers when the caller does not say: the usable CPUs
    of this process, at most 8 (:func:`hu_roi.parallel.usable_cpus`)."""
    return usable_cpus()


def _read_headers(paths: list[str]) -> list[ImageHeader | str]:
    """:func:`read_header` of each path; a file that fails becomes its one-line reason.

    One task of a parallel index (module level and picklable for the worker processes).
    """
    out: list[ImageHeader | str] = []
    for p in paths:
        try:
            out.append(read_header(p))
        except DicomReadError as exc:
            out.append(str(exc))
        except OSError as exc:
            out.append(f"cannot read file: {exc.strerror or exc}")
    return out


def _read_missing(paths: list[str], workers: int, progress: bool) -> list[ImageHeader | str]:
    """Headers (or reasons) of ``paths``, in order; in worker processes when worth it."""
    if workers <= 1 or len(paths) < PARALLEL_INDEX_MIN_FILES:
        if not (progress and sys.stderr.isatty()):
            return _read_headers(paths)
        from tqdm import tqdm

        out: list[ImageHeader | str] = []
        for p in tqdm(paths, desc="index", unit="file", leave=False):
            out += _read_headers([p])
        return out
    # Several chunks per worker keep both busy to the end; each chunk is one pickled result.
    size = max(32, min(512, -(-len(paths) // (workers * 8))))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    done = map_tasks(_read_headers, chunks, workers=workers, progress=progress, desc="index")
    out = []
    for chunk, res in zip(chunks, done, strict=True):
        if res.ok:
            out += res.unwrap()
        else:  # the worker process died (out of memory, killed): its files are reported
            reason = (
                f"not indexed: the worker process reading it failed ({type(res.error).__name__})"
            )
            out += [reason] * len(chunk)
    return out


def index_folder(
    root: str | os.PathLike[str],
    *,
    progress: bool = False,
    cache: object | None = None,
    workers: int = 1,
    follow_links: bool = False,
) -> IndexResult:
    """Scan a DICOM tree (header only) and group its images into series.

    Parameters
    ----------
    root : path-like
        Folder (searched recursively) or a single file.
    progress : bool
        Show a tqdm progress bar on stderr (only when stderr is a terminal).
    cache : HeaderCache or None
        Optional persistent header cache (see :mod:`hu_roi.io.cache`).
    workers : int
        Local processes that read the headers not found in the cache (when there are at
        least :data:`PARALLEL_INDEX_MIN_FILES` of them); 1 reads them here.  The result
        does not depend on it.
    follow_links : bool
        Also walk symbolic links to folders outside the tree (:func:`iter_files`); by
        default they are skipped with :data:`LINK_OUTSIDE_REASON`.

    Returns
    -------
    IndexResult

    Raises
    ------
    FileNotFoundError
        When ``root`` does not exist.
    ValueError
        ``workers < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if not os.path.exists(root):
        raise FileNotFoundError(f"no such file or folder: {root}")
    result = IndexResult()
    found = list(_iter_files_stat(root, result.skipped, follow_links=follow_links))
    result.n_files = len(found)
    paths = [p for p, _ in found]
    got: list[ImageHeader | str | None] = [None] * len(found)
    if cache is not None:  # one query per chunk
        for start in range(0, len(found), _INDEX_CHUNK):
            chunk = found[start : start + _INDEX_CHUNK]
            got[start : start + len(chunk)] = cache.get_many(  # type: ignore[attr-defined]
                [p for p, _ in chunk], [st for _, st in chunk]
            )
    missing = [i for i, h in enumerate(got) if h is None]
    read = _read_missing([paths[i] for i in missing], workers, progress)
    for i, h in zip(missing, read, strict=True):
        got[i] = h
        if cache is not None and isinstance(h, ImageHeader):
            cache.put(paths[i], h)  # type: ignore[attr-defined]
    if cache is not None:
        cache.flush()  # type: ignore[attr-defined]
    headers: list[ImageHeader] = []
    for p, entry in zip(paths, got, strict=True):
        if isinstance(entry, ImageHeader):
            headers.append(entry)
        else:  # the one-line reason it could not be read
            result.skipped.append(SkippedFile(p, str(entry)))
    result.series = group_series(headers, result.skipped)
    return result


def group_series(headers: list[ImageHeader], skipped: list[SkippedFile]) -> list[SeriesInfo]:
    """Group image headers into series and describe each (see module docstring)."""
    groups: dict[object, list[ImageHeader]] = defaultdict(list)
    seen_sop: dict[str, str] = {}
    for h in headers:
        if h.sop_instance_uid:
            first = seen_sop.get(h.sop_instance_uid)
            if first is not None:
                skipped.append(
                    SkippedFile(h.path, f"duplicate SOPInstanceUID (same as {first}); ignored")
                )
                continue
            seen_sop[h.sop_instance_uid] = h.path
        # without a UID: by content, never by folder (a copy of a series in two folders of
        # the tree is one series with duplicate positions, as with a duplicated UID)
        group = h.series_instance_uid or ("nouid", _content_fields(h))
        groups[group].append(h)
    series = [
        _describe(g if isinstance(g, str) else content_series_key(hs), hs)
        for g, hs in groups.items()
    ]
    series.sort(key=lambda s: (s.patient_id, s.study_date, s.study_time, s.series_key))
    return series


def _common(values: list[object]) -> object:
    """The most common value (first seen on ties)."""
    counts: dict[object, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda k: counts[k])


def _describe(key: str, hs: list[ImageHeader]) -> SeriesInfo:
    problems: list[str] = []
    first = hs[0]
    if not first.series_instance_uid:
        problems.append("empty-uid")
    is_ct_class = first.sop_class_uid in ("", CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE)
    if (
        first.modality != "CT"
        or not is_ct_class
        or NON_HU_IMAGE_TYPES.intersection(first.image_type)
    ):
        problems.append("not-ct")
    if any("LOCALIZER" in h.image_type for h in hs):
        problems.append("localizer")
    if any(h.number_of_frames > 1 for h in hs) or first.sop_class_uid == ENHANCED_CT_IMAGE_STORAGE:
        problems.append("multiframe")
    if any(h.rescale_slope is None or h.rescale_intercept is None for h in hs):
        problems.append("no-rescale")

    placed = [h for h in hs if h.orientation is not None and h.position is not None]
    orientation = _common([h.orientation for h in placed]) if placed else (1, 0, 0, 0, 1, 0)
    ori_arr = np.asarray(orientation, dtype=float)
    if placed:
        all_ori = np.array([h.orientation for h in placed], dtype=float)
        if np.max(np.abs(all_ori - ori_arr)) > 1e-4:
            problems.append("mixed-orientation")
    sizes = {(h.rows, h.columns, h.pixel_spacing) for h in hs}
    if len(sizes) > 1:
        problems.append("mixed-size")

    x, y = ori_arr[:3], ori_arr[3:]
    normal = np.cross(x, y)
    normal /= np.linalg.norm(normal)
    # Sort by position along the normal; the path breaks ties so the order is stable.
    along_placed = (
        np.array([h.position for h in placed], dtype=float) @ normal if placed else np.zeros(0)
    )
    order = [
        placed[i]
        for i in sorted(range(len(placed)), key=lambda i: (along_placed[i], placed[i].path))
    ]
    # Multi-frame files without top-level IPP go last.  Identity, not ==: comparing frozen
    # dataclasses field by field made this quadratic in the number of slices.
    placed_ids = {id(h) for h in placed}
    order += [h for h in hs if id(h) not in placed_ids]
    spacing = float("nan")
    if len(placed) >= 2:
        pos = np.array([h.position for h in order if h.position is not None], dtype=float)
        along = pos @ normal
        steps = np.diff(along)
        nonzero = steps[steps > DUPLICATE_TOL_MM]
        if np.any(steps <= DUPLICATE_TOL_MM):
            problems.append("duplicate-positions")
        if nonzero.size:
            # np.median's first call imports numpy.ma (~35 ms); the same value directly
            srt = np.sort(nonzero)
            spacing = float((srt[(srt.size - 1) // 2] + srt[srt.size // 2]) / 2)
            if np.any(nonzero > GAP_FACTOR * spacing):
                problems.append("missing-slices")
            elif np.any(np.abs(nonzero - spacing) > max(UNIFORM_TOL * spacing, 0.01)):
                problems.append("non-uniform-spacing")
            # Stacking direction: from the first to the last distinct position.
            stack = pos[-1] - pos[0]
            if np.linalg.norm(stack) > 0:
                cosang = abs(float(stack @ normal)) / float(np.linalg.norm(stack))
                tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
                if tilt > TILT_TOL_DEG:
                    problems.append("gantry-tilt")
    elif len(placed) == 1 and first.number_of_frames == 1:
        problems.append("single-slice")
    if first.gantry_tilt_deg and abs(first.gantry_tilt_deg) > TILT_TOL_DEG:
        if "gantry-tilt" not in problems and len(placed) >= 2:
            problems.append("gantry-tilt")

    slices = tuple(
        SliceRef(
            path=h.path,
            position_lps_mm=tuple(h.position) if h.position else (np.nan, np.nan, np.nan),  # type: ignore[arg-type]
            sop_instance_uid=h.sop_instance_uid,
            instance_number=h.instance_number,
        )
        for h in order
    )
    ps = first.pixel_spacing or (float("nan"), float("nan"))
    folders = {os.path.dirname(h.path) for h in hs}
    folder = os.path.commonpath(list(folders)) if folders else ""
    # Problem order follows PROBLEM_CODES so outputs are stable.
    found = set(problems)
    ordered = tuple(code for code in PROBLEM_CODES if code in found)
    return SeriesInfo(
        series_key=key,
        series_instance_uid=first.series_instance_uid,
        study_instance_uid=first.study_instance_uid,
        patient_id=first.patient_id,
        study_date=first.study_date,
        study_time=first.study_time,
        modality=first.modality,
        manufacturer=first.manufacturer,
        model=first.model,
        kvp=first.kvp,
        kernel=first.kernel,
        slice_thickness_mm=first.slice_thickness_mm,
        contrast_agent=first.contrast_agent,
        series_description=first.series_description,
        series_number=first.series_number,
        acquisition_number=first.acquisition_number,
        frame_of_reference_uid=first.frame_of_reference_uid,
        rows=first.rows,
        columns=first.columns,
        pixel_spacing_mm=(float(ps[0]), float(ps[1])),
        orientation=tuple(float(v) for v in ori_arr),  # type: ignore[arg-type]
        slice_spacing_mm=spacing,
        slices=slices,
        transfer_syntax=first.transfer_syntax,
        rescale_slope=first.rescale_slope,
        rescale_intercept=first.rescale_intercept,
        rescale_type=first.rescale_type,
        bits_stored=first.bits_stored,
        pixel_representation=first.pixel_representation,
        image_type=first.image_type,
        patient_position=first.patient_position,
        folder=folder,
        problems=ordered,
        gantry_tilt_deg=first.gantry_tilt_deg,
        number_of_frames=max(h.number_of_frames for h in hs),
        patient_name=first.patient_name,
        patient_birth_date=first.patient_birth_date,
    )
