"""napari reader: a DICOM folder or file → one image layer per CT series (HU, LPS mm).

Readers never raise: a path without usable CT series gives a notification and no
layers, series the core refuses (localizer, gantry tilt, gaps, …) are listed in a
warning, and everything else opens lazily (one slice read per displayed plane).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hu_roi.io.load import NEVER_LOADABLE
from hu_roi.series import PROBLEM_CODES, SeriesInfo

from ._series import PLUGIN_STATE, SeriesHandle, index_cached, notify, register

__all__ = [
    "napari_get_reader",
    "read_dicom",
    "series_layers",
    "describe_refusal",
    "is_dicom_file",
    "folder_has_dicom",
]

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


#: Files looked at, at most, to decide whether a folder holds DICOM.
FOLDER_PROBE_FILES = 2000


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM preamble: 128 bytes, then ``DICM`` (PS3.10 7.1)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def folder_has_dicom(path: str | os.PathLike, limit: int = FOLDER_PROBE_FILES) -> bool:
    """True when a file below ``path`` (looking at ``limit`` files at most) is DICOM."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(_NOT_DICOM_SUFFIXES):
                continue
            if is_dicom_file(os.path.join(dirpath, name)):
                return True
            seen += 1
            if seen >= limit:
                return False
    return False


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[tuple]] | None:
    """Return :func:`read_dicom` only for DICOM: files with the DICOM preamble, folders holding one.

    Any other path (a README, a CSV, a folder of PNGs) is not claimed, so napari offers
    its own readers for it.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        return None
    for p in paths:
        s = str(p)
        if os.path.isdir(s):
            if not folder_has_dicom(s):
                return None
        elif not is_dicom_file(s):
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
            notify(
                f"hu-roi: opened with accepted problem(s) {', '.join(accept)} "
                "(the display spaces slices evenly; measurements use each slice's position)"
            )
        h = register(SeriesHandle(info, root=root, accept=accept))
        out.append(h.layer_data(blinded=blinded, label=labels.get(info.series_key, "Case")))
    for msg in refused:
        notify(msg)
    return out


def read_dicom(path: str | list[str]) -> list[tuple]:
    """Index ``path`` (a folder, a file, or a list of them) and return CT layer data."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    # files stand for their whole series: index each parent folder once, keep the series
    # holding one of the files; folders give every series in them
    targets: dict[str, set[str] | None] = {}
    for p in paths:
        p = str(p)
        if os.path.isfile(p):
            d = os.path.dirname(os.path.abspath(p))
            if targets.get(d, set()) is not None:
                targets.setdefault(d, set()).add(os.path.realpath(p))  # type: ignore[union-attr]
        else:
            targets[p] = None
    layers: list[tuple] = []
    seen: set[str] = set()
    for target, files in targets.items():
        try:
            res = index_cached(target)
        except Exception as exc:  # noqa: BLE001 - readers never raise
            notify(f"hu-roi: cannot read {target}: {exc}")
            continue
        series = [s for s in res.series if s.series_key not in seen]
        if files is not None:
            series = [s for s in series if any(os.path.realpath(x.path) in files for x in s.slices)]
        seen.update(s.series_key for s in series)
        if not series:
            reasons = [
                s.reason for s in res.skipped if files is None or os.path.realpath(s.path) in files
            ]
            notify(
                f"hu-roi: no DICOM image series found in {target} ({len(reasons)} file(s) "
                "skipped" + (f", e.g. {reasons[0]}" if reasons else "") + ")"
            )
            continue
        try:
            layers.extend(series_layers(series, root=target))
        except Exception as exc:  # noqa: BLE001 - readers never raise
            notify(f"hu-roi: cannot open series of {target}: {exc}")
    if not layers:
        # npe2's "null layer" sentinel: read fine, nothing to show (the notification says why)
        return [(None,)]
    return layers
