"""napari reader: a DICOM folder or file → one image layer per CT series (HU, LPS mm).

Readers never raise: a path without usable CT series gives a notification and no
layers, series the core refuses (localizer, gantry tilt, gaps, …) are listed in a
warning, and everything else opens lazily (one slice read per displayed plane).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hu_roi.io import index_folder
from hu_roi.io.load import NEVER_LOADABLE
from hu_roi.series import PROBLEM_CODES, SeriesInfo

from ._series import PLUGIN_STATE, SeriesHandle, register

log = logging.getLogger(__name__)

__all__ = ["napari_get_reader", "read_dicom", "series_layers", "describe_refusal"]

_NOT_DICOM_SUFFIXES = (
    ".json",
    ".csv",
    ".txt",
    ".md",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".npy",
    ".nii",
    ".gz",
    ".zarr",
    ".py",
    ".yaml",
    ".yml",
)


def _notify(msg: str, *, warning: bool = True) -> None:
    try:
        from napari.utils.notifications import show_info, show_warning

        (show_warning if warning else show_info)(msg)
    except Exception:  # noqa: BLE001 - no napari (headless use): log instead
        log.warning(msg)


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[tuple]] | None:
    """Return :func:`read_dicom` for folders and files that may be DICOM, else None."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        return None
    for p in paths:
        s = str(p)
        if s.lower().endswith(_NOT_DICOM_SUFFIXES) or not os.path.exists(s):
            return None
    return read_dicom


def describe_refusal(info: SeriesInfo, *, blinded: bool = False) -> str:
    """One line: which series is refused and why (no identifiers when blinded)."""
    bad = [p for p in info.problems if p in NEVER_LOADABLE or p in info.refusing_problems]
    who = (
        "a series"
        if blinded
        else (f"{info.patient_id} {info.study_date} {info.series_description or info.series_key}")
    )
    why = "; ".join(f"{p} ({PROBLEM_CODES.get(p, p)})" for p in bad)
    return f"hu-roi: not opened: {who}: {why}"


def series_layers(
    series: list[SeriesInfo], *, root: str | Path = "", blinded: bool | None = None
) -> list[tuple]:
    """Layer data of the loadable series; a warning for every refused one."""
    blinded = PLUGIN_STATE.blinded if blinded is None else blinded
    labels = PLUGIN_STATE.labels or {}
    out: list[tuple] = []
    refused: list[str] = []
    from ._session import accepted_problems

    for info in series:
        accept = accepted_problems(info)
        if accept is None:
            refused.append(describe_refusal(info, blinded=blinded))
            continue
        if accept:
            _notify(
                f"hu-roi: opened with accepted problem(s) {', '.join(accept)} "
                "(the display spaces slices evenly; measurements use each slice's position)"
            )
        h = register(SeriesHandle(info, root=root, accept=accept))
        out.append(h.layer_data(blinded=blinded, label=labels.get(info.series_key, "Case")))
    for msg in refused:
        _notify(msg)
    return out


def read_dicom(path: str | list[str]) -> list[tuple]:
    """Index ``path`` (a folder, a file, or a list of them) and return CT layer data."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[tuple] = []
    for p in paths:
        is_file = os.path.isfile(p)
        # a single file stands for its whole series: index its folder, keep that series
        target = os.path.dirname(os.path.abspath(p)) if is_file else p
        try:
            res = index_folder(target)
        except Exception as exc:  # noqa: BLE001 - readers never raise
            _notify(f"hu-roi: cannot read {p}: {exc}")
            continue
        series = res.series
        if is_file:
            me = os.path.realpath(p)
            series = [s for s in series if any(os.path.realpath(x.path) == me for x in s.slices)]
        if not series:
            reasons = [s.reason for s in res.skipped if not is_file or s.path == p]
            _notify(
                f"hu-roi: no DICOM image series found in {p} ({len(reasons)} file(s) skipped"
                + (f", e.g. {reasons[0]}" if reasons else "")
                + ")"
            )
            continue
        try:
            layers.extend(series_layers(series, root=target))
        except Exception as exc:  # noqa: BLE001 - readers never raise
            _notify(f"hu-roi: cannot open series of {p}: {exc}")
    if not layers:
        # npe2's "null layer" sentinel: read fine, nothing to show (the notification says why)
        return [(None,)]
    return layers
