"""Pixel data and rescale values that do not fit: a ``fail`` row with the reason, never HU.

Issue 11 items 3 and 8, issue 12 item 12.  Every file is real DICOM written with pydicom
(``tests/dicom_factory.py``) and then edited the way a damaged or hand-edited header is:

* pixel data longer or shorter than Rows × Columns × samples × bytes (a Columns of 80 for
  a 96-column image read every row with the wrong stride: -129 HU instead of 170, ``pass``),
  on every read path: the direct native / RLE / JPEG-LS / GDCM readers and pydicom;
* a RescaleSlope of 0, NaN, inf or 1e300 on one slice, or an intercept of 1e300;
* decoder noise: pydicom warnings, numpy overflow warnings, the Rust panic of
  pylibjpeg-rle, GDCM's "Corrupt JPEG data" lines on file descriptor 2.

Measurements go through ``hu-roi measure`` (in-process via ``run_main``; as a subprocess
where stderr must be checked at the file-descriptor level).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from hu_roi.errors import DicomReadError
from hu_roi.io import index_folder, load_series
from hu_roi.io import load as load_mod

REPO = Path(__file__).resolve().parents[1]
#: The phantom: -100 HU background, a 170 HU block where the ROI lies.
TARGET_HU = 170.0
SHAPE = (5, 64, 96)
#: ROI centre (x, y, z) in mm with 1 mm pixels: row 31.5, column 47.5, slice 2.
CENTRE = [47.5, 31.5, 2.0]

Edit = Callable[[pydicom.Dataset, int], Any]


def _phantom() -> np.ndarray:
    hu = np.full(SHAPE, -100.0)
    hu[:, 16:48, 24:72] = TARGET_HU
    return hu


def _to_jpeg_lossless(ds: pydicom.Dataset) -> None:
    """Re-encode the slice as JPEG lossless SV1 with GDCM (through SimpleITK)."""
    sitk = pytest.importorskip("SimpleITK")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        enc_path = Path(tmp) / "enc.dcm"
        w = sitk.ImageFileWriter()
        w.SetFileName(str(enc_path))
        w.SetUseCompression(True)
        w.SetCompressor("JPEG")
        w.Execute(sitk.GetImageFromArray(ds.pixel_array))
        enc = pydicom.dcmread(enc_path)
    assert enc.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    ds.PixelData = enc.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1


def _series(folder: Path, edit: Edit | None = None, ts: str = ExplicitVRLittleEndian) -> str:
    """Write the phantom series into ``folder``, apply ``edit(ds, k)`` to every file (it may
    return False after writing the file itself); return the SeriesInstanceUID."""
    jpeg = ts == JPEGLosslessSV1
    paths = write_ct_series(
        folder, _phantom(), transfer_syntax=ExplicitVRLittleEndian if jpeg else ts
    )
    uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        if jpeg:
            _to_jpeg_lossless(ds)
        if edit is None or edit(ds, k) is not False:
            ds.save_as(p, enforce_file_format=True)
    return uid


def _roi(uid: str, roi_id: str = "r1") -> dict:
    return {
        "roi_id": roi_id,
        "patient_id": "TEST",
        "timepoint": "T0",
        "series_instance_uid": uid,
        "level": "L3",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": CENTRE, "radius_mm": 5.0},
    }


def _write_rois(path: Path, rois: list[dict]) -> Path:
    path.write_text(
        json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": rois})
    )
    return path


def _read_rows(csv_path: Path) -> dict[str, dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return {r["roi_id"]: r for r in csv.DictReader(fh)}


def _measure(tmp_path: Path, uid: str) -> dict[str, str]:
    """``hu-roi measure`` (in-process) of the one ROI on ``tmp_path/dicom``: its row."""
    rois = _write_rois(tmp_path / "a.rois.json", [_roi(uid)])
    out = tmp_path / "m.csv"
    proc = run_main(
        "measure", "--dicom", str(tmp_path / "dicom"), "--rois", str(rois), "--out", str(out),
        "--workers", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return _read_rows(out)["r1"]


@pytest.fixture(params=["direct", "pydicom"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the direct readers, then with every file sent to the pydicom path
    (the header walker steps aside as it does for a header it does not understand)."""
    if request.param == "pydicom":

        def unusual(fh: object) -> None:
            raise load_mod._Unusual("test: pydicom path")

        monkeypatch.setattr(load_mod, "_read_pixel_header", unusual)
    return str(request.param)


def _set(**values: object) -> Edit:
    def edit(ds: pydicom.Dataset, k: int) -> None:
        for key, value in values.items():
            setattr(ds, key, value)

    return edit


# ---------------------------------------------------------------------------------------
# Item 3: pixel data that do not fit the header
# ---------------------------------------------------------------------------------------
MISFITS = {
    "native-columns-smaller": (ExplicitVRLittleEndian, {"Columns": 80}),
    "native-columns-larger": (ExplicitVRLittleEndian, {"Columns": 112}),
    "native-rows-smaller": (ExplicitVRLittleEndian, {"Rows": 60}),
    "native-rows-larger": (ExplicitVRLittleEndian, {"Rows": 70}),
    "native-8-bits-allocated": (ExplicitVRLittleEndian, {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7}),
    "rle-columns-smaller": (RLELossless, {"Columns": 80}),
    "rle-rows-smaller": (RLELossless, {"Rows": 60}),
    "rle-columns-larger": (RLELossless, {"Columns": 112}),
    "jpegls-columns-larger": (JPEGLSLossless, {"Columns": 112}),
    "jpegls-transposed": (JPEGLSLossless, {"Rows": 96, "Columns": 64}),
    "j2k-columns-smaller": (JPEG2000Lossless, {"Columns": 80}),
    "j2k-transposed": (JPEG2000Lossless, {"Rows": 96, "Columns": 64}),
    "jpeg-lossless-columns-smaller": (JPEGLosslessSV1, {"Columns": 80}),
}  # fmt: skip


def test_control_series_measures_the_phantom(tmp_path: Path, read_path: str) -> None:
    """Unedited, every syntax measures 170 HU (so the refusals below are the edits')."""
    for ts in {ts for ts, _ in MISFITS.values()}:
        sub = tmp_path / ts
        uid = _series(sub / "dicom", ts=ts)
        row = _measure(sub, uid)
        assert row["qc_status"] != "fail" and float(row["mean_hu"]) == TARGET_HU, (ts, row)


@pytest.mark.parametrize("case", sorted(MISFITS))
def test_pixel_data_not_fitting_the_header_is_a_fail_row(
    tmp_path: Path, case: str, read_path: str
) -> None:
    ts, values = MISFITS[case]
    uid = _series(tmp_path / "dicom", _set(**values), ts=ts)
    row = _measure(tmp_path, uid)
    assert row["qc_status"] == "fail", (case, row["mean_hu"], row["qc_flags"])
    assert "series-load-failed" in row["qc_flags"]
    assert "does not describe the stored image" in row["detail"], row["detail"]
    assert row["mean_hu"] == ""


def _raw_native_file(path: Path, ds: pydicom.Dataset, pixel_bytes: bytes) -> None:
    """Write ``ds`` with ``pixel_bytes`` as its Pixel Data, of exactly that length (pydicom
    would pad an odd length)."""
    ds.PixelData = b"\0\0"
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    at = data.rindex(b"\xe0\x7f\x10\x00OB")
    struct.pack_into("<I", data, at + 8, len(pixel_bytes))
    path.write_bytes(bytes(data[: at + 12]) + pixel_bytes)


@pytest.mark.parametrize(("extra", "ok"), [(0, True), (1, True), (2, False), (-1, False)])
def test_only_one_padding_byte_is_allowed_for_odd_lengths(
    tmp_path: Path, extra: int, ok: bool, read_path: str
) -> None:
    """8-bit 63 × 95 images (an odd 5,985 bytes): one padding byte is fine, two are not."""
    rows, cols = 63, 95
    stored = (np.arange(rows * cols) % 200).astype(np.uint8).reshape(rows, cols)
    paths = write_ct_series(tmp_path, np.zeros((2, rows, cols)), intercept=-1024)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        pixels = stored.tobytes() + b"\0" * max(extra, 0)
        _raw_native_file(p, ds, pixels[: len(pixels) + extra] if extra < 0 else pixels)
    info = index_folder(tmp_path).series[0]
    if ok:
        vol = load_series(info)
        assert np.array_equal(vol.hu[1], stored.astype(np.int16) - 1024)
    else:
        with pytest.raises(DicomReadError, match="does not describe the stored image"):
            load_series(info)


# ---------------------------------------------------------------------------------------
# Item 8: rescale values, checked on every slice read
# ---------------------------------------------------------------------------------------
def _on_slice(k0: int, **values: object) -> Edit:
    def edit(ds: pydicom.Dataset, k: int) -> None:
        if k == k0:
            for key, value in values.items():
                setattr(ds, key, value)

    return edit


RESCALE_CASES = {
    "slope-0-on-the-roi-slice": (_on_slice(2, RescaleSlope=0), "RescaleSlope is 0"),
    "slope-1e300-everywhere": (_set(RescaleSlope="1e300"), "beyond the float32 range"),
    "slope-1e300-on-the-roi-slice": (_on_slice(2, RescaleSlope="1e300"), "beyond the float32 range"),
    "intercept-1e300-on-the-roi-slice": (_on_slice(2, RescaleIntercept="1e300"), "beyond the float32 range"),
    "slope-garbled-on-the-roi-slice": (_on_slice(2, RescaleSlope="1\\2"), "RescaleSlope"),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # writing NaN/inf with pydicom
@pytest.mark.parametrize("case", sorted(RESCALE_CASES))
def test_bad_rescale_on_a_slice_read_is_a_fail_row(
    tmp_path: Path, case: str, read_path: str
) -> None:
    edit, reason = RESCALE_CASES[case]
    uid = _series(tmp_path / "dicom", edit)
    row = _measure(tmp_path, uid)
    assert row["qc_status"] == "fail", (case, row["mean_hu"], row["qc_flags"])
    assert "series-load-failed" in row["qc_flags"]
    assert reason in row["detail"], row["detail"]
    assert row["mean_hu"] == ""


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # writing NaN/inf with pydicom
@pytest.mark.parametrize("value", ["NaN", "inf", "-inf"])
def test_non_finite_rescale_is_refused_at_read_time(
    tmp_path: Path, value: str, read_path: str
) -> None:
    """The index skips such a file; a file edited after indexing (or a stale header cache)
    still never gives HU: the loader checks every slice it reads."""
    _series(tmp_path)
    info = index_folder(tmp_path).series[0]
    p = Path(info.slices[2].path)
    ds = pydicom.dcmread(p)
    ds.RescaleSlope = value
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(DicomReadError, match="is not finite"):
        load_series(info, slices=[2])
    load_series(info, slices=[1, 3])  # the other slices still load


def test_bad_rescale_on_a_slice_not_read_does_not_matter(tmp_path: Path, read_path: str) -> None:
    """Only the slices an ROI touches are read (and checked)."""
    uid = _series(tmp_path / "dicom", _on_slice(0, RescaleSlope=0))
    row = _measure(tmp_path, uid)
    assert row["qc_status"] != "fail" and float(row["mean_hu"]) == TARGET_HU, row


def test_volume_exposes_every_slices_rescale(tmp_path: Path, read_path: str) -> None:
    """Per-slice RescaleSlope/Intercept as read, for checks that must see every slice."""

    def edit(ds: pydicom.Dataset, k: int) -> None:
        if k == 2:  # same HU, stored differently: slope 2, intercept -1000
            ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
            ds.PixelData = ((ds.pixel_array.astype(np.int32) - 24) // 2).astype(np.uint16).tobytes()

    _series(tmp_path, edit)
    info = index_folder(tmp_path).series[0]
    vol = load_series(info)
    assert vol.rescale_slopes is not None and vol.rescale_intercepts is not None
    assert vol.rescale_slopes.tolist() == [1, 1, 2, 1, 1]
    assert vol.rescale_intercepts.tolist() == [-1024, -1024, -1000, -1024, -1024]
    assert np.array_equal(vol.hu, _phantom().astype(np.int16))
    part = load_series(info, slices=[2, 4])
    assert part.rescale_slopes is not None and part.rescale_slopes.tolist() == [2, 1]


# ---------------------------------------------------------------------------------------
# Items 3 (warnings) and issue 12 item 12 (GDCM's lines): nothing on stderr but hu-roi's
# ---------------------------------------------------------------------------------------
def _without_preamble(**values: object) -> Edit:
    """Write the file without preamble and file meta (the pydicom path reads it)."""

    def edit(ds: pydicom.Dataset, k: int) -> bool:
        for key, value in values.items():
            setattr(ds, key, value)
        with open(ds.filename, "wb") as fh:
            out = DicomFileLike(fh)
            out.is_little_endian, out.is_implicit_VR = True, False
            write_dataset(out, ds)
        return False

    return edit


def _corrupt_stream(k0: int) -> Edit:
    """Damage the compressed stream of slice ``k0``: a third of it, then junk, then EOI."""

    def edit(ds: pydicom.Dataset, k: int) -> None:
        if k == k0:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            data = frame[: len(frame) // 3] + bytes(range(256)) * 8 + frame[-2:]
            ds.PixelData = encapsulate([data + b"\0" * (len(data) % 2)])

    return edit


#: Broken series whose reading made Python warnings, a Rust panic or decoder lines
#: reach stderr before (what leaked is in the comment).
NOISY = {
    "pydicom-excess-padding": (ExplicitVRLittleEndian, _without_preamble(Columns=80)),  # UserWarning
    "slope-1e300": (ExplicitVRLittleEndian, _set(RescaleSlope="1e300")),  # RuntimeWarning: overflow
    "rle-columns-smaller": (RLELossless, _set(Columns=80)),  # "thread panicked" + traceback
    "jpeg-lossless-corrupt": (JPEGLosslessSV1, _corrupt_stream(2)),  # "Corrupt JPEG data: ..."
    "jpegls-corrupt": (JPEGLSLossless, _corrupt_stream(2)),
    "j2k-corrupt": (JPEG2000Lossless, _corrupt_stream(2)),
}  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "2"])
def test_measure_prints_nothing_but_its_own_lines(tmp_path: Path, workers: str) -> None:
    """A subprocess (so fd 2 is real): every broken ROI a fail row with the reason, stderr
    only hu-roi's summary, no Python warning (shown: PYTHONWARNINGS=default), no decoder
    line, no panic; in process and with worker processes."""
    rois = []
    for name, (ts, edit) in NOISY.items():
        rois.append(_roi(_series(tmp_path / "dicom" / name, edit, ts=ts), name))
    roi_file = _write_rois(tmp_path / "all.rois.json", rois)
    out = tmp_path / "m.csv"
    env = dict(os.environ, PYTHONWARNINGS="default", RUST_BACKTRACE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "measure", "--dicom", str(tmp_path / "dicom"),
         "--rois", str(roi_file), "--out", str(out), "--workers", workers],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(ln.startswith(("hu-roi measure: ", "  ")) for ln in lines), proc.stderr
    for word in ("Warning", "warn(", "panicked", "Traceback", "Corrupt JPEG", "JPEG"):
        assert word not in proc.stderr, proc.stderr
    rows = _read_rows(out)
    for name in NOISY:
        assert rows[name]["qc_status"] == "fail", (name, rows[name]["mean_hu"])
        assert "series-load-failed" in rows[name]["qc_flags"], rows[name]["qc_flags"]
        assert rows[name]["detail"], name


def test_gdcm_lines_are_logged_at_debug_and_the_slice_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """GDCM/libjpeg decode a damaged lossless stream with only a "Corrupt JPEG data" line on
    fd 2 and invented pixels (up to 64,501 HU measured): the slice is refused, the line
    goes to the debug log, nothing to fd 2."""
    if not load_mod._GDCM_AVAILABLE:
        pytest.skip("python-gdcm is not installed")
    _series(tmp_path, _corrupt_stream(2), ts=JPEGLosslessSV1)
    info = index_folder(tmp_path).series[0]
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="hu_roi.io.load"):
        with pytest.raises(DicomReadError, match="compressed stream is damaged"):
            load_series(info, slices=[2], workers=1)
    assert capfd.readouterr().err == ""
    assert any("Corrupt JPEG data" in r.getMessage() for r in caplog.records), caplog.text
    vol = load_series(info, slices=[1, 3], workers=1)  # the others are fine
    assert np.array_equal(vol.hu, _phantom()[[1, 3]].astype(np.int16))


@pytest.mark.realct
@pytest.mark.parametrize("damage", ["truncated", "junk", "columns"])
def test_real_jpeg2000_damaged_in_a_subprocess(real_ct: Path, tmp_path: Path, damage: str) -> None:
    """The real JPEG 2000 slice of ../shared/real_ct with its stream cut or overwritten, or
    Columns 500 for its 512-column stream: a one-line DicomReadError, nothing on fd 2
    (before: GDCM's openjpeg printed "Tile part length size inconsistent with stream
    length" twice, and the wrong Columns reached the decoders)."""
    ds = pydicom.dcmread(real_ct / "robustness" / "pancreas_ct_flipped_j2k" / "explicit_VR-UN.dcm")
    if damage == "columns":
        ds.Columns = 500
    else:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        cut = len(frame) // 3 if damage == "junk" else len(frame) // 2
        data = frame[:cut] + (bytes(range(256)) * 8 + frame[-2:] if damage == "junk" else b"")
        ds.PixelData = encapsulate([data + b"\0" * (len(data) % 2)])
    ds.save_as(tmp_path / "slice.dcm")
    code = (
        "import sys\nfrom hu_roi.io import index_folder, load_series\n"
        "info = index_folder(sys.argv[1]).series[0]\n"
        "try:\n    load_series(info, accept=info.problems)\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.stderr == ""
    assert proc.stdout.startswith("DicomReadError ") and proc.stdout.count("\n") == 1, proc.stdout
    expected = "does not describe the stored image" if damage == "columns" else "cannot decode"
    assert expected in proc.stdout
