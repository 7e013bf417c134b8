"""hu_roi.parallel.map_tasks: order, per-item errors, local processes and a dask cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

from hu_roi.parallel import TaskResult, map_tasks


def _square(x: int) -> int:
    return x * x


def _fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x


def _pid(_: int) -> int:
    return os.getpid()


def _add(a: int, b: int) -> int:
    return a + b


def _series_mean(folder: str) -> float:
    """A realistic task: index a folder and load its volume (runs in a worker)."""
    from hu_roi.io import index_folder, load_series

    (info,) = index_folder(folder).series
    return float(load_series(info, workers=1).hu.mean())


def test_inline_order_and_errors() -> None:
    res = map_tasks(_fail_on_odd, range(6))
    assert [r.index for r in res] == list(range(6))
    assert [r.ok for r in res] == [True, False] * 3
    assert [r.value for r in res if r.ok] == [0, 2, 4]
    assert isinstance(res[3].error, ValueError) and "odd item 3" in str(res[3].error)
    with pytest.raises(ValueError, match="odd item 1"):
        res[1].unwrap()
    assert res[2].unwrap() == 2


def test_processes_preserve_order_and_use_other_processes() -> None:
    res = map_tasks(_square, range(20), workers=2)
    assert [r.unwrap() for r in res] == [i * i for i in range(20)]
    pids = {r.unwrap() for r in map_tasks(_pid, range(8), workers=2)}
    assert os.getpid() not in pids
    errs = map_tasks(_fail_on_odd, range(5), workers=2)
    assert [type(r.error) for r in errs] == [type(None), ValueError] * 2 + [type(None)]


def test_unpack_empty_and_bad_workers() -> None:
    assert [r.value for r in map_tasks(_add, [(1, 2), (3, 4)], unpack=True)] == [3, 7]
    assert map_tasks(_square, []) == []
    with pytest.raises(ValueError, match="workers"):
        map_tasks(_square, [1], workers=0)
    assert map_tasks(_square, [3]) == [TaskResult(0, 9)]


def test_real_load_tasks_processes_equal_inline(tmp_path: Path) -> None:
    folders = []
    for k in range(3):
        hu = np.full((3, 8, 8), 10.0 * k)
        write_ct_series(tmp_path / f"s{k}", hu)
        folders.append(str(tmp_path / f"s{k}"))
    folders.append(str(tmp_path / "nope"))
    inline = map_tasks(_series_mean, folders)
    procs = map_tasks(_series_mean, folders, workers=2)
    assert [r.value for r in inline] == [0.0, 10.0, 20.0, None]
    assert [r.value for r in procs] == [r.value for r in inline]
    assert isinstance(procs[3].error, FileNotFoundError)


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        yield c


def test_dask_cluster_by_address_and_by_client(cluster: object, tmp_path: Path) -> None:
    import distributed

    address = cluster.scheduler_address  # type: ignore[attr-defined]
    res = map_tasks(_fail_on_odd, range(7), scheduler=address)
    assert [r.index for r in res] == list(range(7))
    assert [r.value for r in res] == [0, None, 2, None, 4, None, 6]
    assert isinstance(res[5].error, ValueError)
    write_ct_series(tmp_path / "s", np.full((2, 8, 8), 40.0))
    with distributed.Client(address) as client:
        out = map_tasks(_series_mean, [str(tmp_path / "s")] * 3, scheduler=client)
        assert [r.unwrap() for r in out] == [40.0] * 3
        assert client.status == "running"  # a client passed in is left open
        assert [
            r.value for r in map_tasks(_add, [(1, 1), (2, 2)], scheduler=client, unpack=True)
        ] == [2, 4]
