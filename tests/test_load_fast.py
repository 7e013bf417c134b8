"""Exactness of the fast loader (hu_roi.io.load) against pydicom and SimpleITK.

References: pydicom's ``pixel_array`` + ``apply_modality_lut`` (float64, cast to float32
for float volumes) and SimpleITK's ``ImageSeriesReader`` (GDCM).  Files are real DICOM
written with pydicom (tests/dicom_factory.py or edited copies of its files), covering
signed/unsigned, 12/16 bits stored with garbage in the unused bits, big endian, implicit
VR, odd image sizes, intercept -8192, slope != 1, per-slice rescale, nested sequences of
undefined length, trailing elements after Pixel Data, compressed syntaxes and the
process-pool decoding path.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from hu_roi.errors import DicomReadError
from hu_roi.io import index_folder, load_series
from hu_roi.io import load as load_mod
from hu_roi.io.load import read_pixel_header

RNG = np.random.default_rng(7)


def _hu(n: int = 4, rows: int = 13, cols: int = 17, lo: int = -1000, hi: int = 2000) -> np.ndarray:
    return RNG.integers(lo, hi, size=(n, rows, cols)).astype(np.float64)


def _pydicom_hu(paths: list[str]) -> np.ndarray:
    """Independent reference: pydicom pixel_array + apply_modality_lut (float64)."""
    out = []
    for p in paths:
        ds = pydicom.dcmread(p)
        out.append(np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64))
    return np.stack(out)


def _load(folder: Path, **kw: object):
    res = index_folder(folder)
    assert len(res.series) == 1, res.skipped
    info = res.series[0]
    return info, load_series(info, **kw)  # type: ignore[arg-type]


def _check_against_pydicom(folder: Path, expect_dtype: type, **kw: object) -> np.ndarray:
    info, vol = _load(folder, **kw)
    ref = _pydicom_hu([s.path for s in info.slices])
    assert vol.hu.dtype == expect_dtype
    if expect_dtype == np.int16:
        assert np.array_equal(vol.hu.astype(np.float64), ref)
    else:
        assert np.array_equal(vol.hu, ref.astype(np.float32))
    return vol.hu


@pytest.fixture
def fast_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the pydicom fallback fail, so a passing test proves the fast path was used."""

    def refuse(path: str, *a: object, **k: object) -> None:
        raise AssertionError(f"pydicom fallback used for {path}")

    monkeypatch.setattr(load_mod, "_decode_pydicom", refuse)


def _rewrite(paths: list[Path], edit) -> None:  # type: ignore[no-untyped-def]
    """Re-save each file after ``edit(ds, k)`` (ds read with pydicom)."""
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        kw = edit(ds, k) or {}
        ds.save_as(p, **kw)


@pytest.mark.parametrize(
    ("unsigned", "bits", "intercept", "slope", "dtype"),
    [
        (True, 16, -1024, 1, np.int16),
        (False, 16, 0, 1, np.int16),
        (False, 16, -1024, 1, np.int16),
        (True, 12, -1024, 1, np.int16),
        (False, 12, 0, 1, np.int16),
        (True, 16, -8192, 1, np.int16),
        (True, 16, -1024, 2, np.int16),
        (False, 16, 1000, -1, np.int16),
        (True, 16, -1024.5, 0.5, np.float32),
        (True, 16, -1024.25, 1, np.float32),
        (False, 16, -3.3, 0.1, np.float32),
    ],
)
def test_native_variants_match_pydicom(
    tmp_path: Path,
    fast_only: None,
    unsigned: bool,
    bits: int,
    intercept: float,
    slope: float,
    dtype: type,
) -> None:
    hu = _hu()
    if slope < 0:
        hu = -hu
    stored = np.rint((hu - intercept) / slope)
    if bits == 12:
        lo, hi = (0, 4095) if unsigned else (-2048, 2047)
        stored = np.clip(stored, lo, hi)
    hu = stored * slope + intercept
    write_ct_series(
        tmp_path, hu, unsigned=unsigned, bits_stored=bits, intercept=intercept, slope=slope
    )
    _check_against_pydicom(tmp_path, dtype)


@pytest.mark.parametrize("unsigned", [True, False])
@pytest.mark.parametrize("rle", [False, True], ids=["native", "rle"])
def test_garbage_in_unused_bits_is_masked_like_pydicom(
    tmp_path: Path, fast_only: None, unsigned: bool, rle: bool
) -> None:
    """12 bits stored, random values in the 4 unused high bits (PS3.5 8.1.1)."""
    hu = _hu(lo=-1000, hi=1000)
    paths = write_ct_series(tmp_path, hu, unsigned=unsigned, bits_stored=12, intercept=-1024)

    def garbage(ds: Dataset, k: int) -> None:
        raw = np.frombuffer(ds.PixelData, dtype=np.uint16).copy()
        raw |= (RNG.integers(0, 16, size=raw.shape) << 12).astype(np.uint16)
        ds.PixelData = raw.tobytes()
        if rle:
            ds.compress(RLELossless, generate_instance_uid=False)

    _rewrite(paths, garbage)
    hu_loaded = _check_against_pydicom(tmp_path, np.int16)
    # The garbage really was there and really was removed: values are the original HU.
    assert np.array_equal(hu_loaded, hu.astype(np.int16))


def test_big_endian_explicit(tmp_path: Path, fast_only: None) -> None:
    hu = _hu(rows=11, cols=9)
    paths = write_ct_series(tmp_path, hu, unsigned=False, intercept=-1024)

    for p in paths:
        ds = pydicom.dcmread(p)
        arr = np.frombuffer(ds.PixelData, dtype="<i2")
        ds.PixelData = arr.astype(">i2").tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        dcmwrite(p, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    assert str(pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID) == ExplicitVRBigEndian
    got = _check_against_pydicom(tmp_path, np.int16)
    assert np.array_equal(got, hu.astype(np.int16))


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_implicit_and_deflated(tmp_path: Path, ts: str, monkeypatch: pytest.MonkeyPatch) -> None:
    hu = _hu(rows=15, cols=7)
    if ts == ImplicitVRLittleEndian:  # native: must not need pydicom's decoder
        monkeypatch.setattr(load_mod, "_decode_pydicom", None)
    write_ct_series(tmp_path, hu, transfer_syntax=ts, unsigned=False, intercept=-1024)
    got = _check_against_pydicom(tmp_path, np.int16)
    assert np.array_equal(got, hu.astype(np.int16))


def test_per_slice_rescale_and_float_fallback(tmp_path: Path, fast_only: None) -> None:
    """Intercepts differ per slice; one slice needs float32 (HU above the int16 range)."""
    hu = _hu(n=5, lo=-1000, hi=1000)
    paths = write_ct_series(
        tmp_path,
        hu,
        intercept=-1024,
        extra_tags={"RescaleIntercept": lambda i: -1024 + 10 * i},
    )
    _check_against_pydicom(tmp_path, np.int16)

    def big(ds: Dataset, k: int) -> None:
        if k == 3:
            raw = np.frombuffer(ds.PixelData, dtype=np.uint16).copy()
            raw[0] = 65000  # HU 65000 - 994: beyond int16
            ds.PixelData = raw.tobytes()

    _rewrite(paths, big)
    got = _check_against_pydicom(tmp_path, np.float32)
    assert got.max() == 65000 - 1024 + 30


def test_nested_sequences_private_un_and_trailing_elements(tmp_path: Path, fast_only: None) -> None:
    """Undefined-length sequences (nested), an undefined-length UN and data after pixels."""
    hu = _hu(n=3, rows=8, cols=10)
    paths = write_ct_series(tmp_path, hu, intercept=-1024)

    def decorate(ds: Dataset, k: int) -> None:
        inner = Dataset()
        inner.CodeValue = "113691"
        inner.CodingSchemeDesignator = "DCM"
        inner.RescaleIntercept = 555  # nested: must not be taken for the top-level one
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3"
        item.PurposeOfReferenceCodeSequence = DicomSequence([inner])
        ds.ReferencedImageSequence = DicomSequence([item, Dataset()])
        for elem in (ds["ReferencedImageSequence"], item["PurposeOfReferenceCodeSequence"]):
            elem.is_undefined_length = True
        ds.ReferencedImageSequence.is_undefined_length = True
        ds.add_new(0x00091010, "LO", "PRIVATE")
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * 6)  # trailing padding after Pixel Data

    _rewrite(paths, decorate)
    got = _check_against_pydicom(tmp_path, np.int16)
    assert np.array_equal(got, hu.astype(np.int16))
    for p in paths:
        h = read_pixel_header(p)
        ref = pydicom.dcmread(p)
        assert h.rescale_intercept == -1024
        assert h.pixel_offset == ref.get_item("PixelData").value_tell
        assert h.pixel_length == 8 * 10 * 2


@pytest.mark.parametrize(
    "ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jls", "j2k"]
)
@pytest.mark.parametrize("unsigned", [True, False])
def test_compressed_match_pydicom(
    tmp_path: Path, ts: str, unsigned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    hu = _hu(n=3, rows=32, cols=33)
    if ts in (RLELossless, JPEGLSLossless):  # decoded directly, without pydicom's Dataset
        monkeypatch.setattr(load_mod, "_decode_pydicom", None)
    # Signed: intercept 0, so stored values are negative too.
    inter = -1024 if unsigned else 0
    write_ct_series(tmp_path, hu, transfer_syntax=ts, unsigned=unsigned, intercept=inter)
    got = _check_against_pydicom(tmp_path, np.int16)
    assert np.array_equal(got, hu.astype(np.int16))


@pytest.mark.parametrize("float_slice", [False, True], ids=["int16", "float32-restart"])
def test_process_pool_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, float_slice: bool
) -> None:
    """Long JPEG-LS series go to worker processes: same result as one thread."""
    n = load_mod.min_slices_per_process(JPEGLSLossless) * 2
    hu = _hu(n=n, rows=16, cols=16)
    if float_slice:  # one slice beyond int16: the workers' refusal restarts as float32
        hu[5, 0, 0] = 40000
    write_ct_series(tmp_path, hu, transfer_syntax=JPEGLSLossless, intercept=-1024)
    calls: list[int] = []
    real = load_mod._run_processes

    def spy(paths, out, workers):  # type: ignore[no-untyped-def]
        calls.append(workers)
        return real(paths, out, workers)

    monkeypatch.setattr(load_mod, "_run_processes", spy)
    info, vol2 = _load(tmp_path, workers=2)
    assert calls and calls[0] == 2
    _, vol1 = _load(tmp_path, workers=1)
    assert vol2.hu.dtype == (np.float32 if float_slice else np.int16)
    assert np.array_equal(vol2.hu, hu.astype(vol2.hu.dtype))
    assert np.array_equal(vol1.hu, vol2.hu)


def test_subset_equals_full_and_padding(tmp_path: Path) -> None:
    hu = _hu(n=6)
    write_ct_series(tmp_path, hu, intercept=-1024, extra_tags={"PixelPaddingValue": 0})
    info, full = _load(tmp_path)
    _, part = _load(tmp_path, slices=[4, 1, 4])
    assert list(part.slice_indices) == [1, 4]
    assert np.array_equal(part.hu, full.hu[[1, 4]])
    assert full.padding_hu == -1024.0
    assert np.allclose(part.slice_origins_lps_mm, full.slice_origins_lps_mm[[1, 4]])


def test_matches_simpleitk(tmp_path: Path) -> None:
    """SimpleITK (GDCM) reads the same HU, slice by slice in the index order."""
    sitk = pytest.importorskip("SimpleITK")
    hu = _hu(n=5, rows=20, cols=24)
    write_ct_series(
        tmp_path, hu, intercept=-8192, unsigned=True, pixel_spacing=(0.7, 0.9), reverse_order=True
    )
    info, vol = _load(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.path for s in info.slices])
    ref = sitk.GetArrayFromImage(reader.Execute())
    assert np.array_equal(vol.hu.astype(np.int64), ref.astype(np.int64))
    assert np.array_equal(vol.hu, hu.astype(np.int16))


def test_truncated_file_is_a_read_error(tmp_path: Path) -> None:
    hu = _hu(n=3)
    paths = write_ct_series(tmp_path, hu)
    info = index_folder(tmp_path).series[0]
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-7])
    with pytest.raises(DicomReadError, match="truncated|damaged|cannot"):
        load_series(info)


def test_changed_size_is_a_read_error(tmp_path: Path) -> None:
    hu = _hu(n=3)
    write_ct_series(tmp_path / "a", hu)
    info = index_folder(tmp_path / "a").series[0]
    other = write_ct_series(tmp_path / "b", _hu(n=1, rows=5, cols=5))
    Path(info.slices[0].path).write_bytes(other[0].read_bytes())
    with pytest.raises(DicomReadError, match="differs from the series"):
        load_series(info)


def test_walker_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    """A file without preamble goes to the pydicom path (the walker raises ValueError)."""
    hu = _hu(n=1)
    (p,) = write_ct_series(tmp_path, hu)
    data = p.read_bytes()
    q = tmp_path / "nopreamble"
    q.write_bytes(data[132:])
    with pytest.raises(ValueError):
        read_pixel_header(q)
    h = read_pixel_header(p)
    assert (h.rows, h.columns, h.bits_allocated, h.transfer_syntax) == (
        13,
        17,
        16,
        "1.2.840.10008.1.2.1",
    )


@pytest.mark.parametrize("unsigned", [True, False])
def test_jpeg_lossless_from_gdcm_matches(
    tmp_path: Path, unsigned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JPEG lossless (process 14 SV1) stream encoded by GDCM (SimpleITK), decoded by hu-roi."""
    sitk = pytest.importorskip("SimpleITK")
    from pydicom.uid import JPEGLosslessSV1

    if load_mod._GDCM_AVAILABLE:  # decoded by GDCM directly, without pydicom's Dataset
        monkeypatch.setattr(load_mod, "_decode_pydicom", None)
    hu = _hu(n=3, rows=32, cols=40)
    # Signed: intercept 0, so stored values are negative too.
    inter = -1024 if unsigned else 0
    paths = write_ct_series(tmp_path / "s", hu, intercept=inter, unsigned=unsigned)
    for p in paths:
        ds = pydicom.dcmread(p)
        w = sitk.ImageFileWriter()
        w.SetFileName(str(tmp_path / "enc.dcm"))
        w.SetUseCompression(True)
        w.SetCompressor("JPEG")
        w.Execute(sitk.GetImageFromArray(ds.pixel_array))
        enc = pydicom.dcmread(tmp_path / "enc.dcm")
        assert enc.file_meta.TransferSyntaxUID == JPEGLosslessSV1
        assert enc.PixelRepresentation == (0 if unsigned else 1)
        ds.PixelData = enc.PixelData
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(p, enforce_file_format=True)
    (tmp_path / "enc.dcm").unlink()
    got = _check_against_pydicom(tmp_path / "s", np.int16)
    assert np.array_equal(got, hu.astype(np.int16))


def test_deeply_nested_sequences_fall_back_cleanly(tmp_path: Path) -> None:
    """2,000 nested undefined-length sequences: the walker gives up without crashing."""
    hu = _hu(n=1, rows=4, cols=4)
    (p,) = write_ct_series(tmp_path, hu, intercept=-1024)
    ds = pydicom.dcmread(p)
    # Build the nested bytes by hand: (0009,0010) UN undefined length, item, ... x depth.
    depth = 2000
    head = b"".join(
        struct.pack("<HH2sHI", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF)
        if i == 0
        else struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + struct.pack("<HHI", 0x0009, 0x1010, 0xFFFFFFFF)
        for i in range(depth)
    )
    tail = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) + (
        struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    ) * (depth - 1)
    data = p.read_bytes()
    # Insert right before (0010,0010) PatientName: a top-level private element of group 9.
    at = data.index(b"\x10\x00\x10\x00PN")
    p.write_bytes(data[:at] + head + tail + data[at:])
    with pytest.raises(ValueError):
        read_pixel_header(p)
    del ds
    dest = np.empty((4, 4), dtype=np.int16)
    try:  # pydicom may or may not cope with this depth; either way no RecursionError escapes
        load_mod.load_slice_into(str(p), dest)
    except DicomReadError:
        pass
    else:
        assert np.array_equal(dest, hu[0].astype(np.int16))


@pytest.mark.filterwarnings("ignore:The number of bytes of compressed pixel data")
@pytest.mark.parametrize("ts", [JPEGLSLossless, RLELossless], ids=["jls", "rle"])
@pytest.mark.parametrize("unsigned", [True, False])
def test_12_bit_compressed_fast_paths(
    tmp_path: Path, ts: str, unsigned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 bits stored: JPEG-LS precision 12 (sign extension from 12 bits) and RLE."""
    monkeypatch.setattr(load_mod, "_decode_pydicom", None)
    hu = _hu(n=2, rows=20, cols=18, lo=-1000, hi=1000)
    inter = -1024 if unsigned else 0
    write_ct_series(
        tmp_path, hu, transfer_syntax=ts, unsigned=unsigned, bits_stored=12, intercept=inter
    )
    got = _check_against_pydicom(tmp_path, np.int16)
    assert np.array_equal(got, hu.astype(np.int16))
