"""The persistent header cache (hu_roi.io.cache): hits, invalidation, corruption, location."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

import hu_roi.io.dicom as dicom_mod
from hu_roi.io import index_folder
from hu_roi.io.cache import FILE_NAME, HeaderCache, default_cache_dir


def _series(folder: Path, n: int = 4, **kw: object) -> list[Path]:
    hu = np.arange(n * 6 * 5, dtype=float).reshape(n, 6, 5)
    return write_ct_series(folder, hu, **kw)  # type: ignore[arg-type]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    _series(root / "a")
    _series(root / "b", n=3, pixel_spacing=(0.5, 0.5))
    (root / "notes.txt").write_text("not dicom")
    return root


def test_second_index_reads_no_header(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c" / FILE_NAME
    db.parent.mkdir()
    with HeaderCache(db) as cache:
        first = index_folder(tree, cache=cache)
        assert (cache.hits, cache.misses, cache.stores) == (0, 8, 7)
    assert len(HeaderCache(db)) == 7

    def refuse(path: object) -> None:
        raise AssertionError(f"header re-read: {path}")

    with HeaderCache(db) as cache:
        # The text file is not cached (not DICOM): it alone is read again.
        calls: list[str] = []
        real = dicom_mod.read_header

        def counting(path: object):  # type: ignore[no-untyped-def]
            calls.append(str(path))
            return real(path)  # type: ignore[arg-type]

        monkeypatch.setattr(dicom_mod, "read_header", counting)
        second = index_folder(tree, cache=cache)
        assert cache.hits == 7
        assert calls == [str(tree / "notes.txt")]
    # Everything but the direct identifiers, which the cache never stores.
    from dataclasses import replace

    assert all(s.patient_name == s.patient_birth_date == "" for s in second.series)
    assert second.series == [
        replace(s, patient_name="", patient_birth_date="") for s in first.series
    ]
    assert [s.path for s in second.skipped] == [s.path for s in first.skipped]


def test_changed_file_is_read_again(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        first = index_folder(tree, cache=cache)
    victim = Path(first.series[0].slices[0].path)
    # Rewrite the folder's first file with another intercept (same size is fine: mtime).
    folder = victim.parent
    for p in folder.iterdir():
        p.unlink()
    _series(folder, intercept=-2000)
    with HeaderCache(db) as cache:
        second = index_folder(tree, cache=cache)
        assert cache.misses >= 4
    intercepts = {s.rescale_intercept for s in second.series}
    assert -2000.0 in intercepts


def test_touched_file_is_a_miss(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        res = index_folder(tree, cache=cache)
    p = res.series[0].slices[0].path
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with HeaderCache(db) as cache:
        assert cache.get(p) is None
        other = res.series[0].slices[1].path
        h = cache.get(other)
        assert h is not None and h.path == other


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncate", "empty"],
)
def test_corrupt_cache_file_is_rebuilt(tree: Path, tmp_path: Path, damage: str) -> None:
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        ref = index_folder(tree, cache=cache)
    data = db.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "truncate":
        db.write_bytes(data[: len(data) // 2 + 100] + b"\xff" * 4000)
    else:
        db.write_bytes(b"")
    with HeaderCache(db) as cache:
        res = index_folder(tree, cache=cache)
    assert res.series == ref.series
    with HeaderCache(db) as cache:
        index_folder(tree, cache=cache)
        assert cache.hits == 7


def test_bad_entry_is_a_miss(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        ref = index_folder(tree, cache=cache)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE headers SET header='[1, 2'")  # broken JSON
    con.close()
    with HeaderCache(db) as cache:
        res = index_folder(tree, cache=cache)
        assert cache.hits == 0
    assert res.series == ref.series


@pytest.mark.parametrize("bad", ["[1, 2", "[1],[2]", "{}", '"text"'])
def test_one_bad_entry_spoils_only_itself(tree: Path, tmp_path: Path, bad: str) -> None:
    # get_many parses a whole chunk as one JSON array; a bad entry must not shift the others
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        ref = index_folder(tree, cache=cache)
    victim = str(tree / "a" / sorted(os.listdir(tree / "a"))[1])
    con = sqlite3.connect(db)
    with con:
        assert con.execute("UPDATE headers SET header=? WHERE path=?", (bad, victim)).rowcount == 1
    con.close()
    with HeaderCache(db) as cache:
        res = index_folder(tree, cache=cache)
        assert (cache.hits, cache.misses) == (6, 2)  # the victim and the text file
    # (identifiers aside: the cache never holds them)
    assert [(s.series_key, s.slices, s.problems) for s in res.series] == [
        (s.series_key, s.slices, s.problems) for s in ref.series
    ]


def test_get_many_matches_get_across_query_chunks(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hu_roi.io.cache as cache_mod

    monkeypatch.setattr(cache_mod, "QUERY_CHUNK", 2)  # several queries for 8 paths
    files = sorted(str(p) for p in tree.rglob("*") if p.is_file())
    with HeaderCache(tmp_path / FILE_NAME) as cache:
        index_folder(tree, cache=cache)
        cache.flush()
        os.utime(files[0], ns=(1, 1))  # changed since it was cached: a miss
        one_by_one = [cache.get(f) for f in files]
        many = cache.get_many(files + [str(tmp_path / "gone.dcm")])
    assert many[:-1] == one_by_one and many[-1] is None
    assert one_by_one[0] is None and sum(h is not None for h in many) == 6


def test_old_version_is_dropped(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        index_folder(tree, cache=cache)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE meta SET value='0:old' WHERE key='version'")
    con.close()
    with HeaderCache(db) as cache:
        assert len(cache) == 0


def test_relative_paths_and_prune(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / FILE_NAME
    with HeaderCache(db) as cache:
        index_folder(tree, cache=cache)
    monkeypatch.chdir(tree)
    with HeaderCache(db) as cache:
        res = index_folder("a", cache=cache)
        assert cache.hits == 4
    assert all(not os.path.isabs(s.path) for s in res.series[0].slices)
    for p in (tree / "b").iterdir():
        p.unlink()
    with HeaderCache(db) as cache:
        assert cache.prune() == 3
        assert len(cache) == 4


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HU_ROI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "hu-roi"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "hu-roi"
    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(tmp_path / "mine"))
    cache = HeaderCache.default()
    assert cache.path == tmp_path / "mine" / FILE_NAME
    cache.close()
    assert (tmp_path / "mine" / FILE_NAME).is_file()


def test_unusable_location_disables_without_failing(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(blocker / "sub"))
    cache = HeaderCache.default()
    assert cache.path is None  # in-memory for this run
    res = index_folder(tree, cache=cache)
    assert len(res.series) == 2
    # A database path inside a folder that does not exist: disabled, index still works.
    cache2 = HeaderCache(tmp_path / "missing" / FILE_NAME)
    assert len(index_folder(tree, cache=cache2).series) == 2
    assert len(cache2) == 0


def test_cli_index_uses_cache(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hu_roi.cli import main

    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(tmp_path / "cli-cache"))
    assert main(["index", str(tree), "--quiet"]) == 0
    db = tmp_path / "cli-cache" / FILE_NAME
    assert len(HeaderCache(db)) == 7
