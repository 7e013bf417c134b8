"""Generate the benchmark data OUTSIDE the repository (default ``$TMPDIR/hu-roi-bench``).

Everything is written once and reused (a ``.done`` marker per data set); delete the
folder to regenerate.  Series are written with ``tests/dicom_factory.write_ct_series``
(real pydicom files); compressed copies with ``Dataset.compress`` (RLE, JPEG-LS,
JPEG 2000) and, for JPEG lossless (process 14 SV1), with SimpleITK/GDCM's encoder whose
stream is put into a copy of the original file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dicom_factory import write_ct_series  # noqa: E402

N_SLICES = 300
SIZE = 512
N_SERIES = 4
#: Series of the whole-process figures (``hu-roi measure`` as a command vs a SimpleITK
#: script) and of the dask worker figures.
N_PROCESS_SERIES = 12
N_COMPRESSED = 60
N_TINY = 10_000
SPACING = (0.7, 0.7)
SLICE_MM = 1.0


LEVELS = (
    [f"C{i}" for i in range(1, 8)]
    + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)]
)


def _done(folder: Path) -> bool:
    return (folder / ".done").is_file()


def _mark(folder: Path, info: dict | None = None) -> None:
    (folder / ".done").write_text(json.dumps(info or {}))


def phantom(n: int, size: int, seed: int) -> np.ndarray:
    """A body-like HU volume: air outside, soft tissue ellipse, a 'vertebra' disc, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    body = ((xx - c) / (0.42 * size)) ** 2 + ((yy - c) / (0.32 * size)) ** 2 <= 1
    vert = (xx - c) ** 2 + (yy - c - 0.12 * size) ** 2 <= (0.05 * size) ** 2
    base = np.where(body, 40.0, -1000.0).astype(np.float32)
    base[vert] = 250.0
    out = np.empty((n, size, size), dtype=np.float32)
    for k in range(n):
        noise = rng.normal(0, 15, size=(size, size)).astype(np.float32)
        out[k] = np.rint(base + np.where(body, noise, noise / 5))
    return out


def series_dir(root: Path, k: int) -> Path:
    return root / "cohort" / f"series{k}"


def make_cohort(root: Path, log=print, n: int = N_SERIES) -> list[Path]:
    """``n`` series of N_SLICES x SIZE^2 (uncompressed, explicit VR LE)."""
    out = []
    for k in range(n):
        d = series_dir(root, k)
        out.append(d)
        if _done(d):
            continue
        log(f"  writing {d} ({N_SLICES} x {SIZE}^2)")
        write_ct_series(
            d,
            phantom(N_SLICES, SIZE, seed=k),
            pixel_spacing=SPACING,
            slice_positions=np.arange(N_SLICES) * SLICE_MM,
            origin=(-SIZE * SPACING[1] / 2, -SIZE * SPACING[0] / 2, -300.0),
            extra_tags={"PatientID": f"BENCH{k:02d}"},
        )
        _mark(d)
    return out


def _series_uid(folder: Path) -> str:
    import pydicom

    f = next(p for p in sorted(folder.iterdir()) if not p.name.startswith("."))
    return str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID)


def roi_file(root: Path, k: int, n_rois: int) -> Path:
    """ROI JSON (hu-roi.roiset v1) with n_rois ROIs on distinct slices of series k."""
    path = root / "rois" / f"series{k}-{n_rois}.rois.json"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = _series_uid(series_dir(root, k))
    rois = []
    cy = -SIZE * SPACING[0] / 2 + (0.5 + 0.12) * SIZE * SPACING[0]
    for i in range(n_rois - 1):
        z = -300.0 + (20 + i * (N_SLICES - 40) // max(1, n_rois - 1)) * SLICE_MM
        rois.append(
            {
                "roi_id": f"S{k}-V{i}",
                "patient_id": f"BENCH{k:02d}",
                "timepoint": "T0",
                "series_instance_uid": uid,
                "level": LEVELS[i % len(LEVELS)],
                "irradiated": False,
                "lesion_type": "none",
                "kind": "target",
                "shape": {
                    "type": "ellipse",
                    "center_mm": [0.0, round(cy, 3), z],
                    "radii_mm": [10.0, 7.0],
                    "angle_deg": 0.0,
                },
            }
        )
    rois.append(
        {
            "roi_id": f"S{k}-air",
            "patient_id": f"BENCH{k:02d}",
            "timepoint": "T0",
            "series_instance_uid": uid,
            "level": None,
            "irradiated": None,
            "lesion_type": None,
            "kind": "reference-air",
            "shape": {
                "type": "circle",
                "center_mm": [0.0, -SIZE * SPACING[0] / 2 + 15.0, -300.0 + N_SLICES // 2],
                "radius_mm": 6.0,
            },
        }
    )
    doc = {"format": "hu-roi.roiset", "version": 1, "reader": "BENCH", "rois": rois}
    path.write_text(json.dumps(doc, indent=1))
    return path


def _hard_linked_series(src: Path, dst: Path) -> None:
    """``dst``: a real folder whose files are hard links to ``src``'s (a tree as a user's,
    without symbolic links, which hu-roi follows only with --follow-links; no copy)."""
    if dst.is_symlink():  # made by an older version of this script
        dst.unlink()
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not f.name.startswith(".") and not (dst / f.name).exists():
            os.link(f, dst / f.name)


def make_scale_roots(root: Path) -> dict[int, Path]:
    """Folders holding the first 1, 2, N_SERIES series (hard-linked files)."""
    out = {}
    for n in sorted({1, 2, N_SERIES}):
        d = root / f"scale{n}"
        for k in range(n):
            _hard_linked_series(series_dir(root, k), d / f"series{k}")
        out[n] = d
    return out


def make_process_root(root: Path, log=print) -> Path:
    """A folder holding N_PROCESS_SERIES series (hard-linked files, as make_scale_roots)."""
    make_cohort(root, log, n=N_PROCESS_SERIES)
    d = root / f"process{N_PROCESS_SERIES}"
    if _done(d):
        return d
    for k in range(N_PROCESS_SERIES):
        _hard_linked_series(series_dir(root, k), d / f"series{k}")
    _mark(d)
    return d


COMPRESSED = {
    "RLE": "1.2.840.10008.1.2.5",
    "JPEG-LS": "1.2.840.10008.1.2.4.80",
    "JPEG 2000": "1.2.840.10008.1.2.4.90",
    "JPEG lossless": "1.2.840.10008.1.2.4.70",
}


def make_compressed(root: Path, log=print) -> dict[str, Path]:
    """Compressed copies of the first N_COMPRESSED slices of series 0."""
    import pydicom

    src = series_dir(root, 0)
    files = sorted(
        (p for p in src.iterdir() if not p.name.startswith(".")),
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )[:N_COMPRESSED]
    out = {}
    for name, ts in COMPRESSED.items():
        d = root / "compressed" / name.replace(" ", "_")
        out[name] = d
        if _done(d):
            continue
        log(f"  writing {d} ({N_COMPRESSED} slices, {name})")
        d.mkdir(parents=True, exist_ok=True)
        for p in files:
            ds = pydicom.dcmread(p)
            if ts == COMPRESSED["JPEG lossless"]:
                _jpeg_lossless(ds, d / "tmp.dcm")
            else:
                ds.compress(ts, generate_instance_uid=False)
            ds.save_as(d / p.name, enforce_file_format=True)
        (d / "tmp.dcm").unlink(missing_ok=True)
        _mark(d)
    return out


def _jpeg_lossless(ds, tmp: Path) -> None:
    import pydicom
    import SimpleITK as sitk
    from pydicom.uid import JPEGLosslessSV1

    arr = ds.pixel_array
    if arr.dtype != np.uint16:
        raise ValueError("JPEG lossless bench copy expects unsigned 16-bit data")
    w = sitk.ImageFileWriter()
    w.SetFileName(str(tmp))
    w.SetUseCompression(True)
    w.SetCompressor("JPEG")
    w.Execute(sitk.GetImageFromArray(arr))
    enc = pydicom.dcmread(tmp)
    if enc.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError(f"GDCM wrote {enc.file_meta.TransferSyntaxUID}, not JPEG lossless")
    ds.PixelData = enc.PixelData
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds["PixelData"].is_undefined_length = True


def make_tiny_tree(root: Path, log=print) -> Path:
    """N_TINY tiny (8x8) CT images in 100 series of 100, written from one template.

    The template is made with pydicom; per file only fixed-width UIDs, position and
    instance number are replaced in the bytes (valid DICOM, 1000x faster than pydicom).
    """
    import pydicom

    d = root / "tiny10k"
    if _done(d):
        return d
    log(f"  writing {d} ({N_TINY} files)")
    tmpl_dir = root / "tiny-template"
    (p,) = write_ct_series(
        tmpl_dir,
        np.zeros((1, 8, 8)),
        series_uid="1.2.826.0.1.3680043.10.1234.7.99999999999",
        extra_tags={
            "SOPInstanceUID": "1.2.826.0.1.3680043.10.1234.8.888888888888",
            "ImagePositionPatient": [0.0, 0.0, 77777.125],
            "InstanceNumber": 66666,
        },
    )
    ds = pydicom.dcmread(p)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(p, enforce_file_format=True)
    tmpl = p.read_bytes()
    assert tmpl.count(b"888888888888") == 2 and tmpl.count(b"99999999999") == 1
    per_series = 100
    for s in range(N_TINY // per_series):
        sd = d / f"s{s:03d}"
        sd.mkdir(parents=True, exist_ok=True)
        for i in range(per_series):
            b = tmpl.replace(b"99999999999", f"{10**10 + s}".encode())
            b = b.replace(b"888888888888", f"{10**11 + s * per_series + i}".encode())
            b = b.replace(b"77777.125", f"{i * 1.0:09.3f}".encode())
            b = b.replace(b"66666", f"{i + 1:05d}".encode())
            (sd / f"IM{i:04d}").write_bytes(b)
    _mark(d)
    return d
