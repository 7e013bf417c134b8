"""Generate the bad-input corpus: real, pydicom-written files broken in known ways.

Nothing here is committed as DICOM: :func:`make_corpus` writes every case into a folder
at test time (a session fixture puts it in a pytest tmp dir) and returns, per case, what
hu-roi must do with it (:class:`Expectation`).  Each case lives in its own sub-folder
``dest/<case>/`` so it can be indexed alone, and the whole ``dest`` can be indexed at once
(the expectations add up: counts of series and skipped files are per case).

Every case that can hold one also holds a *valid* series next to the bad file, so that the
tests can check that the rest of the batch completes.

Cases that cannot be made meaningfully on this machine are left out of the returned dict
and listed, with the reason, in :data:`OMITTED` (e.g. permission-denied files when
running as root, where ``chmod 000`` does not prevent reading).  :data:`CASES` names every
case that can exist, so tests can be parametrised before the corpus is written.

Run as a script to write a corpus for manual inspection::

    .venv/bin/python tests/bad_input/make_corpus.py /tmp/hu_roi_bad_corpus
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.fileset import FileSet
from pydicom.uid import (
    EnhancedCTImageStorage,
    JPEGBaseline8Bit,
    MRImageStorage,
    generate_uid,
)

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # dicom_factory lives in tests/
    sys.path.insert(0, str(_TESTS))

from dicom_factory import UID_ROOT, write_ct_series  # noqa: E402

#: HU value of the valid phantoms (uniform soft tissue), so measured means are known.
PHANTOM_HU = 40.0
#: Slices, rows and columns of the phantoms.
SHAPE = (4, 24, 24)
#: Pixel spacing (ΔR, ΔC) of the phantoms, mm.
SPACING = (0.8, 0.8)

#: Case-independent reasons (regular expressions) used in the expectations.
R_NOT_DICOM = r"^not a DICOM file"
R_NO_IMAGE = r"^no image in this file"
R_CANNOT_READ = r"^cannot read file"
R_DUPLICATE_SOP = r"^duplicate SOPInstanceUID \(same as .+\); ignored$"
R_LOOP = r"^(folder already visited \(symbolic-link loop\)|symbolic-link loop \(links to a folder that contains the tree\); not followed)$"
R_DICOMDIR = r"^DICOMDIR \(a directory index, not an image\)$"
R_NOT_REGULAR = r"not a regular file"
R_DECODE = r"cannot (decode pixel data|read)"
#: Pixel data shorter than the header claims (truncated file or short element).
R_SHORT_PIXELS = rf"({R_DECODE}|the file is truncated|the file is damaged)"

#: Every case :func:`make_corpus` can write (some only on some systems: see OMITTED).
CASES: tuple[str, ...] = (
    "good",
    "truncated_header",
    "truncated_pixels",
    "zero_byte",
    "garbled_header",
    "unknown_vr",
    "swallowed_elements",
    "short_pixel_data",
    "dicomdir",
    "pdf_named_dcm",
    "png_named_dcm",
    "other_files",
    "missing_pixel_spacing",
    "missing_position",
    "missing_orientation",
    "nan_position",
    "zero_pixel_spacing",
    "degenerate_orientation",
    "missing_rescale",
    "garbled_rescale",
    "non_ct_modality",
    "localizer",
    "multiframe",
    "missing_slices",
    "duplicate_sop",
    "symlink_loop",
    "symlink_to_root",
    "dangling_symlink",
    "fifo",
    "unreadable",
    "long_path",
    "beyond_path_max",
    "non_ascii",
    "non_utf8",
    "huge_dimensions",
    "zeros_after_preamble",
    "claims_more_pixels",
    "bad_compression",
    "no_image_object",
)

#: Cases not generated on this machine, with the reason (filled by :func:`make_corpus`).
OMITTED: dict[str, str] = {}


@dataclass(frozen=True)
class Expectation:
    """What hu-roi must do with one corpus case (folder ``dest/<case>``).

    Attributes
    ----------
    description : str
        What is broken.
    n_series : int
        Series :func:`hu_roi.io.index_folder` must find in the case folder.
    n_slices : tuple of int
        Slices per series, in the index's order (sorted by patient, date, key).
    problems : tuple of tuple of str
        Exact problem codes per series.
    skipped : tuple of str
        One regular expression per skipped file (sorted by path) that its reason matches.
    load_error : str or None
        None when every series loads; else ``"<ErrorClass>:<regex>"`` the load of the
        (first) series must raise.
    measure : str or None
        Expected ``qc_status`` of an ROI placed in the middle of the first series
        (``pass``, ``warn`` or ``fail``); None when the case has no series.
    measure_flag : str
        Regular expression ``qc_flags`` must match (empty: anything).
    series_uid : str
        SeriesInstanceUID of the first series ("" when none).
    roi_z_mm : float
        z (LPS, mm) of the test ROI's centre: the slice with the broken file when only one
        slice is broken (the phantoms' slices lie at z = 0, 1, 2, ...).
    """

    description: str
    n_series: int = 1
    n_slices: tuple[int, ...] = (SHAPE[0],)
    problems: tuple[tuple[str, ...], ...] = ((),)
    skipped: tuple[str, ...] = ()
    load_error: str | None = None
    measure: str | None = "pass"
    measure_flag: str = ""
    series_uid: str = ""
    roi_z_mm: float = 1.0
    extra: dict[str, object] = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------
def _series(folder: Path, n: int = SHAPE[0], **kw: object) -> tuple[list[Path], str]:
    """A valid uniform phantom series; returns (files in slice order, SeriesInstanceUID)."""
    uid = generate_uid(prefix=UID_ROOT)
    hu = np.full((n, SHAPE[1], SHAPE[2]), PHANTOM_HU)
    kw.setdefault("pixel_spacing", SPACING)
    paths = write_ct_series(folder, hu, series_uid=uid, **kw)  # type: ignore[arg-type]
    return paths, uid


def _png_bytes(width: int = 8, height: int = 8) -> bytes:
    """A real (tiny, grey) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


_PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)


def _pixel_data_offset(raw: bytes) -> int:
    """Byte offset of the (7FE0,0010) PixelData tag in an explicit-VR little-endian file."""
    i = raw.rfind(b"\xe0\x7f\x10\x00")
    if i < 0:
        raise ValueError("no PixelData tag found")
    return i


def _rewrite(path: Path, dest: Path | None = None, **changes: object) -> Path:
    """Read a file with pydicom, set (or with None delete) attributes, save it."""
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    out = dest or path
    ds.save_as(out, enforce_file_format=False)
    return out


# ---------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------
def make_corpus(dest: Path, *, include_fifo: bool = True) -> dict[str, Expectation]:
    """Write every bad-input case under ``dest`` and return what hu-roi must do with each.

    Parameters
    ----------
    dest : Path
        Empty or missing folder; one sub-folder per case is created.
    include_fifo : bool
        Also write a named pipe with a ``.dcm`` name (opening it for reading blocks
        forever unless the indexer skips non-regular files).

    Returns
    -------
    dict of str -> Expectation
        Keyed by case name (= sub-folder name).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Expectation] = {}
    n = SHAPE[0]

    # -- a clean series: the reference the others are compared with -------------------
    _, uid = _series(dest / "good")
    cases["good"] = Expectation("a valid 4-slice CT series", series_uid=uid)

    # -- truncated files ---------------------------------------------------------------
    paths, uid = _series(dest / "truncated_header", n + 1)
    raw = paths[-1].read_bytes()
    paths[-1].write_bytes(raw[:300])  # cut inside the data set, long before PixelData
    cases["truncated_header"] = Expectation(
        "last slice cut to 300 bytes (inside the header)",
        skipped=(rf"({R_NO_IMAGE}|truncated)",),
        series_uid=uid,
    )

    paths, uid = _series(dest / "truncated_pixels")
    raw = paths[-1].read_bytes()
    cut = _pixel_data_offset(raw) + 12 + 100  # tag+VR+length, then 100 of 512 pixel bytes
    paths[-1].write_bytes(raw[:cut])
    cases["truncated_pixels"] = Expectation(
        "last slice cut inside its pixel data (header intact)",
        load_error=f"DicomReadError:{R_SHORT_PIXELS}",
        measure="fail",
        measure_flag="series-load-failed",
        series_uid=uid,
        roi_z_mm=float(SHAPE[0] - 1),
        extra={"bad_file": str(paths[-1])},
    )

    # -- zero bytes, garbage -----------------------------------------------------------
    _, uid = _series(dest / "zero_byte")
    (dest / "zero_byte" / "empty.dcm").write_bytes(b"")
    cases["zero_byte"] = Expectation(
        "a zero-byte .dcm file", skipped=(R_NOT_DICOM,), series_uid=uid
    )

    paths, uid = _series(dest / "garbled_header")
    raw = bytearray(paths[0].read_bytes())
    raw[132:200] = b"\xff" * 68  # after 'DICM': the file meta group is destroyed
    (dest / "garbled_header" / "garbled.dcm").write_bytes(bytes(raw))
    rng = np.random.default_rng(20260101)
    noise = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (dest / "garbled_header" / "noise.dcm").write_bytes(b"\x00" * 128 + b"DICM" + noise)
    cases["garbled_header"] = Expectation(
        "file meta overwritten with 0xFF; random bytes after a valid DICM preamble",
        skipped=(
            rf"({R_NO_IMAGE}|garbled|{R_NOT_DICOM})",
            rf"({R_NO_IMAGE}|garbled|{R_NOT_DICOM})",
        ),
        series_uid=uid,
    )

    paths, uid = _series(dest / "unknown_vr")
    raw = bytearray(paths[0].read_bytes())
    i = raw.index(b"\x08\x00\x16\x00UI")  # (0008,0016) SOPClassUID in the data set
    raw[i + 4 : i + 6] = b"TI"  # one flipped bit: a VR pydicom does not know
    (dest / "unknown_vr" / "bad_vr.dcm").write_bytes(bytes(raw))
    cases["unknown_vr"] = Expectation(
        "a copy of a slice whose SOPClassUID has the unknown VR 'TI' (one flipped bit)",
        skipped=(r"^garbled DICOM header",),
        series_uid=uid,
    )

    paths, uid = _series(dest / "swallowed_elements")
    raw = bytearray(paths[0].read_bytes())
    i = raw.index(b"\x08\x00\x16\x00UI")
    j = raw.index(b"\x10\x00\x30\x00DA")  # (0010,0030) PatientBirthDate
    end = j + 8 + int.from_bytes(raw[j + 6 : j + 8], "little")
    raw[i + 6 : i + 8] = (end - (i + 8)).to_bytes(2, "little")  # SOPClassUID swallows all
    (dest / "swallowed_elements" / "swallowed.dcm").write_bytes(bytes(raw))
    cases["swallowed_elements"] = Expectation(
        "a copy of a slice whose SOPClassUID length swallows the elements up to the birth date",
        skipped=(r"^garbled DICOM header: \w+ holds binary data$",),
        series_uid=uid,
    )

    paths, uid = _series(dest / "short_pixel_data")
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # well-formed, but half as long
    ds.save_as(paths[1], enforce_file_format=True)
    cases["short_pixel_data"] = Expectation(
        "one slice's PixelData holds half of Rows x Columns x 2 bytes",
        load_error=f"DicomReadError:{R_SHORT_PIXELS}",
        measure="fail",
        measure_flag="series-load-failed",
        series_uid=uid,
    )

    # -- DICOMDIR, other file types with .dcm names --------------------------------------
    src, uid = _series(dest / "_dicomdir_src", 3)
    fs = FileSet()
    for p in src:
        fs.add(pydicom.dcmread(p))
    fs.write(dest / "dicomdir")
    shutil.rmtree(dest / "_dicomdir_src")
    cases["dicomdir"] = Expectation(
        "a DICOMDIR with its referenced images (pydicom FileSet layout)",
        n_slices=(3,),
        skipped=(R_DICOMDIR,),
        series_uid=uid,
    )

    _, uid = _series(dest / "pdf_named_dcm")
    (dest / "pdf_named_dcm" / "report.dcm").write_bytes(_PDF)
    cases["pdf_named_dcm"] = Expectation(
        "a PDF document named report.dcm", skipped=(R_NOT_DICOM,), series_uid=uid
    )

    _, uid = _series(dest / "png_named_dcm")
    (dest / "png_named_dcm" / "screenshot.dcm").write_bytes(_png_bytes())
    cases["png_named_dcm"] = Expectation(
        "a PNG image named screenshot.dcm", skipped=(R_NOT_DICOM,), series_uid=uid
    )

    _, uid = _series(dest / "other_files")
    (dest / "other_files" / "README.txt").write_text("scanned at site 3\n")
    (dest / "other_files" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 60)
    cases["other_files"] = Expectation(
        "README.txt and .DS_Store next to the images",
        skipped=(R_NOT_DICOM, R_NOT_DICOM),
        series_uid=uid,
    )

    # -- missing or invalid geometry and rescale ---------------------------------------
    for case, tag, value in (
        ("missing_pixel_spacing", "PixelSpacing", None),
        ("missing_position", "ImagePositionPatient", None),
        ("missing_orientation", "ImageOrientationPatient", None),
        ("nan_position", "ImagePositionPatient", ["nan", "0", "0"]),
    ):
        with warnings.catch_warnings():  # pydicom warns about writing 'nan' as DS
            warnings.simplefilter("ignore")
            _series(dest / case, extra_tags={tag: value})
        cases[case] = Expectation(
            f"{tag} {'missing' if value is None else 'NaN'} in every file",
            n_series=0,
            n_slices=(),
            problems=(),
            skipped=(rf"^missing or invalid {tag}",) * n,
            measure=None,
        )
    _series(dest / "zero_pixel_spacing", extra_tags={"PixelSpacing": [0.0, 0.8]})
    cases["zero_pixel_spacing"] = Expectation(
        "PixelSpacing 0",
        n_series=0,
        n_slices=(),
        problems=(),
        skipped=(r"^PixelSpacing .* is not positive$",) * n,
        measure=None,
    )
    _series(dest / "degenerate_orientation", extra_tags={"ImageOrientationPatient": [0] * 6})
    cases["degenerate_orientation"] = Expectation(
        "ImageOrientationPatient all zero",
        n_series=0,
        n_slices=(),
        problems=(),
        skipped=(r"^ImageOrientationPatient .* is not two orthonormal vectors$",) * n,
        measure=None,
    )

    _, uid = _series(dest / "missing_rescale", extra_tags={"RescaleIntercept": None})
    cases["missing_rescale"] = Expectation(
        "RescaleIntercept missing: stored values (HU + 1024) would be taken as HU",
        problems=(("no-rescale",),),
        measure="warn",
        measure_flag=r"no-rescale",
        series_uid=uid,
    )

    paths, uid = _series(dest / "garbled_rescale")
    raw = paths[1].read_bytes()
    assert raw.count(b"-1024.0") == 1
    paths[1].write_bytes(raw.replace(b"-1024.0", b",1024.0"))  # one flipped bit
    cases["garbled_rescale"] = Expectation(
        "one slice's RescaleIntercept is ',1024.0' (not a number)",
        # the file is skipped naming the tag, never quoting the value; the ROI lies on
        # its slice, now missing: not measured on a neighbour
        n_slices=(SHAPE[0] - 1,),
        problems=(("non-uniform-spacing",),),
        skipped=(r"^garbled DICOM header: RescaleIntercept is not a finite number$",),
        measure="fail",
        measure_flag=r"roi-slice-tie|roi-in-gap",
        series_uid=uid,
    )

    # -- series hu-roi must not measure ------------------------------------------------
    _, uid = _series(
        dest / "non_ct_modality",
        extra_tags={"Modality": "MR", "SOPClassUID": MRImageStorage},
    )
    cases["non_ct_modality"] = Expectation(
        "an MR series",
        problems=(("not-ct",),),
        load_error="SeriesProblemError:not-ct",
        measure="fail",
        measure_flag="not-ct",
        series_uid=uid,
    )

    _, uid = _series(
        dest / "localizer", 1, extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}
    )
    cases["localizer"] = Expectation(
        "a one-image scout (ImageType LOCALIZER)",
        n_slices=(1,),
        problems=(("localizer", "single-slice"),),
        load_error="SeriesProblemError:localizer",
        measure="fail",
        measure_flag="localizer",
        series_uid=uid,
    )

    src, _ = _series(dest / "_mf_src", 1)
    uid = generate_uid(prefix=UID_ROOT)
    ds = pydicom.dcmread(src[0])
    frame = ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SeriesInstanceUID = uid
    ds.NumberOfFrames = 3
    ds.PixelData = frame * 3
    (dest / "multiframe").mkdir()
    ds.save_as(dest / "multiframe" / "enhanced.dcm", enforce_file_format=True)
    shutil.rmtree(dest / "_mf_src")
    cases["multiframe"] = Expectation(
        "one Enhanced CT file with 3 frames",
        n_slices=(1,),
        problems=(("multiframe",),),
        load_error="SeriesProblemError:multiframe",
        measure="fail",
        measure_flag="multiframe",
        series_uid=uid,
    )

    _, uid = _series(dest / "missing_slices", 5, slice_positions=[0, 1, 2, 4, 5])
    cases["missing_slices"] = Expectation(
        "a gap of one slice in the middle",
        n_slices=(5,),
        problems=(("missing-slices",),),
        load_error="SeriesProblemError:missing-slices",
        # the ROI's own slice is present: measured, with the series problem as a warning
        measure="warn",
        measure_flag="series-missing-slices",
        series_uid=uid,
    )

    # -- duplicates, links, special files ----------------------------------------------
    paths, uid = _series(dest / "duplicate_sop")
    shutil.copyfile(paths[1], dest / "duplicate_sop" / "zz_copy_of_slice2.dcm")
    cases["duplicate_sop"] = Expectation(
        "a byte-identical copy of one slice under another name",
        skipped=(R_DUPLICATE_SOP,),
        series_uid=uid,
    )

    _, uid = _series(dest / "symlink_loop")
    os.symlink(".", dest / "symlink_loop" / "loop")
    cases["symlink_loop"] = Expectation(
        "a symbolic link to its own folder (loop)", skipped=(R_LOOP,), series_uid=uid
    )

    _, uid = _series(dest / "symlink_to_root")
    os.symlink("/", dest / "symlink_to_root" / "everything")
    os.symlink("..", dest / "symlink_to_root" / "parent")
    cases["symlink_to_root"] = Expectation(
        "links to / and to .. (loops that would walk the whole file system first)",
        skipped=(
            r"^symbolic-link loop \(links to a folder that contains the tree\); not followed$",
        )
        * 2,
        series_uid=uid,
    )

    _, uid = _series(dest / "dangling_symlink")
    os.symlink("does-not-exist.dcm", dest / "dangling_symlink" / "gone.dcm")
    cases["dangling_symlink"] = Expectation(
        "a symbolic link to a missing file (unreadable entry)",
        skipped=(R_CANNOT_READ,),
        series_uid=uid,
    )

    if not include_fifo:
        OMITTED["fifo"] = "left out on request (include_fifo=False)"
    elif hasattr(os, "mkfifo"):
        _, uid = _series(dest / "fifo")
        os.mkfifo(dest / "fifo" / "pipe.dcm")
        cases["fifo"] = Expectation(
            "a named pipe called pipe.dcm (reading it would block forever)",
            skipped=(R_NOT_REGULAR,),
            series_uid=uid,
        )

    if os.name == "posix" and os.geteuid() != 0:
        paths, uid = _series(dest / "unreadable")
        locked = dest / "unreadable" / "locked.dcm"
        shutil.copyfile(paths[0], locked)
        os.chmod(locked, 0)
        cases["unreadable"] = Expectation(
            "a file without read permission (chmod 000)",
            skipped=(rf"{R_CANNOT_READ}.*(Permission denied|Errno 13)",),
            series_uid=uid,
        )
    else:
        OMITTED["unreadable"] = (
            "running as root: chmod 000 does not prevent reading, so a permission-denied "
            "file cannot be made here; tests/test_bad_input.py::"
            "test_unreadable_entries_as_unprivileged_user indexes one as uid 65534"
        )

    # -- names -------------------------------------------------------------------------
    deep = dest / "long_path"
    for k in range(10):
        deep = deep / (f"{k}" + "d" * 240)  # ~2,500 characters below dest
    _, uid = _series(deep)
    (deep / ("n" * 250 + ".dcm")).write_bytes(b"")  # 254-character file name
    cases["long_path"] = Expectation(
        "a series 10 folders of 241 characters deep and a 254-character file name",
        skipped=(R_NOT_DICOM,),
        series_uid=uid,
    )

    if sys.platform.startswith("linux"):
        _, uid = _series(dest / "beyond_path_max")
        fd = os.open(dest / "beyond_path_max", os.O_RDONLY)
        try:  # build it relative to open folders: the full path is longer than PATH_MAX
            for k in range(20):
                name = f"{k:02d}" + "x" * 240
                os.mkdir(name, dir_fd=fd)
                sub = os.open(name, os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = sub
            leaf = os.open("deep.dcm", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.close(leaf)
        finally:
            os.close(fd)
        cases["beyond_path_max"] = Expectation(
            "a series next to a folder chain whose full path (~4,900 characters) is longer "
            "than PATH_MAX",
            skipped=(r"^cannot list folder: File name too long$",),
            series_uid=uid,
        )
    else:
        OMITTED["beyond_path_max"] = "built with dir_fd (Linux)"

    _, uid = _series(dest / "non_ascii" / "Ünïcødé 患者 ✓ (copy)")
    (dest / "non_ascii" / "Ünïcødé 患者 ✓ (copy)" / "Bericht für Ärztin.dcm").write_bytes(_PDF)
    cases["non_ascii"] = Expectation(
        "a series in a folder with accents, CJK, a symbol and spaces; a bad file beside it",
        skipped=(R_NOT_DICOM,),
        series_uid=uid,
    )

    if not sys.platform.startswith("linux"):
        OMITTED["non_utf8"] = "file names must be valid Unicode on this platform"
    else:
        bad_dir = os.fsencode(dest / "non_utf8") + b"/Serie\xe9\xff"
        os.makedirs(bad_dir)
        paths, uid = _series(Path(os.fsdecode(bad_dir)))
        with open(bad_dir + b"/scan\xfe.dcm", "wb"):
            pass  # zero bytes under a name that is not valid UTF-8
        cases["non_utf8"] = Expectation(
            "a folder and a bad file whose names are not valid UTF-8 (Latin-1 bytes)",
            skipped=(R_NOT_DICOM,),
            series_uid=uid,
        )

    # -- implausible sizes -------------------------------------------------------------
    _series(dest / "huge_dimensions", 1, extra_tags={"Rows": 65535, "Columns": 65535})
    cases["huge_dimensions"] = Expectation(
        "Rows x Columns = 65535 x 65535 (8 GiB claimed) with 512 bytes of pixel data",
        n_series=0,
        n_slices=(),
        problems=(),
        skipped=(r"^image size 65535x65535x1 is implausible; refused before reading pixels$",),
        measure=None,
    )

    _, uid = _series(dest / "zeros_after_preamble")
    with open(dest / "zeros_after_preamble" / "preallocated.dcm", "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        fh.truncate(256 * 1024 * 1024)  # sparse: 256 MiB of zeros, no disk space used
    cases["zeros_after_preamble"] = Expectation(
        "a 256 MiB (sparse) file of zeros after a valid DICM preamble: millions of empty "
        "elements for a naive parser",
        skipped=(r"^header still not finished after \d+ reads",),
        series_uid=uid,
    )

    _, uid = _series(dest / "claims_more_pixels", extra_tags={"Rows": 8000, "Columns": 8000})
    cases["claims_more_pixels"] = Expectation(
        "Rows x Columns = 8000 x 8000 (128 MB per slice) with 512 bytes of pixel data",
        load_error=f"DicomReadError:{R_SHORT_PIXELS}",
        measure="fail",
        measure_flag="series-load-failed",
        series_uid=uid,
    )

    paths, uid = _series(dest / "bad_compression")
    ds = pydicom.dcmread(paths[2])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 this is not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(paths[2], enforce_file_format=True)
    cases["bad_compression"] = Expectation(
        "one slice says JPEG Baseline but holds a broken JPEG stream",
        load_error=f"DicomReadError:{R_DECODE}",
        measure="fail",
        measure_flag="series-load-failed",
        series_uid=uid,
        roi_z_mm=2.0,
    )

    # a DICOM object without pixels (as an SR or a presentation state would be)
    _, uid = _series(dest / "no_image_object")
    src = sorted((dest / "no_image_object").iterdir())[0]
    ds = pydicom.dcmread(src)
    for kw in ("PixelData", "Rows", "Columns"):
        delattr(ds, kw)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.save_as(dest / "no_image_object" / "sr.dcm", enforce_file_format=True)
    cases["no_image_object"] = Expectation(
        "a DICOM object without Rows/Columns/PixelData (Basic Text SR)",
        skipped=(R_NO_IMAGE,),
        series_uid=uid,
    )

    for name, exp in cases.items():
        assert name in CASES, name
        assert exp.n_series == len(exp.n_slices) == len(exp.problems), name
    return cases


if __name__ == "__main__":  # pragma: no cover - manual use
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bad_corpus")
    for case, exp in make_corpus(out).items():
        print(f"{case:24s} {exp.description}")
    for case, why in OMITTED.items():
        print(f"{case:24s} OMITTED: {why}")
