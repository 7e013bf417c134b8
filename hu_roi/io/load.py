"""Loading HU volumes (all slices or only some) of an indexed series, fast.

The first of these paths that applies is taken, file by file:

*Native fast path* (uncompressed little- or big-endian, explicit or implicit VR, 16 bits
allocated, one sample per pixel): a small header walker (:func:`read_pixel_header`) finds
the rescale values and the byte offset of Pixel Data, and the stored values are read with
one ``readinto`` straight into the slice of the preallocated output array.  Unused high
bits are masked / sign-extended exactly like pydicom (shift left then right in the stored
dtype), the range of the slice is checked, and the rescale is applied in place with
modular 16-bit arithmetic, which is exact whenever the HU values fit int16 (checked
before).  No per-slice or whole-volume temporaries beyond the output.

*Direct compressed paths* (single-frame 16-bit monochrome RLE Lossless, JPEG-LS, JPEG
lossless): the fragments are read with the same walker and given to the decoder pydicom
would use (pylibjpeg-rle, pyjpegls/CharLS, GDCM) directly, then finished like the native
path with pydicom's corrections (pydicom's Dataset and decode-runner machinery cost as
much as the decoding itself).

*Compressed path* (JPEG 2000, other JPEG, anything the direct paths skip): pydicom decodes each file
with the plugin that is fastest for its transfer syntax (:data:`DECODING_PLUGINS`).  The
decoders hold the GIL, so long series are decoded in worker processes (JPEG 2000, JPEG-LS,
JPEG lossless; :data:`PROCESS_DECODING`, :func:`min_slices_per_process`), chunk by chunk,
each chunk copied into the output.

*Fallback* (anything unusual: 8/32-bit pixels, colour, deflate, Modality LUT sequence, a
header the walker does not understand): pydicom's ``pixel_array``, one slice at a time.

The output is int16 when every slice's rescale is integral and the HU fit in int16,
float32 otherwise (float32 values equal ``float32(stored * slope + intercept)`` computed
in float64, i.e. pydicom's ``apply_modality_lut`` cast to float32).

Every path refuses (:class:`~hu_roi.errors.DicomReadError`, which ``measure`` turns into a
``fail`` row with the reason) what would give silently wrong HU:

* pixel data that do not fit the header: uncompressed Pixel Data whose length is not
  Rows × Columns × SamplesPerPixel × BitsAllocated/8 (× NumberOfFrames), apart from the one
  padding byte of an odd length; a JPEG / JPEG-LS / JPEG 2000 stream whose own frame header
  gives another size; RLE segments that do not decode to Rows × Columns bytes.  This is
  arithmetic on lengths and headers, except RLE, whose segment lengths are only known by
  decoding them (which the RLE path does anyway);
* a RescaleSlope of 0, a non-finite slope or intercept, and a rescale whose HU (over the
  stored value range) would not be finite in float32 -- checked on every slice read.

The decoders' own messages (GDCM and libjpeg write to file descriptor 2, pydicom warns)
are captured and logged at debug level (:func:`_quiet`): the refusal carries the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import multiprocessing as mp
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from hu_roi.errors import DicomReadError, SeriesProblemError
from hu_roi.parallel import ignore_sigint, stop_workers, usable_cpus
from hu_roi.series import PROBLEM_CODES, SeriesInfo
from hu_roi.volume import Volume

# pydicom and the optional decoders (GDCM, CharLS, pylibjpeg-rle) are imported when a file
# needs them, not with this module: ``import pydicom`` alone loads every pixel decoder it
# knows (~0.3 s), which an uncompressed series read by the native path never uses.

log = logging.getLogger(__name__)

#: Refused even when accepted: hu-roi cannot place their frames correctly (yet).
NEVER_LOADABLE = frozenset({"multiframe", "not-ct", "mixed-size"})

#: Largest volume (bytes of the HU array) a load allocates unless told otherwise.
DEFAULT_MAX_BYTES = 8 * 1024**3

#: pydicom decoding plugin preferred for each compressed transfer syntax (fastest measured
#: on CT, see docs/performance.md; GDCM for JPEG lossless when python-gdcm is installed).
#: Syntaxes not listed use pydicom's default order; a plugin that is missing or fails falls
#: back to pydicom's default order.  The GDCM entries are set the first time a JPEG
#: lossless file is read (GDCM is imported then); :func:`decoding_plugin` gives the plugin
#: of a syntax with that check done.
DECODING_PLUGINS: dict[str, str] = {
    "1.2.840.10008.1.2.5": "pylibjpeg",  # RLE Lossless (pylibjpeg-rle)
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg",  # JPEG 2000 Lossless (openjpeg)
    "1.2.840.10008.1.2.4.91": "pylibjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.57": "pylibjpeg",  # JPEG Lossless P14 (pylibjpeg-libjpeg)
    "1.2.840.10008.1.2.4.70": "pylibjpeg",  # JPEG Lossless P14 SV1
}


@functools.cache
def _gdcm_available() -> bool:
    """Whether python-gdcm imports (imported on the first JPEG lossless file: ~0.1 s)."""
    try:
        import gdcm  # noqa: F401
    except ImportError:
        return False
    # GDCM decodes JPEG lossless about twice as fast as pylibjpeg-libjpeg (8-11 vs 22 ms
    # per 512² slice, measured); it is optional (pip install python-gdcm).
    DECODING_PLUGINS["1.2.840.10008.1.2.4.57"] = "gdcm"
    DECODING_PLUGINS["1.2.840.10008.1.2.4.70"] = "gdcm"
    return True


def decoding_plugin(transfer_syntax: str) -> str:
    """The pydicom decoding plugin hu-roi uses for ``transfer_syntax`` ("" for pydicom's
    default order): :data:`DECODING_PLUGINS`, after checking for GDCM if it matters."""
    if transfer_syntax in _JPEG_LOSSLESS:
        _gdcm_available()
    return DECODING_PLUGINS.get(transfer_syntax, "")


def __getattr__(name: str) -> bool:
    """``_GDCM_AVAILABLE``, ``_JLS_AVAILABLE``, ``_RLE_AVAILABLE``: whether each optional
    decoder imports, checked (and imported) on first use."""
    check = {
        "_GDCM_AVAILABLE": _gdcm_available,
        "_JLS_AVAILABLE": _jls_available,
        "_RLE_AVAILABLE": _rle_available,
    }.get(name)
    if check is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return check()


_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_RLE = "1.2.840.10008.1.2.5"
_JPEG_LOSSLESS = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
_JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
_NATIVE = frozenset({_IMPLICIT_LE, _EXPLICIT_LE, _EXPLICIT_BE})
#: Compressed syntaxes whose decoders release the GIL, decoded in threads.  Empty: with
#: pydicom's plugins none of the JPEG decoders gave a speed-up in threads (measured: JPEG
#: 2000 via pylibjpeg-openjpeg 2.5 s with one thread, 2.8 s with two, 1.55 s with two
#: processes, for 60 slices of 512²).
GIL_FREE_DECODING: frozenset[str] = frozenset()
#: Syntaxes whose decoders hold the GIL and are slow enough (~10-40 ms per 512² slice)
#: that worker processes pay off for long series.  RLE is not here: its direct decoding
#: costs ~2 ms per slice, less than shipping the slice back from a process.
PROCESS_DECODING = frozenset(
    {
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless P14
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless P14 SV1
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
    }
)
#: Fewest slices per worker process that justify starting processes.
MIN_SLICES_PER_PROCESS = 8


def min_slices_per_process(transfer_syntax: str) -> int:
    """Fewest slices per worker process for which ``load_series`` uses processes.

    The same for every syntax in :data:`PROCESS_DECODING` (measured on an idle 2-core
    machine, 60 slices of 512², 2 processes vs 1: JPEG lossless 0.32 vs 0.45 s, JPEG-LS
    0.39 vs 0.48 s, JPEG 2000 1.55 vs 2.5 s); on a machine whose cores are busy with
    other work the processes gain nothing.
    """
    return MIN_SLICES_PER_PROCESS


_INT16 = np.iinfo(np.int16)
_UNDEFINED = 0xFFFFFFFF
_EXTRA_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_PIXEL_DATA = 0x7FE00010
_WANTED = {
    0x00080018: "sop_instance_uid",
    0x00280002: "samples_per_pixel",
    0x00280004: "photometric_interpretation",
    0x00280008: "number_of_frames",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
    0x00280101: "bits_stored",
    0x00280103: "pixel_representation",
    0x00280120: "pixel_padding_value",
    0x00281052: "rescale_intercept",
    0x00281053: "rescale_slope",
    0x00283000: "modality_lut_sequence",
}
_HEAD_BYTES = 16384
_STRUCTS = {
    e: (struct.Struct(e + "HH"), struct.Struct(e + "H"), struct.Struct(e + "I")) for e in "<>"
}


class _Unusual(ValueError):
    """The header walker met something it does not handle: use pydicom instead."""


class _NeedMore(Exception):
    """The header continues beyond the bytes read so far."""


@dataclass(frozen=True)
class PixelHeader:
    """What the loader needs from one image file, found by :func:`read_pixel_header`.

    Attributes
    ----------
    transfer_syntax : str
        TransferSyntaxUID of the file.
    rows, columns : int
        Image size (pixels).
    bits_allocated, bits_stored, pixel_representation, samples_per_pixel, number_of_frames : int
        Pixel description (defaults 16, BitsAllocated, 0, 1, 1 when absent).
    rescale_slope, rescale_intercept : float
        Rescale values (1 and 0 when absent or empty; a slope of 0 stays 0 and is refused
        by the loader).
    pixel_padding_value : int or None
        PixelPaddingValue (stored value, not HU).
    has_modality_lut : bool
        A ModalityLUTSequence is present (the fast path then steps aside).
    pixel_offset : int
        Byte offset of the Pixel Data value in the file.
    pixel_length : int
        Length of the Pixel Data value in bytes (``0xFFFFFFFF``: encapsulated).
    photometric_interpretation : str
        PhotometricInterpretation (MONOCHROME2 when absent).
    sop_instance_uid : str
        SOPInstanceUID, else MediaStorageSOPInstanceUID ("" when neither is there); checked
        against the index's header so a file swapped since indexing is not read.
    """

    transfer_syntax: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples_per_pixel: int
    number_of_frames: int
    rescale_slope: float
    rescale_intercept: float
    pixel_padding_value: int | None
    has_modality_lut: bool
    pixel_offset: int
    pixel_length: int
    photometric_interpretation: str = "MONOCHROME2"
    sop_instance_uid: str = ""


# ---------------------------------------------------------------------------------------
# A small DICOM header walker (top-level elements only, sequences skipped)
# ---------------------------------------------------------------------------------------
def _need(buf: bytes, end: int) -> None:
    if end > len(buf):
        raise _NeedMore


def _skip_sequence(buf: bytes, pos: int, explicit: bool, e: str) -> int:
    """Skip an undefined-length sequence whose first item starts at ``pos``."""
    fmt = e + "HHI"
    while True:
        _need(buf, pos + 8)
        g, el, ln = struct.unpack_from(fmt, buf, pos)
        pos += 8
        if g != 0xFFFE:
            raise _Unusual(f"expected an item tag at byte {pos - 8}, got ({g:04X},{el:04X})")
        if el == 0xE0DD:  # sequence delimitation item
            return pos
        if el != 0xE000:
            raise _Unusual(f"unexpected delimiter (FFFE,{el:04X}) in a sequence")
        if ln != _UNDEFINED:
            pos += ln
            continue
        pos = _skip_item(buf, pos, explicit, e)


def _skip_item(buf: bytes, pos: int, explicit: bool, e: str) -> int:
    """Skip the elements of an undefined-length item up to its delimitation item."""
    while True:
        _need(buf, pos + 8)
        g, el = struct.unpack_from(e + "HH", buf, pos)
        if g == 0xFFFE:
            if el == 0xE00D:
                return pos + 8
            raise _Unusual(f"unexpected (FFFE,{el:04X}) inside an item")
        pos, _, _, _ = _element(buf, pos, explicit, e)


def _element(buf: bytes, pos: int, explicit: bool, e: str) -> tuple[int, int, int, bytes]:
    """Parse the element at ``pos``; return (next pos, tag, value offset, VR)."""
    if explicit:
        _need(buf, pos + 8)
        g, el = struct.unpack_from(e + "HH", buf, pos)
        vr = bytes(buf[pos + 4 : pos + 6])
        if vr in _EXTRA_LENGTH_VRS:
            _need(buf, pos + 12)
            (ln,) = struct.unpack_from(e + "I", buf, pos + 8)
            start = pos + 12
        else:
            (ln,) = struct.unpack_from(e + "H", buf, pos + 6)
            start = pos + 8
    else:
        _need(buf, pos + 8)
        g, el, ln = struct.unpack_from(e + "HHI", buf, pos)
        vr = b""
        start = pos + 8
    tag = (g << 16) | el
    if tag == _PIXEL_DATA:
        return start, tag, start, vr
    if ln == _UNDEFINED:
        if explicit and vr == b"UN":
            # Undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2).
            return _skip_sequence(buf, start, False, "<"), tag, start, vr
        if not explicit or vr == b"SQ":
            return _skip_sequence(buf, start, explicit, e), tag, start, vr
        raise _Unusual(f"undefined length for VR {vr!r} at byte {pos}")
    return start + ln, tag, start, vr


def _walk(buf: bytes) -> tuple[str, dict[str, Any], int, int]:
    """Walk file meta and top-level elements up to Pixel Data.

    Returns (transfer syntax, wanted values, pixel value offset, pixel length).  Raises
    :class:`_NeedMore` when ``buf`` ends first, :class:`_Unusual` for what it cannot read.
    """
    if len(buf) < 132:
        raise _NeedMore
    if buf[128:132] != b"DICM":
        raise _Unusual("no DICM preamble")
    pos = 132
    ts = ""
    media_uid = ""  # MediaStorageSOPInstanceUID: the SOP Instance UID when 0008,0018 is absent
    while True:  # file meta: explicit VR little endian, group 0002
        _need(buf, pos + 8)
        (g,) = struct.unpack_from("<H", buf, pos)
        if g != 0x0002:
            break
        nxt, tag, start, _ = _element(buf, pos, True, "<")
        if tag in (0x00020010, 0x00020003):
            _need(buf, nxt)
            text = bytes(buf[start:nxt]).decode("ascii", "replace").strip("\0 ")
            if tag == 0x00020010:
                ts = text
            else:
                media_uid = text
        pos = nxt
    if (
        ts not in _NATIVE
        and not ts.startswith("1.2.840.10008.1.2.4")
        and ts != ("1.2.840.10008.1.2.5")
    ):
        raise _Unusual(f"transfer syntax {ts!r} not handled by the walker")
    explicit = ts != _IMPLICIT_LE
    e = ">" if ts == _EXPLICIT_BE else "<"
    values: dict[str, Any] = {"media_sop_instance_uid": media_uid}
    hh, h2, i4 = _STRUCTS[e]
    wanted = _WANTED
    extra = _EXTRA_LENGTH_VRS
    n = len(buf)
    while True:  # inlined _element for speed: this loop runs ~60 times per file
        g, el = hh.unpack_from(buf, pos)
        if explicit:
            vr = buf[pos + 4 : pos + 6]
            if vr in extra:
                (ln,) = i4.unpack_from(buf, pos + 8)
                start = pos + 12
            else:
                (ln,) = h2.unpack_from(buf, pos + 6)
                start = pos + 8
        else:
            vr = b""
            (ln,) = i4.unpack_from(buf, pos + 4)
            start = pos + 8
        tag = (g << 16) | el
        if tag == _PIXEL_DATA:
            if explicit and vr not in extra:
                raise _Unusual(f"Pixel Data with VR {vr!r}")
            return ts, values, start, ln
        if ln == _UNDEFINED:
            nxt, _, _, _ = _element(buf, pos, explicit, e)
        else:
            nxt = start + ln
        name = wanted.get(tag)
        if name is not None:
            if nxt > n:
                raise _NeedMore
            values[name] = _value(buf[start:nxt], name, vr, e, values)
        elif tag > _PIXEL_DATA:
            raise _Unusual("element after Pixel Data position without Pixel Data")
        pos = nxt


def _value(raw: bytes, name: str, vr: bytes, e: str, values: dict[str, Any]) -> object:
    if name == "modality_lut_sequence":
        return True
    if name in ("photometric_interpretation", "sop_instance_uid"):
        return raw.decode("ascii", "replace").strip("\0 ")
    if name in ("rescale_slope", "rescale_intercept", "number_of_frames"):
        s = raw.decode("ascii", "replace").strip("\0 ")
        if "\\" in s:
            raise _Unusual(f"multi-valued {name}: {s!r}")
        if not s:
            return None
        try:
            val = float(s) if name != "number_of_frames" else int(s)
        except ValueError:
            raise _Unusual(f"{name} {s!r} is not a number") from None
        if not np.isfinite(val):
            raise _Unusual(f"{name} {s!r} is not finite")
        return val
    if len(raw) != 2:
        raise _Unusual(f"{name} has {len(raw)} bytes, expected 2")
    if name == "pixel_padding_value":
        signed = vr == b"SS" or (vr == b"" and values.get("pixel_representation") == 1)
        return struct.unpack(e + ("h" if signed else "H"), raw)[0]
    return struct.unpack(e + "H", raw)[0]


def read_pixel_header(path: str | os.PathLike[str]) -> PixelHeader:
    """Read what the loader needs from one file's header, without pydicom.

    Parameters
    ----------
    path : path-like
        A DICOM Part 10 file (with the 128-byte preamble and ``DICM``).

    Returns
    -------
    PixelHeader

    Raises
    ------
    ValueError
        The header holds something this small walker does not handle (the loader then
        reads the file with pydicom).
    OSError
        The file cannot be read.
    """
    with open(path, "rb", buffering=0) as fh:
        return _read_pixel_header(fh)


def _read_pixel_header(fh: object) -> PixelHeader:
    size = os.fstat(fh.fileno()).st_size  # type: ignore[attr-defined]
    want = min(size, _HEAD_BYTES)
    buf = fh.read(want)  # type: ignore[attr-defined]
    while True:
        try:
            ts, v, off, ln = _walk(buf)
            break
        except (_NeedMore, struct.error):
            # struct.error: an unpack ran past the bytes read so far.
            if len(buf) >= size:
                raise _Unusual("header ends before a Pixel Data element") from None
            buf += fh.read(max(len(buf), _HEAD_BYTES))  # type: ignore[attr-defined]
        except (IndexError, RecursionError) as exc:  # RecursionError: absurdly nested SQs
            raise _Unusual(f"header walker failed: {type(exc).__name__}") from None
    ba = int(v.get("bits_allocated") or 16)
    slope = v.get("rescale_slope")
    inter = v.get("rescale_intercept")
    return PixelHeader(
        transfer_syntax=ts,
        rows=int(v.get("rows") or 0),
        columns=int(v.get("columns") or 0),
        bits_allocated=ba,
        bits_stored=int(v.get("bits_stored") or ba),
        pixel_representation=int(v.get("pixel_representation") or 0),
        samples_per_pixel=int(v.get("samples_per_pixel") or 1),
        number_of_frames=int(v.get("number_of_frames") or 1),
        # ``is None``, not ``or``: a slope of 0 must reach the check, not become 1.
        rescale_slope=1.0 if slope is None else float(slope),
        rescale_intercept=0.0 if inter is None else float(inter),
        pixel_padding_value=v.get("pixel_padding_value"),
        has_modality_lut=bool(v.get("modality_lut_sequence", False)),
        pixel_offset=off,
        pixel_length=ln,
        photometric_interpretation=str(v.get("photometric_interpretation") or "MONOCHROME2"),
        sop_instance_uid=str(v.get("sop_instance_uid") or v.get("media_sop_instance_uid") or ""),
    )


# ---------------------------------------------------------------------------------------
# Public helpers (unchanged API)
# ---------------------------------------------------------------------------------------
def _is_int(v: float) -> bool:
    return float(v).is_integer()


def slice_indices_at(info: SeriesInfo, positions_mm: Iterable[float]) -> list[int]:
    """Indices of the slices nearest to positions along the series' slice normal.

    Parameters
    ----------
    info : SeriesInfo
    positions_mm : iterable of float
        Positions along ``info.normal`` (mm), i.e. ``point_lps @ info.normal``.

    Returns
    -------
    list of int
        Sorted unique indices into ``info.slices``.
    """
    along = info.positions_along_normal_mm
    return sorted({int(np.argmin(np.abs(along - p))) for p in positions_mm})


def check_loadable(info: SeriesInfo, accept: Iterable[str] = ()) -> None:
    """Raise :class:`SeriesProblemError` when the series must not be measured.

    Parameters
    ----------
    info : SeriesInfo
    accept : iterable of str
        Problem codes the caller explicitly accepts (e.g. ``("gantry-tilt",)``).
    """
    accepted = set(accept)
    unknown = accepted - set(PROBLEM_CODES)
    if unknown:
        raise ValueError(
            f"unknown problem code(s) {sorted(unknown)}; known: {', '.join(PROBLEM_CODES)}"
        )
    never = [p for p in info.problems if p in NEVER_LOADABLE]
    if never:
        raise SeriesProblemError(
            f"series {info.series_key} cannot be loaded: "
            + "; ".join(f"{p} ({PROBLEM_CODES[p]})" for p in never),
            tuple(never),
        )
    refused = [p for p in info.refusing_problems if p not in accepted]
    if refused:
        raise SeriesProblemError(
            f"series {info.series_key} refused: "
            + "; ".join(f"{p} ({PROBLEM_CODES[p]})" for p in refused)
            + f". To load it anyway, accept {','.join(refused)} explicitly "
            "(load_series(..., accept=...) or --accept).",
            tuple(refused),
        )


# ---------------------------------------------------------------------------------------
# Checks shared by every read path: pixel data that fit the header, a usable rescale
# ---------------------------------------------------------------------------------------
#: Largest finite float32: HU beyond it would be stored as infinity.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: JPEG start-of-frame markers (ITU-T T.81 B.1.1.3) plus JPEG-LS SOF55 (0xF7).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)
#: Transfer syntaxes whose stream is a JPEG (T.81) or JPEG-LS (T.87) codestream.
_JPEG_FAMILY = frozenset(
    {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", *_JPEG_LOSSLESS, *_JPEG_LS}
)
#: Transfer syntaxes whose stream is a JPEG 2000 codestream (incl. HTJ2K).
_J2K_FAMILY = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)


def _native_length_problem(
    length: int,
    rows: int,
    cols: int,
    samples: int,
    bits_allocated: int,
    frames: int = 1,
    photometric: str = "",
) -> str | None:
    """Why ``length`` bytes of uncompressed Pixel Data do not fit the header, or None.

    The length must be Rows × Columns × SamplesPerPixel × BitsAllocated/8 × NumberOfFrames
    (bits packed for BitsAllocated 1; two samples per pixel for YBR_FULL_422), plus at
    most the one padding byte that makes an odd length even (PS3.5 8.1.1).  Longer data
    is not padding but a header that does not describe the stored image (a wrong Columns
    reads every row with the wrong stride).
    """
    per_pixel = 2 if photometric == "YBR_FULL_422" else samples
    expected = math.ceil(rows * cols * per_pixel * bits_allocated * frames / 8)
    if length == expected or (expected % 2 == 1 and length == expected + 1):
        return None
    frames_txt = f" x {frames} frames" if frames != 1 else ""
    return (
        f"Pixel Data holds {length} bytes, but Rows x Columns x SamplesPerPixel x "
        f"BitsAllocated/8 = {rows} x {cols} x {samples} x {bits_allocated}/8{frames_txt} "
        f"gives {expected}; the header does not describe the stored image "
        "(wrong Rows, Columns or BitsAllocated)"
    )


def _jpeg_frame_size(src: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) of a JPEG / JPEG-LS stream's frame header, or None.

    Walks the marker segments from SOI to the first SOF (a few dozen bytes); ``rows`` is 0
    when the stream defines it later (DNL marker).
    """
    n = len(src)
    if src[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= n:
        if src[pos] != 0xFF:
            return None
        m = src[pos + 1]
        if m == 0xFF:  # fill byte
            pos += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            pos += 2
            continue
        if m in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if m in _SOF_MARKERS:
            if pos + 10 > n:
                return None
            _, y, x, nf = struct.unpack_from(">BHHB", src, pos + 4)
            return int(y), int(x), int(nf)
        (ln,) = struct.unpack_from(">H", src, pos + 2)
        pos += 2 + ln
    return None


def _j2k_frame_size(src: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) of a JPEG 2000 codestream's SIZ segment, or None."""
    at = src.find(b"\xff\x4f\xff\x51", 0, 4096)  # SOC then SIZ (a JP2 wrapper may precede)
    if at < 0 or at + 42 > len(src):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", src, at + 8)
    (csiz,) = struct.unpack_from(">H", src, at + 40)
    return int(ysiz - yosiz), int(xsiz - xosiz), int(csiz)


def _check_frame_header(
    path: str, transfer_syntax: str, src: bytes, rows: int, cols: int, samples: int
) -> None:
    """Refuse a JPEG / JPEG-LS / JPEG 2000 frame whose own size differs from the header.

    Checked before decoding: decoders either trust Rows/Columns (and return a wrongly
    strided or transposed image of the right byte count) or crash the process on a
    mismatch (GDCM aborts on a JPEG-LS frame larger than Rows × Columns).
    """
    if transfer_syntax in _JPEG_FAMILY:
        size = _jpeg_frame_size(src)
    elif transfer_syntax in _J2K_FAMILY:
        size = _j2k_frame_size(src)
    else:
        return
    if size is None:
        log.debug("%s: no frame header found in the compressed stream", path)
        return
    y, x, nc = size
    if (y not in (0, rows)) or x != cols or nc != samples:
        raise DicomReadError(
            f"{path}: cannot read pixel data: the compressed image is {y}x{x} pixels with "
            f"{nc} component(s), but the header says Rows {rows}, Columns {cols}, "
            f"SamplesPerPixel {samples}; the header does not describe the stored image"
        )


def _decode_rle_segment(seg: bytes) -> bytes:
    """One PackBits-decoded RLE segment (pylibjpeg-rle, else pydicom's pure-Python decoder)."""
    if _rle_available():
        from rle.rle import decode_segment

        return bytes(decode_segment(seg))
    from pydicom.pixels.decoders.rle import _rle_decode_segment

    return bytes(_rle_decode_segment(seg))


def _rle_segments(path: str, src: bytes, rows: int, cols: int, n_segments: int) -> list[bytes]:
    """The decoded segments of one RLE frame, each checked to hold Rows × Columns bytes.

    Decoded one by one because a whole-frame decoder cannot be trusted with a frame that
    does not fit the header: pylibjpeg-rle's ``decode_frame`` silently cuts segments that
    decode to more than Rows × Columns bytes, or panics (measured with pylibjpeg-rle 2.2).
    One padding byte is allowed when Rows × Columns is odd.
    """
    n_px = rows * cols
    if len(src) < 64:
        raise DicomReadError(f"{path}: cannot read pixel data: RLE frame shorter than its header")
    count, *offsets = struct.unpack_from("<16I", src, 0)
    if count != n_segments:
        raise DicomReadError(
            f"{path}: cannot read pixel data: the RLE frame has {count} segment(s), the "
            f"header (BitsAllocated, SamplesPerPixel) needs {n_segments}"
        )
    starts = list(offsets[:count])
    ends = [*starts[1:], len(src)]
    segs = []
    for a, b in zip(starts, ends, strict=True):
        if not 64 <= a < b <= len(src):
            raise DicomReadError(
                f"{path}: cannot read pixel data: bad RLE segment offsets {starts}"
            )
        try:
            seg = _decode_rle_segment(src[a:b])
        except Exception as exc:
            raise DicomReadError(f"{path}: cannot decode pixel data ({_one_line(exc)})") from None
        if len(seg) != n_px and not (n_px % 2 == 1 and len(seg) == n_px + 1):
            raise DicomReadError(
                f"{path}: cannot read pixel data: an RLE segment decodes to {len(seg)} "
                f"bytes, but Rows x Columns = {rows} x {cols} = {n_px}; the header does "
                "not describe the stored image"
            )
        segs.append(seg[:n_px])
    return segs


def _stored_range(bits_stored: int, pixel_representation: int) -> tuple[int, int]:
    """Range of stored values of ``bits_stored`` bits (signed when representation is 1)."""
    bits = bits_stored if 0 < bits_stored <= 64 else 16
    if pixel_representation == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _check_rescale(path: str, slope: float, inter: float, lo: float, hi: float) -> None:
    """Refuse a rescale that cannot give finite, meaningful HU for stored values lo..hi.

    Checked on every slice read (a slope of 0 or 1e300 on one slice of an otherwise good
    series must not become HU).  Slopes that are merely unusual (negative, > 10) load; the
    measurement flags them.
    """
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise DicomReadError(
            f"{path}: RescaleSlope {slope:g} / RescaleIntercept {inter:g} is not finite; "
            "stored values cannot be mapped to HU (damaged header)"
        )
    if slope == 0:
        raise DicomReadError(
            f"{path}: RescaleSlope is 0, which maps every pixel to the intercept "
            f"({inter:g} HU); stored values cannot be mapped to HU (damaged header)"
        )
    ext = max(abs(lo * slope + inter), abs(hi * slope + inter))
    if not ext < _FLOAT32_MAX:
        raise DicomReadError(
            f"{path}: RescaleSlope {slope:g} / RescaleIntercept {inter:g} give HU up to "
            f"{ext:.3g} for stored values {lo}..{hi}, beyond the float32 range (3.4e38); "
            "stored values cannot be mapped to HU (damaged header)"
        )


# ---------------------------------------------------------------------------------------
# Decoder messages: logged at debug level, never printed
# ---------------------------------------------------------------------------------------
#: One capture at a time: file descriptor 2 and the warnings filters are process-wide.
_QUIET_LOCK = threading.Lock()
#: (pid, file) that receives fd 2 during a capture, reused (a new temporary file costs
#: ~0.3 ms); per process, since a forked worker must not share its parent's file offset.
_SINK: list[Any] = [None, None]


def _after_fork_in_child() -> None:
    global _QUIET_LOCK
    _QUIET_LOCK = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


#: What libjpeg (inside GDCM) says when it met corrupt data and went on decoding: its
#: "warnings" JWRN_HIT_MARKER, JWRN_HUFF_BAD_CODE, JWRN_EXTRANEOUS_DATA, JWRN_MUST_RESYNC
#: ("Corrupt JPEG data: ...") and JWRN_JPEG_EOF.  The pixels are then partly invented
#: (measured: a lossless slice with a damaged Huffman stream decoded to values up to
#: 64,501 HU with only this line), so the slice is refused.
_JPEG_CORRUPT = re.compile(r"corrupt jpeg data|premature end of jpeg", re.IGNORECASE)


@dataclass
class _Said:
    """What a decoder wrote to fd 2 and the Python warnings it raised (see :func:`_quiet`)."""

    text: str = ""
    warnings: list[str] = field(default_factory=list)

    def refuse_if_corrupt(self, path: str) -> None:
        """Refuse the slice when libjpeg reported corrupt data it decoded anyway."""
        for line in self.text.splitlines():
            if _JPEG_CORRUPT.search(line):
                raise DicomReadError(
                    f"{path}: cannot decode pixel data: the JPEG decoder reported "
                    f"{line.strip()[:120]!r}; the compressed stream is damaged"
                )


def _sink() -> Any:
    if _SINK[0] != os.getpid():
        if _SINK[1] is not None:  # the parent's, inherited by a fork: this copy only
            with contextlib.suppress(OSError):
                _SINK[1].close()
        try:  # in memory where the system offers it (Linux)
            sink = open(os.memfd_create("hu-roi-decoder-stderr"), "w+b", buffering=0)  # noqa: SIM115
        except (AttributeError, OSError):
            sink = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
        _SINK[:] = [os.getpid(), sink]
    return _SINK[1]


@atexit.register
def _close_sink() -> None:
    if _SINK[1] is not None and _SINK[0] == os.getpid():
        with contextlib.suppress(OSError):
            _SINK[1].close()
        _SINK[:] = [None, None]


@contextlib.contextmanager
def _quiet(path: str) -> Iterator[_Said]:
    """Run a decoder with its messages logged at debug level instead of printed.

    GDCM, libjpeg and openjpeg (C/C++) and pylibjpeg-rle (Rust panics) write to file
    descriptor 2 directly, so ``sys.stderr`` redirection cannot catch them: fd 2 is pointed
    at a temporary file for the duration.  Python warnings (pydicom's) are recorded too.
    The caller's exception or result carries the verdict; these texts are detail for
    ``--verbose`` debugging, except what :meth:`_Said.refuse_if_corrupt` looks for: the
    yielded :class:`_Said` holds it once the block has ended.  Anything another thread
    writes to stderr meanwhile is logged the same way (the decoders hold the GIL, so
    little else runs).
    """
    said = _Said()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_QUIET_LOCK)
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        saved = -1
        try:
            # A file, not a pipe: a decoder writing more than a pipe holds would block.
            sink = _sink()
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
        except OSError:  # no fd 2 (daemon) or no temporary file: run uncaptured
            saved = -1
        try:
            yield said
        finally:
            text = b""
            if saved >= 0:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read()
                sink.seek(0)
                sink.truncate()
            said.text = text.decode("utf-8", "replace")
            said.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
            for line in said.text.splitlines():
                if line.strip():
                    log.debug("%s: decoder: %s", path, line.strip())
            for w_text in said.warnings:
                log.debug("%s: %s", path, w_text)


# ---------------------------------------------------------------------------------------
# Per-slice readers: each writes one slice into ``dest`` and returns (fits, padding HU)
# ---------------------------------------------------------------------------------------
class _Float32Needed(Exception):
    """A slice's HU are not exact in int16: the volume must be float32."""


def _fits16(lo: int, hi: int, s: int, i: int) -> bool:
    ext = sorted((lo * s + i, hi * s + i))
    return bool(ext[0] >= _INT16.min and ext[1] <= _INT16.max)


def _rescale_into(
    stored: np.ndarray,
    slope: float,
    inter: float,
    dest: np.ndarray,
    *,
    inplace: bool,
    stored_range: tuple[int, int] | None = None,
) -> None:
    """Write ``stored * slope + inter`` into ``dest`` (int16 exactly, or float32).

    ``stored`` is a 2-D int array (uint16/int16 or wider); when ``inplace`` it shares
    memory with ``dest`` (int16 output of the fast path) and is overwritten.
    ``stored_range`` is the range the stored values cannot leave (from BitsStored and
    PixelRepresentation, after unused bits were corrected); when it maps into int16 the
    slice's min/max need not be computed.
    """
    if dest.dtype == np.int16:
        if not (_is_int(slope) and _is_int(inter)):
            raise _Float32Needed
        s, i = int(slope), int(inter)
        if stored_range is None or not _fits16(*stored_range, s, i):
            if not _fits16(int(stored.min()), int(stored.max()), s, i):
                raise _Float32Needed
        if inplace and stored.itemsize == 2:
            # Modular 16-bit arithmetic on the raw bits: exact because the true HU fit.
            u = stored.view(np.uint16)
            if s != 1:
                np.multiply(u, np.uint16(s % 65536), out=u)
            if i != 0:
                np.add(u, np.uint16(i % 65536), out=u)
            return
        if s == 1:
            np.add(stored, np.int32(i), out=dest, casting="unsafe")
        else:
            np.multiply(stored, np.int32(s), out=dest, casting="unsafe")
            dest += np.int16(i)
        return
    # float32: float32(stored * slope + intercept) computed in float64, like pydicom.
    tmp = stored.astype(np.float64)
    if slope != 1:
        tmp *= slope
    tmp += inter
    dest[...] = tmp


def _correct_bits(v: np.ndarray, bits_allocated: int, bits_stored: int) -> None:
    """Mask (unsigned) or sign-extend (signed) unused high bits in place, like pydicom."""
    shift = bits_allocated - bits_stored
    if 0 < shift < bits_allocated:
        np.left_shift(v, shift, out=v)
        np.right_shift(v, shift, out=v)


def _fast_native(fh: object, h: PixelHeader, dest: np.ndarray, path: str) -> None:
    """Read a native 16-bit slice straight into ``dest`` (int16) or via a scratch array."""
    nbytes = h.rows * h.columns * 2
    problem = _native_length_problem(h.pixel_length, h.rows, h.columns, 1, 16)
    if problem:
        raise DicomReadError(f"{path}: cannot read pixel data: {problem}")
    raw = dest if dest.dtype == np.int16 else np.empty(dest.shape, dtype=np.int16)
    fh.seek(h.pixel_offset)  # type: ignore[attr-defined]
    got = fh.readinto(memoryview(raw).cast("B"))  # type: ignore[attr-defined, arg-type]
    if got != nbytes:
        raise DicomReadError(
            f"{path}: cannot read pixel data: the file ends after {got} of {nbytes} "
            "pixel bytes (truncated file)"
        )
    if h.transfer_syntax == _EXPLICIT_BE:
        raw.byteswap(inplace=True)
    _finish16(raw, h, dest)


def _finish16(
    raw: np.ndarray, h: PixelHeader, dest: np.ndarray, *, signed_precision: int | None = None
) -> None:
    """Stored 16-bit values in ``raw`` (native byte order) -> HU in ``dest``.

    ``signed_precision`` (JPEG-LS only): sign-extend signed data from this many bits (the
    codestream's precision) instead of BitsStored, as pydicom's JPEG-LS sign correction does.
    """
    v = raw.view(np.int16 if h.pixel_representation == 1 else np.uint16)
    bits = h.bits_stored
    if signed_precision is not None and h.pixel_representation == 1:
        bits = signed_precision
    _correct_bits(v, 16, bits)
    rng = _stored_range(bits if 0 < bits <= 16 else 16, h.pixel_representation)
    _rescale_into(
        v, h.rescale_slope, h.rescale_intercept, dest, inplace=raw is dest, stored_range=rng
    )


def _single_frame_fragments(fh: object, h: PixelHeader, path: str) -> bytes:
    """The compressed stream of a single-frame encapsulated Pixel Data (all fragments)."""
    fh.seek(h.pixel_offset)  # type: ignore[attr-defined]
    data = fh.read()  # type: ignore[attr-defined]
    pos, frags = 0, []
    first = True
    while True:
        if pos + 8 > len(data):
            raise DicomReadError(
                f"{path}: cannot read pixel data: encapsulated Pixel Data ends without a "
                "sequence delimiter (truncated file)"
            )
        g, el, ln = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if (g, el) == (0xFFFE, 0xE0DD):
            break
        if (g, el) != (0xFFFE, 0xE000) or ln == _UNDEFINED or pos + ln > len(data):
            raise DicomReadError(
                f"{path}: cannot read pixel data: bad item ({g:04X},{el:04X}) of length {ln} "
                "in encapsulated Pixel Data (damaged file)"
            )
        if not first:  # the first item is the Basic Offset Table
            frags.append(data[pos : pos + ln])
        first = False
        pos += ln
    if not frags:
        raise DicomReadError(f"{path}: cannot read pixel data: no compressed fragment")
    return frags[0] if len(frags) == 1 else b"".join(frags)


def _fast_rle(fh: object, h: PixelHeader, dest: np.ndarray, path: str) -> None:
    """Decode a single-frame 16-bit RLE slice with pylibjpeg-rle directly (no Dataset).

    Segment by segment (:func:`_rle_segments`), each checked to hold Rows × Columns bytes;
    segment 0 holds the high bytes, segment 1 the low bytes (PS3.5 G.2).
    """
    msb, lsb = _rle_segments(path, _single_frame_fragments(fh, h, path), h.rows, h.columns, 2)
    raw = dest if dest.dtype == np.int16 else np.empty(dest.shape, dtype=np.int16)
    u = raw.reshape(-1).view(np.uint16)
    np.left_shift(np.frombuffer(msb, dtype=np.uint8), 8, out=u, dtype=np.uint16)
    u |= np.frombuffer(lsb, dtype=np.uint8)
    _finish16(raw, h, dest)


def _fast_gdcm(fh: object, h: PixelHeader, dest: np.ndarray, path: str) -> None:
    """Decode a single-frame 16-bit JPEG lossless slice with GDCM directly.

    Builds the same ``gdcm.Image`` as pydicom's GDCM plugin (``pydicom.pixels.decoders.
    gdcm._decode_frame``) from the fragments, then finishes like the native path
    (unused-bit correction as pydicom does for JPEG lossless, rescale).
    """
    import gdcm

    src = _single_frame_fragments(fh, h, path)
    _check_frame_header(path, h.transfer_syntax, src, h.rows, h.columns, 1)
    try:
        fragment = gdcm.Fragment()
        fragment.SetByteStringValue(src)
        fragments = gdcm.SequenceOfFragments.New()
        fragments.AddFragment(fragment)
        elem = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
        elem.SetValue(fragments.__ref__())
        img = gdcm.Image()
        img.SetNumberOfDimensions(2)
        img.SetDimensions((h.columns, h.rows, 1))
        img.SetDataElement(elem)
        pi = gdcm.PhotometricInterpretation.GetPIType(h.photometric_interpretation)
        img.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(pi))
        img.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(h.transfer_syntax)))
        img.SetPixelFormat(
            gdcm.PixelFormat(1, 16, h.bits_stored, h.bits_stored - 1, h.pixel_representation)
        )
        with _quiet(path) as said:  # GDCM/libjpeg print "Corrupt JPEG data: ..." on fd 2
            buffer = img.GetBuffer()
    except Exception as exc:
        raise DicomReadError(f"{path}: cannot decode pixel data ({_one_line(exc)})") from None
    said.refuse_if_corrupt(path)
    if buffer is None:
        raise DicomReadError(
            f"{path}: cannot decode pixel data: GDCM could not decode the JPEG stream "
            "(corrupt or truncated)"
        )
    frame = buffer.encode("utf-8", "surrogateescape")
    nbytes = h.rows * h.columns * 2
    if len(frame) != nbytes:
        raise DicomReadError(
            f"{path}: cannot decode pixel data: GDCM gave {len(frame)} bytes, expected {nbytes}"
        )
    raw = dest if dest.dtype == np.int16 else np.empty(dest.shape, dtype=np.int16)
    raw.reshape(-1).view(np.uint8)[:] = np.frombuffer(frame, dtype=np.uint8)
    if sys.byteorder == "big":  # pragma: no cover
        raw.byteswap(inplace=True)
    _finish16(raw, h, dest)


def _fast_jls(fh: object, h: PixelHeader, dest: np.ndarray, path: str) -> None:
    """Decode a single-frame 16-bit JPEG-LS slice with pyjpegls (CharLS) directly.

    Same decoder call as pydicom's pyjpegls plugin; then pydicom's corrections: signed data
    are sign-extended from the codestream precision, unsigned data masked to BitsStored.
    """
    import jpeg_ls

    src = _single_frame_fragments(fh, h, path)
    _check_frame_header(path, h.transfer_syntax, src, h.rows, h.columns, 1)
    try:
        frame, info = jpeg_ls.decode_pixel_data(src)
    except Exception as exc:
        raise DicomReadError(f"{path}: cannot decode pixel data ({_one_line(exc)})") from None
    nbytes = h.rows * h.columns * 2
    precision = int(info.get("bits_per_sample", h.bits_stored))
    size = (info.get("height", h.rows), info.get("width", h.columns))
    if (
        info.get("components", 1) != 1
        or not 8 < precision <= 16
        or len(frame) != nbytes
        or size != (h.rows, h.columns)
    ):
        raise DicomReadError(
            f"{path}: cannot decode pixel data: JPEG-LS gave {size[0]}x{size[1]} pixels, "
            f"{len(frame)} bytes of {info.get('components')} component(s), {precision} "
            f"bits; expected {h.rows}x{h.columns}, {nbytes} bytes of one 9-16 bit component"
        )
    raw = dest if dest.dtype == np.int16 else np.empty(dest.shape, dtype=np.int16)
    raw.reshape(-1).view(np.uint8)[:] = np.frombuffer(frame, dtype=np.uint8)
    if sys.byteorder == "big":  # pragma: no cover
        raw.byteswap(inplace=True)
    _finish16(raw, h, dest, signed_precision=precision)


@functools.cache
def _jls_available() -> bool:
    """Whether pyjpegls (CharLS) imports; checked on the first JPEG-LS file."""
    try:
        import jpeg_ls  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _rle_available() -> bool:
    """Whether pylibjpeg-rle imports; checked on the first RLE file."""
    try:
        import rle.utils  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line (pydicom's decoder errors span several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def _is_decoder_failure(exc: BaseException) -> bool:
    """An exception a decoder raised for bad data: any ``Exception``, and the Rust panics
    of pylibjpeg (``pyo3_runtime.PanicException`` derives from ``BaseException``)."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _header_number(path: str, ds: Any, keyword: str, default: float) -> float:
    """A numeric header value (``default`` when absent or empty); refused when garbled,
    naming the attribute without quoting its raw text."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return default
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise DicomReadError(
            f"{path}: {keyword} is not a single number; the file is damaged"
        ) from None


def _check_pixel_data(path: str, ds: Any, rows: int, cols: int) -> None:
    """The pydicom path's checks that the pixel data fit the header (see the module doc)."""
    try:
        _check_pixel_data_of(path, ds, rows, cols)
    except DicomReadError:
        raise
    except Exception as exc:  # a damaged header pydicom cannot even describe
        raise DicomReadError(
            f"{path}: cannot read pixel data ({type(exc).__name__} while reading the "
            "image description; the header is damaged)"
        ) from None


def _check_pixel_data_of(path: str, ds: Any, rows: int, cols: int) -> None:
    ts = ds.file_meta.TransferSyntaxUID
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError, OverflowError):
        raise DicomReadError(
            f"{path}: SamplesPerPixel, NumberOfFrames or BitsAllocated is not a number; "
            "the file is damaged"
        ) from None
    keyword = next(
        (k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), None
    )
    if keyword is None:
        return  # pydicom says so when decoding
    value = ds[keyword].value or b""
    try:
        encapsulated = bool(ts.is_encapsulated)
    except (AttributeError, ValueError):  # not a transfer syntax UID
        raise DicomReadError(
            f"{path}: cannot read pixel data: TransferSyntaxUID is not a transfer syntax"
        ) from None
    if keyword == "PixelData" and encapsulated:
        from pydicom.encaps import generate_frames

        try:
            stream = list(generate_frames(value, number_of_frames=frames))
        except Exception as exc:
            raise DicomReadError(f"{path}: cannot read pixel data ({_one_line(exc)})") from None
        for frame in stream:
            if ts == _RLE and bits % 8 == 0:
                _rle_segments(path, frame, rows, cols, samples * bits // 8)
            else:
                _check_frame_header(path, str(ts), frame, rows, cols, samples)
        return
    if keyword != "PixelData":
        bits = 32 if keyword == "FloatPixelData" else 64
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    problem = _native_length_problem(len(value), rows, cols, samples, bits, frames, photometric)
    if problem:
        raise DicomReadError(f"{path}: cannot read pixel data: {problem}")


def _decode_pydicom(
    path: str, rows: int, cols: int, plugin: str = ""
) -> tuple[np.ndarray, float, float, int | None]:
    """Stored values of one single-frame image plus slope, intercept and padding value.

    The pixel data are checked against the header before decoding and the rescale after
    (module doc); pydicom's warnings and the decoders' messages are logged at debug level.
    """
    with _quiet(path) as said:
        decoded = _decode_pydicom_quiet(path, rows, cols, plugin)
    said.refuse_if_corrupt(path)
    return decoded


def _decode_pydicom_quiet(
    path: str, rows: int, cols: int, plugin: str
) -> tuple[np.ndarray, float, float, int | None]:
    import pydicom

    try:
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            # No preamble (old ACR-NEMA style); the index already checked it is a data set.
            ds = pydicom.dcmread(path, force=True)
            if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
                ds.file_meta = pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
                if not ds.original_encoding[0]:
                    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    except Exception as exc:
        raise DicomReadError(f"{path}: cannot read ({_one_line(exc)})") from None
    if int(ds.get("Rows", 0)) != rows or int(ds.get("Columns", 0)) != cols:
        raise DicomReadError(
            f"{path}: image size {ds.get('Rows')}x{ds.get('Columns')} differs from the "
            f"series' {rows}x{cols}; the file changed since it was indexed"
        )
    _check_pixel_data(path, ds, rows, cols)
    if plugin:
        # Only a missing plugin falls back to pydicom's default order: after a failure,
        # the next decoder in that order may be GDCM, which aborts the process on some
        # corrupt JPEG-LS streams.
        from pydicom.pixels import get_decoder

        try:
            usable = plugin in get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
        except Exception:
            usable = False
        if usable:
            ds.pixel_array_options(decoding_plugin=plugin)
    try:
        arr = ds.pixel_array
    except BaseException as exc:  # short pixel data, missing decoder, corrupt stream
        if not _is_decoder_failure(exc):
            raise
        raise DicomReadError(f"{path}: cannot decode pixel data ({_one_line(exc)})") from None
    if arr.shape != (rows, cols):
        raise DicomReadError(f"{path}: decoded shape {arr.shape}, expected {(rows, cols)}")
    slope = _header_number(path, ds, "RescaleSlope", 1.0)
    intercept = _header_number(path, ds, "RescaleIntercept", 0.0)
    try:
        pad = ds.get("PixelPaddingValue", None)
        pad_v = int(pad) if pad is not None else None
    except (TypeError, ValueError, OverflowError):
        raise DicomReadError(
            f"{path}: PixelPaddingValue is not a single number; the file is damaged"
        ) from None
    lo: float
    hi: float
    if arr.dtype.kind in "iu":
        try:
            ba = int(ds.get("BitsAllocated", 16) or 16)
            lo, hi = _stored_range(
                int(ds.get("BitsStored", ba) or ba), int(ds.get("PixelRepresentation", 0) or 0)
            )
        except (TypeError, ValueError, OverflowError):
            lo, hi = int(arr.min()), int(arr.max())
    else:  # float pixel data: their own range
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    _check_rescale(path, slope, intercept, lo, hi)
    return arr, slope, intercept, pad_v


def _fast_path(h: PixelHeader) -> Callable[..., None] | None:
    """The direct reader for this file (native or one compressed syntax), or None for the
    pydicom path.  Every direct path handles single-frame, one-sample 16-bit images
    without a modality LUT; the compressed ones also need MONOCHROME data stored in
    9-16 bits (RLE handles any, like pydicom)."""
    if (
        h.bits_allocated != 16
        or h.samples_per_pixel != 1
        or h.number_of_frames != 1
        or h.has_modality_lut
    ):
        return None
    if h.transfer_syntax in _NATIVE:
        return _fast_native if h.pixel_length != _UNDEFINED else None
    if h.pixel_length != _UNDEFINED:  # compressed data are always encapsulated
        return None
    if h.transfer_syntax == _RLE and _rle_available():
        return _fast_rle
    mono16 = 8 < h.bits_stored <= 16 and h.photometric_interpretation in (
        "MONOCHROME1",
        "MONOCHROME2",
    )
    if mono16 and h.transfer_syntax in _JPEG_LOSSLESS and _gdcm_available():
        return _fast_gdcm
    if mono16 and h.transfer_syntax in _JPEG_LS and _jls_available():
        return _fast_jls
    return None


def _uid_by_pydicom(path: str) -> str | None:
    """SOPInstanceUID (else MediaStorageSOPInstanceUID) of a file the walker cannot read;
    None when pydicom cannot read it either (the decoder then reports why)."""
    import warnings  # (local: this rare path is the only user here)

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        uid = str(ds.get("SOPInstanceUID", "") or "").strip().rstrip("\0 ")
        meta = getattr(ds, "file_meta", None)
        if not uid and meta is not None:
            uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip().rstrip("\0 ")
    except Exception:
        return None
    return uid


def _check_same_file(path: str, expected: str, found: str | None) -> None:
    """Refuse a file whose SOP Instance UID is not the one its index header had: the file
    was replaced, renamed or swapped since it was indexed (or a stale header cache entry
    described another file), and its pixels would sit at another slice's position."""
    if not expected or found is None or found == expected:
        return
    if not (found.isascii() and expected.isascii()):  # undecodable bytes: not comparable
        return
    raise DicomReadError(
        f"{path}: file changed since it was indexed (SOP Instance UID differs); "
        "re-run without the header cache (--no-cache) or re-index the folder"
    )


class _SliceRead(NamedTuple):
    """What reading one slice found besides its pixels."""

    padding_hu: float | None
    rescale_slope: float
    rescale_intercept: float


def load_slice_into(path: str, dest: np.ndarray, sop_instance_uid: str = "") -> float | None:
    """Read one image file into ``dest`` (HU), choosing the fastest exact path.

    Parameters
    ----------
    path : str
        Single-frame DICOM image.
    dest : numpy.ndarray, shape (rows, columns), int16 or float32
        Output slice (a view into the volume).
    sop_instance_uid : str
        The file's SOP Instance UID as indexed ("" skips the check): a file holding
        another UID is refused.

    Returns
    -------
    float or None
        PixelPaddingValue in HU, if the file has one.

    Raises
    ------
    DicomReadError
        Unreadable, truncated or undecodable file, a size different from ``dest``,
        another SOP Instance UID than ``sop_instance_uid``, pixel data that do not fit
        the header, or a rescale that cannot give finite HU.
    _Float32Needed
        ``dest`` is int16 but this slice's HU are not exact in int16.
    """
    return _load_slice(path, dest, sop_instance_uid).padding_hu


def _load_slice(path: str, dest: np.ndarray, sop_instance_uid: str = "") -> _SliceRead:
    """:func:`load_slice_into`, also returning the slice's rescale values."""
    rows, cols = dest.shape
    try:
        fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DicomReadError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fh:
        try:
            h = _read_pixel_header(fh)
        except _Unusual as why:
            log.debug("%s: pydicom path (%s)", path, why)
            h = None
        if h is not None and (h.rows, h.columns) != (rows, cols):
            raise DicomReadError(
                f"{path}: image size {h.rows}x{h.columns} differs from the series' "
                f"{rows}x{cols}; the file changed since it was indexed"
            )
        if h is not None:
            _check_same_file(path, sop_instance_uid, h.sop_instance_uid)
        fast = _fast_path(h) if h is not None else None
        if fast is not None and h is not None:
            slope, inter = h.rescale_slope, h.rescale_intercept
            _check_rescale(
                path, slope, inter, *_stored_range(h.bits_stored, h.pixel_representation)
            )
            fast(fh, h, dest, path)
            pad = h.pixel_padding_value
            return _SliceRead(None if pad is None else pad * slope + inter, slope, inter)
    if h is None and sop_instance_uid:
        _check_same_file(path, sop_instance_uid, _uid_by_pydicom(path))
    plugin = decoding_plugin(h.transfer_syntax) if h is not None else ""
    arr, slope, inter, pad = _decode_pydicom(path, rows, cols, plugin)
    _rescale_into(arr, slope, inter, dest, inplace=False)
    return _SliceRead(None if pad is None else pad * slope + inter, slope, inter)


# ---------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------
def _default_workers(n_items: int) -> int:
    return max(1, min(usable_cpus(), n_items))


def _run(fn: Callable[[int], _SliceRead], n: int, workers: int) -> list[_SliceRead]:
    if workers > 1 and n > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, range(n)))
    return [fn(k) for k in range(n)]


def _load_chunk(
    paths: list[tuple[str, str]], rows: int, cols: int, dtype: str
) -> tuple[np.ndarray, list[_SliceRead]]:
    """Process-pool task: load some slices into a new array (see :func:`load_slice_into`);
    ``paths`` holds (path, SOP Instance UID) pairs."""
    out = np.empty((len(paths), rows, cols), dtype=dtype)
    return out, [_load_slice(p, out[k], uid) for k, (p, uid) in enumerate(paths)]


def _preload_decoders(transfer_syntax: str) -> None:
    """Import the decoder of ``transfer_syntax`` here, before worker processes are forked,
    so that they inherit it instead of each importing it (pydicom with its plugins costs
    ~0.3 s per process, GDCM ~0.1 s)."""
    if transfer_syntax in _JPEG_LOSSLESS and _gdcm_available():
        return
    if transfer_syntax in _JPEG_LS and _jls_available():
        return
    import pydicom  # noqa: F401  (imports every decoder plugin it has)


def _run_processes(paths: list[tuple[str, str]], out: np.ndarray, workers: int) -> list[_SliceRead]:
    """Decode in worker processes (for decoders that hold the GIL) into ``out``;
    ``paths`` holds (path, SOP Instance UID) pairs."""
    n = len(paths)
    n_chunks = min(n, 4 * workers)
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    pads: list[_SliceRead] = [_SliceRead(None, 1.0, 0.0)] * n
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=ignore_sigint) as pool:
        futures = {
            pool.submit(_load_chunk, paths[a:b], out.shape[1], out.shape[2], out.dtype.str): (a, b)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            if b > a
        }
        try:
            for fut in as_completed(futures):
                a, b = futures[fut]
                chunk, chunk_pads = fut.result()
                out[a:b] = chunk
                pads[a:b] = chunk_pads
                del chunk
        except BaseException:  # Ctrl-C or a failed chunk: do not wait for the others
            stop_workers(pool)
            raise
    return pads


def load_series(
    info: SeriesInfo,
    *,
    slices: Sequence[int] | None = None,
    accept: Iterable[str] = (),
    workers: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Volume:
    """Load the HU volume of a series, or only some of its slices.

    Parameters
    ----------
    info : SeriesInfo
        From :func:`hu_roi.io.index_folder`.
    slices : sequence of int or None
        Indices into ``info.slices`` (sorted by position) to load; ``None`` loads all.
        Other slices are not read from disk.
    accept : iterable of str
        Problem codes the caller accepts (see :func:`check_loadable`).  With
        ``duplicate-positions`` accepted, the first image (by path) at each position is kept.
    workers : int or None
        Reading/decoding threads, or processes for long compressed series whose decoder
        holds the GIL (JPEG 2000, JPEG-LS, JPEG lossless).  Default: 1 for uncompressed and RLE
        series (fastest when files are in the page cache; pass 4-8 for network shares or
        cold disks, where threads overlap I/O waits), else the usable CPUs (at most 8).
    max_bytes : int
        Refuse before allocating when the HU array would be larger than this.

    Returns
    -------
    Volume
        ``hu`` of shape (n_slices, rows, columns), int16 when exact else float32.

    Raises
    ------
    SeriesProblemError
        The series has a problem that makes measurement wrong and it was not accepted,
        or the array would be larger than ``max_bytes``.
    DicomReadError
        A file cannot be read or decoded.
    """
    check_loadable(info, accept)
    n_all = info.n_slices
    if slices is None:
        idx = list(range(n_all))
    else:
        idx = sorted({int(i) for i in slices})
        bad = [i for i in idx if i < 0 or i >= n_all]
        if bad:
            raise IndexError(f"slice indices {bad} out of range 0..{n_all - 1}")
    if "duplicate-positions" in info.problems:
        along = info.positions_along_normal_mm
        keep: list[int] = []
        last: int | None = None
        for i in idx:
            if last is not None and abs(along[i] - along[last]) <= 0.01:
                log.warning("skipping duplicate slice %s", info.slices[i].path)
                continue
            keep.append(i)
            last = i
        idx = keep
    rows, cols = info.rows, info.columns
    nbytes = len(idx) * rows * cols * 2
    if nbytes > max_bytes:
        raise SeriesProblemError(
            f"series {info.series_key}: {len(idx)}x{rows}x{cols} would need "
            f"{nbytes / 1024**3:.1f} GiB (> {max_bytes / 1024**3:.1f} GiB); load fewer slices",
        )

    slope0 = info.rescale_slope if info.rescale_slope is not None else 1.0
    inter0 = info.rescale_intercept if info.rescale_intercept is not None else 0.0
    exact16 = _is_int(slope0) and _is_int(inter0)
    if workers is not None:
        n_workers = max(1, int(workers))
    elif info.transfer_syntax in _NATIVE or info.transfer_syntax == _RLE:
        # Measured (docs/performance.md): from the page cache one thread is fastest; the
        # per-file work is GIL-bound header parsing plus memcpy-speed reads.
        n_workers = 1
    else:
        n_workers = _default_workers(len(idx))
    paths = [info.slices[i].path for i in idx]
    uids = [info.slices[i].sop_instance_uid for i in idx]  # each file is checked against it

    use_processes = (
        n_workers > 1
        and info.transfer_syntax in PROCESS_DECODING
        and len(idx) >= min_slices_per_process(info.transfer_syntax) * n_workers
    )

    def run(dtype: type) -> tuple[np.ndarray, list[_SliceRead]]:
        out: np.ndarray = np.empty((len(idx), rows, cols), dtype=dtype)
        if use_processes:
            _preload_decoders(info.transfer_syntax)
            return out, _run_processes(list(zip(paths, uids, strict=True)), out, n_workers)
        reads = _run(lambda k: _load_slice(paths[k], out[k], uids[k]), len(idx), n_workers)
        return out, reads

    try:
        out, reads = run(np.int16 if exact16 else np.float32)
    except _Float32Needed:
        # Rare: a slice whose HU is not exact in int16 (unsigned data near the top of its
        # range, a non-integral rescale in one file).  Redo as float32 (exact below 2**24).
        log.info("series %s: HU not exact in int16, loading as float32", info.series_key)
        out, reads = run(np.float32)
    pads = {r.padding_hu for r in reads if r.padding_hu is not None}
    origins = np.array([info.slices[i].position_lps_mm for i in idx], dtype=float).reshape(-1, 3)
    return Volume(
        hu=out,
        orientation=np.asarray(info.orientation, dtype=float).reshape(2, 3),
        pixel_spacing_mm=info.pixel_spacing_mm,
        slice_origins_lps_mm=origins,
        slice_indices=np.asarray(idx, dtype=int),
        info=info,
        padding_hu=pads.pop() if len(pads) == 1 else None,
        rescale_slopes=np.array([r.rescale_slope for r in reads], dtype=float),
        rescale_intercepts=np.array([r.rescale_intercept for r in reads], dtype=float),
    )
