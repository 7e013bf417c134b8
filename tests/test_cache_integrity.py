"""The header cache never hands back another file's header, never crashes on what it
holds, never destroys what it stored, and keeps it private (hu_roi.io.cache).

* Files swapped by rename with their size and mtime restored (what unzip, tar, rsync or
  ``touch -r`` leave) are read again: inode and ctime are part of the entry's stamp.
* A stale entry that still slips through (simulated by writing the new stamps into the
  database) cannot give another slice's HU: the loader checks the SOP Instance UID of
  every file it reads and the ROI becomes a ``fail`` row.
* Entries of the wrong shape or type are misses (``hu-roi index`` and ``measure`` run
  unchanged, in process through the real CLI).
* Write errors (file size limit reached while writing, a folder in place of the WAL
  file, another program's database) leave the stored entries intact.
* Files 0600, folder 0700.

All DICOM files are written with pydicom (tests/dicom_factory.py).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.io import index_folder, load_series
from hu_roi.io.cache import FILE_NAME, HeaderCache
from hu_roi.io.dicom import ImageHeader, read_header

REPO = Path(__file__).resolve().parents[1]
UID = "1.2.826.0.1.3680043.10.1234.9.4711"
#: HU of each slice (slice k lies at z = k mm); the ROI is on slice 5 (79 HU) and slice 1
#: is the 801 HU slice of the bug report.
SLICE_HU = [10.0, 801.0, 20.0, 30.0, 40.0, 79.0, 50.0, 60.0]
ROI_SLICE, OTHER_SLICE = 5, 1


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder for the CLI of this test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(folder))
    return folder


#: Image size (pixels of 1 mm) and centre (mm) of the phantom: a disc of the slice's HU
#: in air, so the automatic air check has air and the ROI passes QC.
N = 48
CENTRE = 24.0


def _slices(n: int = N) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    body = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 <= (0.4 * n) ** 2
    return np.stack([np.where(body, v, -1000.0) for v in SLICE_HU])


def _phantom(folder: Path) -> list[Path]:
    return write_ct_series(folder, _slices(), series_uid=UID)


def _roi_file(path: Path) -> Path:
    roi = {
        "roi_id": "P01-T0-L1",
        "patient_id": "TEST",
        "timepoint": "T0",
        "series_instance_uid": UID,
        "level": "L1",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {
            "type": "circle",
            "center_mm": [CENTRE, CENTRE, float(ROI_SLICE)],
            "radius_mm": 8.0,
        },
    }
    path.write_text(
        json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": [roi]})
    )
    return path


def _measure(tmp_path: Path, dicom: Path, name: str = "m.csv") -> dict[str, str]:
    out = tmp_path / name
    proc = run_main(
        "measure",
        "--dicom",
        str(dicom),
        "--rois",
        str(_roi_file(tmp_path / "a.rois.json")),
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    return rows[0]


def _index(tmp_path: Path, dicom: Path, name: str = "i.csv") -> str:
    out = tmp_path / name
    proc = run_main("index", str(dicom), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out.read_text()


def _swap_keeping_mtimes(a: Path, b: Path) -> None:
    """Exchange two files by rename, then give each path its old atime/mtime back."""
    sa, sb = os.stat(a), os.stat(b)
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    os.utime(a, ns=(sa.st_atime_ns, sa.st_mtime_ns))
    os.utime(b, ns=(sb.st_atime_ns, sb.st_mtime_ns))
    na, nb = os.stat(a), os.stat(b)
    assert (na.st_size, na.st_mtime_ns) == (sa.st_size, sa.st_mtime_ns)
    assert (nb.st_size, nb.st_mtime_ns) == (sb.st_size, sb.st_mtime_ns)


def _equal_size_pair(files: list[Path]) -> tuple[Path, Path]:
    a, b = files[ROI_SLICE], files[OTHER_SLICE]
    assert a.stat().st_size == b.stat().st_size, "the factory writes equal-size slices"
    return a, b


# ---------------------------------------------------------------------------------------
# 1. Swapped files
# ---------------------------------------------------------------------------------------
def test_swapped_files_with_same_size_and_mtime_are_read_again(
    tmp_path: Path, cache_dir: Path
) -> None:
    """The reported case: an L1 ROI read 801 HU ``pass`` instead of 79 after a swap."""
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    ref_index = _index(tmp_path, dicom)  # fills the cache
    assert len(HeaderCache(cache_dir / FILE_NAME)) == len(files)
    before = _measure(tmp_path, dicom)
    assert (before["qc_status"], float(before["mean_hu"])) == ("pass", 79.0)

    a, b = _equal_size_pair(files)
    _swap_keeping_mtimes(a, b)
    after = _measure(tmp_path, dicom, "m2.csv")
    assert after["qc_status"] == "pass", after
    assert float(after["mean_hu"]) == 79.0, "a header of the other file was used"
    # The index sees the same series; the two swapped paths exchanged their slices.
    assert _index(tmp_path, dicom, "i2.csv") == ref_index
    res = index_folder(dicom)
    paths = [s.path for s in res.series[0].slices]
    assert paths[ROI_SLICE] == str(b) and paths[OTHER_SLICE] == str(a)


def test_swapped_files_are_misses_and_the_others_hits(tmp_path: Path) -> None:
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        ref = index_folder(dicom, cache=cache)
    a, b = _equal_size_pair(files)
    _swap_keeping_mtimes(a, b)
    with HeaderCache(db) as cache:
        res = index_folder(dicom, cache=cache)
        assert (cache.hits, cache.misses) == (len(files) - 2, 2)
    assert cache.get_many([str(a)]) == [None]  # closed: a miss, no crash
    got = {s.path: s.sop_instance_uid for s in res.series[0].slices}
    was = {s.path: s.sop_instance_uid for s in ref.series[0].slices}
    assert got[str(a)] == was[str(b)] and got[str(b)] == was[str(a)]


def test_same_content_at_a_new_inode_is_read_again(tmp_path: Path) -> None:
    """A copy put in place with the old mtime (``cp -p`` + ``mv``) is another file."""
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        index_folder(dicom, cache=cache)
    victim = files[3]
    st = victim.stat()
    copy = victim.with_name("copy")
    copy.write_bytes(victim.read_bytes())
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, victim)
    assert victim.stat().st_ino != st.st_ino
    with HeaderCache(db) as cache:
        assert cache.get(victim) is None
        assert cache.get(files[4]) is not None


def test_header_stored_with_the_stamp_seen_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file replaced while its header is read must not be cached under its new stamp."""
    import hu_roi.io.dicom as dicom_mod

    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    other = tmp_path / "other"
    other_files = write_ct_series(other, _slices()[:1] + 500.0, series_uid=UID + ".9")
    victim = files[2]
    real = dicom_mod.read_header

    def read_then_replace(path):  # type: ignore[no-untyped-def]
        h = real(path)
        if str(path) == str(victim):  # the file changes right after its header was read
            os.replace(other_files[0], victim)
        return h

    monkeypatch.setattr(dicom_mod, "read_header", read_then_replace)
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        index_folder(dicom, cache=cache)
    monkeypatch.setattr(dicom_mod, "read_header", real)
    with HeaderCache(db) as cache:
        assert cache.get(victim) is None, "the old header was stored for the new file"


# ---------------------------------------------------------------------------------------
# 2. Read-time check of the SOP Instance UID (hu_roi.io.load)
# ---------------------------------------------------------------------------------------
def _poison(db: Path, paths: list[Path]) -> None:
    """Give the entries of ``paths`` the files' current stamps: what a stale entry would
    look like if size, mtime, ctime, inode and device could not tell the change."""
    con = sqlite3.connect(db)
    with con:
        for p in paths:
            st = os.stat(p)
            n = con.execute(
                "UPDATE headers SET size=?, mtime_ns=?, ctime_ns=?, ino=?, dev=? WHERE path=?",
                (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, str(p)),
            ).rowcount
            assert n == 1
    con.close()


def test_stale_entry_gives_a_fail_row_not_another_slice(tmp_path: Path, cache_dir: Path) -> None:
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    _index(tmp_path, dicom)
    a, b = _equal_size_pair(files)
    _swap_keeping_mtimes(a, b)
    _poison(cache_dir / FILE_NAME, [a, b])
    with HeaderCache(cache_dir / FILE_NAME) as cache:  # the poisoned entries are hits
        assert cache.get(a) is not None and cache.get(a).position[2] == ROI_SLICE  # type: ignore[union-attr]
    row = _measure(tmp_path, dicom)
    assert row["qc_status"] == "fail", row
    assert "series-load-failed" in row["qc_flags"]
    assert "SOP Instance UID differs" in row["detail"] and row["mean_hu"] == ""


@pytest.mark.parametrize(
    "syntax", ["explicit", "implicit", "deflated", "rle", "jpeg-ls", "jpeg2000", "no-preamble"]
)
def test_load_refuses_a_file_swapped_after_indexing(
    tmp_path: Path, syntax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index first (the viewer and the API keep the index), swap, then load: every read
    path (the fast walker with each direct decoder, pydicom for files the walker does not
    read) checks the UID."""
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGLSLossless,
        RLELossless,
    )

    from hu_roi.errors import DicomReadError

    ts = {
        "explicit": ExplicitVRLittleEndian,
        "implicit": ImplicitVRLittleEndian,
        "deflated": DeflatedExplicitVRLittleEndian,
        "rle": RLELossless,
        "jpeg-ls": JPEGLSLossless,
        "jpeg2000": JPEG2000Lossless,
        "no-preamble": ExplicitVRLittleEndian,
    }[syntax]
    n = 32 if syntax == "jpeg2000" else 16
    hu = np.repeat(np.asarray(SLICE_HU)[:, None, None], n * n, axis=1).reshape(-1, n, n)
    try:
        files = write_ct_series(tmp_path / "ct", hu, series_uid=UID, transfer_syntax=ts)
    except (RuntimeError, ImportError, ValueError) as exc:  # no encoder installed
        pytest.skip(f"cannot write {syntax}: {exc}")
    if syntax == "no-preamble":  # old ACR-NEMA style: the walker steps aside
        import pydicom

        for f in files:
            ds = pydicom.dcmread(f)
            ds.save_as(f, enforce_file_format=False, implicit_vr=False, little_endian=True)
            ds2 = pydicom.dcmread(f, force=True)
            del ds2.file_meta
            ds2.preamble = None
            ds2.save_as(f, enforce_file_format=False, implicit_vr=False, little_endian=True)
        assert files[0].read_bytes()[128:132] != b"DICM"
    info = index_folder(tmp_path / "ct").series[0]
    ref = load_series(info)
    assert np.array_equal(ref.hu[:, 0, 0], np.asarray(SLICE_HU, dtype=ref.hu.dtype))
    a, b = files[ROI_SLICE], files[OTHER_SLICE]
    os.rename(a, tmp_path / "t")
    os.rename(b, a)
    os.rename(tmp_path / "t", b)
    with pytest.raises(DicomReadError, match="SOP Instance UID differs") as err:
        load_series(info)
    assert str(a) in str(err.value) or str(b) in str(err.value)
    # Slices not swapped still load.
    part = load_series(info, slices=[0, 2, 3])
    assert np.array_equal(part.hu[:, 0, 0], np.asarray(SLICE_HU, dtype=part.hu.dtype)[[0, 2, 3]])
    # With two threads, and worker processes for the compressed syntaxes that use them.
    import hu_roi.io.load as load_mod

    monkeypatch.setattr(load_mod, "MIN_SLICES_PER_PROCESS", 1)
    used: list[int] = []
    real = load_mod._run_processes

    def spy(paths, out, workers):  # type: ignore[no-untyped-def]
        used.append(workers)
        return real(paths, out, workers)

    monkeypatch.setattr(load_mod, "_run_processes", spy)
    with pytest.raises(DicomReadError, match="SOP Instance UID differs"):
        load_series(info, workers=2)
    assert bool(used) == (ts in load_mod.PROCESS_DECODING)


# ---------------------------------------------------------------------------------------
# 3. Entries of the wrong shape are misses
# ---------------------------------------------------------------------------------------
def _good_entry(dicom: Path) -> list[object]:
    from hu_roi.io.cache import _encode

    return json.loads(_encode(read_header(next(p for p in sorted(dicom.iterdir())))))


def _field(name: str) -> int:
    from hu_roi.io.cache import _STORED

    return _STORED.index(name)


def _with(name: str, value: object):  # type: ignore[no-untyped-def]
    def edit(vals: list[object]) -> str:
        vals[_field(name)] = value
        return json.dumps(vals)

    return edit


#: Stored header text (or a function of a good entry's values giving it).
BAD_ENTRIES: dict[str, object] = {
    "null": "null",
    "empty-list": "[]",
    "object": '{"rows": 16}',
    "string": '"header"',
    "number": "42",
    "true": "true",
    "short-list": "[1, 2, 3]",
    "all-null": lambda vals: json.dumps([None] * len(vals)),
    "all-strings": lambda vals: json.dumps(["x"] * len(vals)),
    "one-too-many": lambda vals: json.dumps([*vals, 1]),
    "dict-for-position": _with("position", {"x": 1}),
    "nested-position": _with("position", [[1.0], [2.0], [3.0]]),
    "short-orientation": _with("orientation", [1.0, 0.0, 0.0]),
    "string-rows": _with("rows", "16"),
    "float-rows": _with("rows", 16.0),
    "bool-rows": _with("rows", True),
    "list-rows": _with("rows", [16]),
    "null-rows": _with("rows", None),
    "number-uid": _with("sop_instance_uid", 1.5),
    "null-transfer-syntax": _with("transfer_syntax", None),
    "nan-slope": lambda vals: _replace_field(vals, "rescale_slope", "NaN"),
    "infinite-position": lambda vals: _replace_field(vals, "position", "[1e400, 0.0, 0.0]"),
    "image-type-numbers": _with("image_type", [1, 2]),
    "lone-surrogate": lambda vals: _replace_field(vals, "series_description", '"\\ud800"'),
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
    # Right types, values read_header never returns (it refuses such files):
    "zero-rows": _with("rows", 0),
    "negative-columns": _with("columns", -16),
    "huge-image": _with("rows", 10**9),
    "zero-frames": _with("number_of_frames", 0),
    "no-position": _with("position", None),
    "zero-spacing": _with("pixel_spacing", [0.0, 1.0]),
    "degenerate-orientation": _with("orientation", [0.0] * 6),
    "truncated": lambda vals: json.dumps(vals)[:-5],
    "sql-null": None,
    "sql-blob": b"\x00\xff[1,2]",
    "sql-integer": 7,
}


def _replace_field(vals: list[object], name: str, raw: str) -> str:
    """The JSON of ``vals`` with field ``name`` written as the raw JSON text ``raw``."""
    parts = [json.dumps(v) for v in vals]
    parts[_field(name)] = raw
    return "[" + ",".join(parts) + "]"


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_wrong_shape_entry_is_a_miss_in_index_and_measure(
    tmp_path: Path, cache_dir: Path, case: str
) -> None:
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    ref_index = _index(tmp_path, dicom)
    ref_row = _measure(tmp_path, dicom, "ref.csv")
    bad = BAD_ENTRIES[case]
    if callable(bad):
        bad = bad(_good_entry(dicom))
    con = sqlite3.connect(cache_dir / FILE_NAME)
    with con:  # every entry, so the batch parse and the per-entry parse both meet it
        assert con.execute("UPDATE headers SET header=?", (bad,)).rowcount == len(files)
    con.close()
    with HeaderCache(cache_dir / FILE_NAME) as cache:
        assert cache.get_many([str(f) for f in files]) == [None] * len(files)
        assert cache.get(files[0]) is None
    # The real CLI: nothing crashes, the results are those of a fresh read.
    con = sqlite3.connect(cache_dir / FILE_NAME)
    with con:
        con.execute("UPDATE headers SET header=?", (bad,))
    con.close()
    assert _index(tmp_path, dicom, "i2.csv") == ref_index
    con = sqlite3.connect(cache_dir / FILE_NAME)
    with con:
        con.execute("UPDATE headers SET header=?", (bad,))
    con.close()
    row = _measure(tmp_path, dicom, "m2.csv")
    assert {k: v for k, v in row.items() if k != "measured_at"} == {
        k: v for k, v in ref_row.items() if k != "measured_at"
    }


def test_one_good_entry_among_bad_ones_is_still_a_hit(tmp_path: Path) -> None:
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        index_folder(dicom, cache=cache)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE headers SET header='null' WHERE path=?", (str(files[0]),))
        con.execute("UPDATE headers SET header=? WHERE path=?", ("[" * 5000, str(files[1])))
        con.execute("UPDATE headers SET header=NULL WHERE path=?", (str(files[2]),))
    con.close()
    with HeaderCache(db) as cache:
        got = cache.get_many([str(f) for f in files])
    assert got[:3] == [None] * 3
    assert all(isinstance(h, ImageHeader) for h in got[3:])
    assert [h.position[2] for h in got[3:]] == [3.0, 4.0, 5.0, 6.0, 7.0]  # type: ignore[union-attr]


def test_round_trip_of_real_headers(tmp_path: Path, real_ct: Path) -> None:
    """Every header of the real data decodes to itself (the checks reject nothing real)."""
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        first = index_folder(real_ct, cache=cache)
        stored = cache.stores
    assert stored > 0
    with HeaderCache(db) as cache:
        second = index_folder(real_ct, cache=cache)
        assert cache.hits == stored
    assert [s.slices for s in second.series] == [s.slices for s in first.series]


# ---------------------------------------------------------------------------------------
# 4. Write errors keep what is stored
# ---------------------------------------------------------------------------------------
def _filled_cache(tmp_path: Path) -> tuple[Path, Path, int]:
    dicom = tmp_path / "ct"
    files = _phantom(dicom)
    db = tmp_path / "cache" / FILE_NAME
    db.parent.mkdir()
    with HeaderCache(db) as cache:
        index_folder(dicom, cache=cache)
    return dicom, db, len(files)


def _hits(db: Path, dicom: Path) -> int:
    with HeaderCache(db) as cache:
        index_folder(dicom, cache=cache)
        return cache.hits


_FSIZE_CHILD = """
import os, resource, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np
from dicom_factory import write_ct_series
from hu_roi.io import index_folder
from hu_roi.io.cache import HeaderCache
import hu_roi.io.cache as cache_mod
import logging
logging.basicConfig(level=logging.WARNING)
db, tree = sys.argv[1], sys.argv[2]
write_ct_series(tree, np.zeros((120, 8, 8)))  # written before the limit
cache_mod.FLUSH_EVERY = 40  # several transactions: the first ones fit, then the disk is full
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = max(os.path.getsize(db), 32768) + 3 * 4096
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
with HeaderCache(db) as cache:
    res = index_folder(tree, cache=cache)
    state = repr(cache)
print(len(res.series), len(res.series[0].slices), state)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE needs a POSIX system")
def test_disk_full_while_writing_keeps_the_stored_entries(tmp_path: Path) -> None:
    """A real write error: the file size limit (as a full disk) is hit in the middle of
    an index; the cache stops writing and the entries stored before stay readable."""
    dicom, db, n = _filled_cache(tmp_path)
    before = db.read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _FSIZE_CHILD.format(tests=str(REPO / "tests")),
            str(db),
            str(tmp_path / "big"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    n_series, n_slices, *state = proc.stdout.split()
    assert (n_series, n_slices) == ("1", "120"), "the index itself must not suffer"
    assert db.exists() and len(db.read_bytes()) >= len(before)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    assert _hits(db, dicom) == n, "entries stored before the write error were lost"
    # The write did fail (else the test proves nothing), and the cache said so.
    assert "disabled" in " ".join(state), proc.stdout + proc.stderr
    assert "header cache error" in proc.stderr and "stored entries kept" in proc.stderr


_READ_ONLY_CHILD = """
import json, os, shutil, sys, tempfile
sys.path.insert(0, sys.argv[1])
import numpy as np
from dicom_factory import write_ct_series
from hu_roi.io import index_folder
from hu_roi.io.cache import HeaderCache

root = tempfile.mkdtemp(prefix="hu_roi_ro_cache_")
try:
    os.chmod(root, 0o755)
    old, new = os.path.join(root, "old"), os.path.join(root, "new")
    write_ct_series(old, np.zeros((4, 8, 8)))
    write_ct_series(new, np.zeros((3, 8, 8)))
    folder = os.path.join(root, "cache")
    os.mkdir(folder, 0o700)
    db = os.path.join(folder, "headers.sqlite3")
    with HeaderCache(db) as cache:  # filled by root, then handed to nobody read-only
        index_folder(old, cache=cache)
    for p in [folder] + [os.path.join(folder, n) for n in os.listdir(folder)]:
        os.chown(p, 65534, 65534)
    os.chmod(db, 0o400)  # a read-only cache file in the user's own (writable) folder
    before = open(db, "rb").read()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then index both trees with the cache
        os.close(r)
        os.setgid(65534)
        os.setuid(65534)
        with HeaderCache(db) as cache:
            n_old = len(index_folder(old, cache=cache).series[0].slices)
            n_new = len(index_folder(new, cache=cache).series[0].slices)
            state = [n_old, n_new, cache.hits, repr(cache)]
        os.write(w, json.dumps(state).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    os.chmod(db, 0o600)
    with HeaderCache(db) as cache:  # root again: what is left
        index_folder(old, cache=cache)
        left = cache.hits
    print(json.dumps([json.loads(data), open(db, "rb").read() == before, left]))
finally:
    shutil.rmtree(root, ignore_errors=True)
"""


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="needs root to drop to an unprivileged uid"
)
def test_read_only_cache_file_is_kept(tmp_path: Path) -> None:
    """A real read-only cache (mode 0400, as uid 65534 for whom that holds): lookups still
    hit, the failed write leaves the file as it was (it used to be deleted and rebuilt)."""
    proc = subprocess.run(
        [sys.executable, "-c", _READ_ONLY_CHILD, str(REPO / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    (n_old, n_new, hits, state), unchanged, left = json.loads(proc.stdout.splitlines()[-1])
    assert (n_old, n_new) == (4, 3), "the index itself must not suffer"
    assert unchanged, "the read-only cache file was rewritten"
    assert left == 4, "entries stored before were lost"
    assert hits == 4 and "disabled" in state, state  # read what it could, then stopped


def test_folder_in_place_of_the_wal_file_keeps_the_cache(tmp_path: Path) -> None:
    dicom, db, n = _filled_cache(tmp_path)
    wal = Path(str(db) + "-wal")
    wal.mkdir()
    (wal / "keep.txt").write_text("not ours")
    before = db.read_bytes()
    with HeaderCache(db) as cache:
        res = index_folder(dicom, cache=cache)
    assert len(res.series[0].slices) == n
    assert db.read_bytes() == before and (wal / "keep.txt").read_text() == "not ours"
    (wal / "keep.txt").unlink()
    wal.rmdir()
    assert _hits(db, dicom) == n


def test_folder_in_place_of_the_database_is_left_alone(tmp_path: Path) -> None:
    dicom = tmp_path / "ct"
    _phantom(dicom)
    db = tmp_path / FILE_NAME
    db.mkdir()
    (db / "inside.txt").write_text("x")
    with HeaderCache(db) as cache:
        assert "disabled" in repr(cache)
        assert len(index_folder(dicom, cache=cache).series) == 1
    assert (db / "inside.txt").read_text() == "x"


def test_another_programs_database_is_not_changed(tmp_path: Path) -> None:
    dicom = tmp_path / "ct"
    _phantom(dicom)
    db = tmp_path / FILE_NAME
    con = sqlite3.connect(db)
    with con:
        con.execute("CREATE TABLE patients (id TEXT)")
        con.execute("INSERT INTO patients VALUES ('P01')")
    con.close()
    before = db.read_bytes()
    mode = stat.S_IMODE(db.stat().st_mode)
    with HeaderCache(db) as cache:
        assert "disabled" in repr(cache)
        index_folder(dicom, cache=cache)
    assert db.read_bytes() == before and stat.S_IMODE(db.stat().st_mode) == mode


def test_symlink_in_place_of_the_database_is_not_followed(tmp_path: Path) -> None:
    dicom = tmp_path / "ct"
    _phantom(dicom)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    target.chmod(0o644)
    db = tmp_path / "cache" / FILE_NAME
    db.parent.mkdir()
    db.symlink_to(target)
    with HeaderCache(db) as cache:
        assert "disabled" in repr(cache)
        index_folder(dicom, cache=cache)
    assert target.read_text() == "keep me" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert db.is_symlink()


# ---------------------------------------------------------------------------------------
# 5. Permissions
# ---------------------------------------------------------------------------------------
def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def open_umask() -> object:
    old = os.umask(0o022)  # the usual umask, under which files would be 0644
    yield
    os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_new_cache_is_private(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dicom = tmp_path / "ct"
    _phantom(dicom)
    cache = HeaderCache.default()
    index_folder(dicom, cache=cache)
    assert _mode(cache_dir) == 0o700
    side = [Path(str(cache_dir / FILE_NAME) + s) for s in ("-wal", "-shm")]
    assert all(p.exists() for p in side)  # while it is open
    assert [_mode(p) for p in [cache_dir / FILE_NAME, *side]] == [0o600] * 3
    cache.close()
    assert _mode(cache_dir / FILE_NAME) == 0o600
    # The CLI makes the same (a fresh folder).
    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(tmp_path / "cli-cache"))
    _index(tmp_path, dicom)
    assert _mode(tmp_path / "cli-cache") == 0o700
    assert _mode(tmp_path / "cli-cache" / FILE_NAME) == 0o600


@pytest.mark.usefixtures("open_umask")
def test_existing_cache_is_tightened_when_opened(tmp_path: Path, cache_dir: Path) -> None:
    dicom = tmp_path / "ct"
    _phantom(dicom)
    with HeaderCache.default() as cache:
        index_folder(dicom, cache=cache)
    db = cache_dir / FILE_NAME
    wal = Path(str(db) + "-wal")
    wal.write_bytes(b"")  # a left-over WAL file (empty: nothing to replay)
    for p, m in ((cache_dir, 0o755), (db, 0o644), (wal, 0o666)):
        p.chmod(m)
    with HeaderCache.default() as cache:
        index_folder(dicom, cache=cache)
        assert cache.hits == len(SLICE_HU)
        assert (_mode(cache_dir), _mode(db)) == (0o700, 0o600)
        assert _mode(wal) == 0o600


@pytest.mark.usefixtures("open_umask")
def test_shared_folder_mode_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HU_ROI_CACHE_DIR=/tmp must not make /tmp private: a folder holding other files
    keeps its mode; the cache files in it are still 0600."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "someone-elses.txt").write_text("x")
    shared.chmod(0o1777)
    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(shared))
    dicom = tmp_path / "ct"
    _phantom(dicom)
    with HeaderCache.default() as cache:
        index_folder(dicom, cache=cache)
    assert _mode(shared) == 0o1777
    assert _mode(shared / FILE_NAME) == 0o600
