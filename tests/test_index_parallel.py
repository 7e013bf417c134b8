"""index_folder with worker processes: same result as reading in this process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

import hu_roi.io.dicom as dicom_mod
from hu_roi.io import index_folder
from hu_roi.io.cache import HeaderCache


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    rng = np.random.default_rng(3)
    for k in range(3):
        write_ct_series(root / f"s{k}", rng.normal(0, 50, (12 + k, 8, 8)), file_names="random")
    (root / "notes.txt").write_text("not dicom")
    victim = sorted((root / "s1").iterdir())[4]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated inside the header
    (root / "empty.dcm").write_bytes(b"")
    return root


def _summary(res):  # type: ignore[no-untyped-def]
    return (
        res.n_files,
        [(s.series_key, s.slices, s.problems) for s in res.series],
        [(s.path, s.reason) for s in res.skipped],
    )


def test_workers_give_the_same_index(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = index_folder(tree)
    monkeypatch.setattr(dicom_mod, "PARALLEL_INDEX_MIN_FILES", 4)
    parallel = index_folder(tree, workers=2)
    assert _summary(parallel) == _summary(serial)
    assert len(serial.skipped) == 3 and len(serial.series) == 3  # the case can tell
    assert sorted(s.n_slices for s in serial.series) == [12, 12, 14]


def test_workers_fill_the_cache(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dicom_mod, "PARALLEL_INDEX_MIN_FILES", 4)
    with HeaderCache(tmp_path / "h.sqlite3") as cache:
        first = index_folder(tree, cache=cache, workers=2)
        assert cache.stores == 38
    with HeaderCache(tmp_path / "h.sqlite3") as cache:
        second = index_folder(tree, cache=cache, workers=2)
        assert cache.hits == 38
    assert _summary(second) == _summary(first)


def test_a_dying_worker_loses_only_its_files(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker processes are forked, so they see this patch: one file kills its worker.
    import multiprocessing

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("needs forked worker processes to see the patched reader")
    real = dicom_mod.read_header
    bomb = str(sorted((tree / "s2").iterdir())[0])

    def read_or_die(path):  # type: ignore[no-untyped-def]
        if str(path) == bomb:
            os._exit(3)
        return real(path)

    monkeypatch.setattr(dicom_mod, "read_header", read_or_die)
    monkeypatch.setattr(dicom_mod, "PARALLEL_INDEX_MIN_FILES", 4)
    res = index_folder(tree, workers=2)
    lost = [s for s in res.skipped if "worker process" in s.reason]
    assert any(s.path == bomb for s in lost)
    assert res.n_files == 41  # every file is either indexed or skipped with its reason
    assert len(res.skipped) + sum(s.n_slices for s in res.series) == 41


def test_workers_must_be_positive(tree: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        index_folder(tree, workers=0)


def test_cli_index_workers(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hu_roi.cli import main

    monkeypatch.setattr(dicom_mod, "PARALLEL_INDEX_MIN_FILES", 4)
    outs = []
    for w in ("1", "2"):
        out = tmp_path / f"index{w}.csv"
        assert (
            main(["index", str(tree), "--quiet", "--no-cache", "--workers", w, "--out", str(out)])
            == 0
        )
        outs.append((out.read_text(), out.with_name(out.stem + ".skipped.csv").read_text()))
    assert outs[0] == outs[1] and outs[0][1].count("\n") == 4  # header + 3 skipped
    capsys.readouterr()
    assert main(["index", str(tree), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--workers must be" in err and "\n" not in err
