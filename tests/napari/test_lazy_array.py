"""LazySeriesArray: numpy's answer for every index napari (or a user) may use, lazily."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

from hu_roi.io import index_folder, load_series


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("lazy")
    hu = np.random.default_rng(0).integers(-1000, 2000, (7, 5, 6)).astype(float)
    write_ct_series(folder, hu, slice_positions=np.arange(7) * 2.0)
    (info,) = index_folder(folder).series
    return info, load_series(info).hu.astype(np.float32)


KEYS = [
    0,
    -1,
    3,
    (2, 1),
    (2, slice(None), 4),
    (slice(1, 5), 2),
    (slice(None, None, 2), slice(1, 4), slice(None, None, -1)),
    Ellipsis,
    (Ellipsis, 3),
    (1, Ellipsis),
    (slice(5, 2, -1),),
    (slice(3, 3),),
    (np.int64(2), slice(None), np.int32(0)),
    ([0, 2, 2],),  # fancy: read all, then numpy
    (None, 1),
]


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_every_index_matches_numpy(series, perm):  # type: ignore[no-untyped-def]
    from hu_roi_napari._series import LazySeriesArray, SeriesHandle

    info, full = series
    ref = full.transpose(perm)
    arr = LazySeriesArray(SeriesHandle(info), perm)
    assert arr.shape == ref.shape and arr.dtype == ref.dtype and arr.size == ref.size
    for key in KEYS:
        got, want = arr[key], ref[key]
        assert got.shape == want.shape, (key, perm)
        np.testing.assert_array_equal(got, want, err_msg=f"{key} {perm}")
    np.testing.assert_array_equal(np.asarray(arr), ref)


def test_out_of_range_and_bad_keys(series):  # type: ignore[no-untyped-def]
    from hu_roi_napari._series import LazySeriesArray, SeriesHandle

    arr = LazySeriesArray(SeriesHandle(series[0]))
    with pytest.raises(IndexError):
        arr[7]
    with pytest.raises(IndexError):
        arr[0, 0, 0, 0]
    with pytest.raises(IndexError):
        arr[..., 0, ...]
    with pytest.raises(ValueError, match="perm"):
        LazySeriesArray(SeriesHandle(series[0]), (0, 0, 1))


def test_one_slice_reads_one_slice(series, monkeypatch):  # type: ignore[no-untyped-def]
    import hu_roi_napari._series as mod

    read: list[list[int]] = []
    real = mod.load_series

    def spy(info, *, slices=None, **kw):  # type: ignore[no-untyped-def]
        read.append(list(slices))
        return real(info, slices=slices, **kw)

    monkeypatch.setattr(mod, "load_series", spy)
    h = mod.SeriesHandle(series[0])
    arr = mod.LazySeriesArray(h, (1, 0, 2))  # slice axis in the middle (a coronal view)
    arr[:, 4, :]
    arr[2, :, :]  # rows cut across every slice: reads all
    assert read == [[4], [0, 1, 2, 3, 5, 6]]
    monkeypatch.setattr(mod, "CACHE_SLICES", 3)  # more than the cache holds: not cached
    h2 = mod.SeriesHandle(series[0])
    np.testing.assert_array_equal(mod.LazySeriesArray(h2)[...], series[1])
    assert read[-1] == list(range(7)) and len(h2._cache) == 0
    # the measurement's partial volume takes the same way (it failed with a KeyError
    # when asked for more slices than the cache holds)
    np.testing.assert_array_equal(h2.volume(range(7)).hu, series[1])


def test_unreadable_slice_is_blank_and_reported_once(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    import hu_roi_napari._series as mod

    hu = np.arange(4 * 5 * 6, dtype=float).reshape(4, 5, 6)
    files = write_ct_series(tmp_path, hu, slice_positions=[0.0, 1.0, 2.0, 3.0])
    (info,) = index_folder(tmp_path).series
    broken = info.slices[2].path
    Path(broken).write_bytes(Path(broken).read_bytes()[:-20])  # pixel data cut short
    warnings: list[str] = []
    monkeypatch.setattr(mod, "notify", warnings.append)
    arr = mod.LazySeriesArray(mod.SeriesHandle(info))
    assert np.isnan(arr[2]).all()
    np.testing.assert_array_equal(arr[1], hu[1])
    whole = arr[...]
    assert np.isnan(whole[2]).all() and not np.isnan(whole[[0, 1, 3]]).any()
    np.testing.assert_array_equal(whole[[0, 1, 3]], hu[[0, 1, 3]])
    assert len(warnings) == 1 and "slice 3 of 4 cannot be read" in warnings[0]
    assert len(files) == 4
    # blinded reading: the reason (which may name the file's folder) is left out
    monkeypatch.setattr(mod.PLUGIN_STATE, "blinded", True)
    mod.LazySeriesArray(mod.SeriesHandle(info))[2]
    assert warnings[-1] == "hu-roi: slice 3 of 4 cannot be read"
