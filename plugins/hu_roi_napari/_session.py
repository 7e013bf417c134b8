"""The reading session behind the widget (no Qt): folder, reading list, ROI set, numbers.

A :class:`Session` holds one indexed DICOM folder, one ROI set file (all patients), the
series currently shown (an image layer and a Shapes layer of its ROIs) and the blinded
reading state.  Every number comes from the core: :func:`hu_roi.measure.measure_roi` on a
partial :class:`~hu_roi.volume.Volume` of exactly the slices the ROI needs (as the batch
command does), calibration flags from :mod:`hu_roi.calibration`, CSV from
:mod:`hu_roi.export`, ROI files from :mod:`hu_roi.roi` (atomic save with conflict check).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hu_roi.errors import HuRoiError
from hu_roi.io import IndexResult
from hu_roi.io.load import NEVER_LOADABLE
from hu_roi.measure import (
    Measurement,
    add_flags,
    failed_measurement,
    label_flags,
    measure_roi,
)
from hu_roi.rasterize import RoiPlacementError, rasterize_roi, slices_needed
from hu_roi.roi import HEIGHT_KINDS, LEVELS, TIMEPOINTS, Roi, RoiSet, load_roiset, save_roiset
from hu_roi.series import SeriesInfo
from hu_roi.series_lookup import SeriesResolver
from hu_roi.util import atomic_write_text

from ._overlays import (
    OVERLAY_KEY,
    DoseOverlay,
    LabelOverlay,
    dose_layer_data,
    labels_layer_data,
    read_dose_overlay,
    read_label_overlay,
)
from ._rois_layer import (
    PROPOSED_COLOR,
    PROPOSED_EDGE_WIDTH,
    ROI_KEYS,
    canvas_label,
    edge_color,
    id_for_level,
    rois_from_layer,
    rois_layer_data,
    sphere_extent,
)
from ._series import (
    PLUGIN_STATE,
    SeriesHandle,
    index_cached,
    register,
    series_label,
    timepoint_from_path,
)

log = logging.getLogger(__name__)
_Ov = TypeVar("_Ov")  # a label or dose overlay

__all__ = ["Session", "CalibrationReport", "autosave_path", "next_level", "propose_rois"]

AUTOSAVE_SUFFIX = ".autosave"
#: Name of a new ROI file started in blinded reading (the folder's name may identify).
BLINDED_ROI_FILE = "blinded_reading.rois.json"
#: Name of the ROI file of a blinded re-read session (a separate set for ``reliability``).
REREAD_ROI_FILE = "blinded_reread.rois.json"


def autosave_path(roi_path: str | Path) -> Path:
    """Sidecar autosave file of an ROI file: ``<name>.rois.json.autosave``."""
    p = Path(roi_path)
    return p.with_name(p.name + AUTOSAVE_SUFFIX)


def next_level(level: str | None, step: int = 1) -> str:
    """The next vertebral level (C1 … S5), clamped at the ends; L1 when unset."""
    if level not in LEVELS:
        return "L1"
    i = min(max(LEVELS.index(level) + step, 0), len(LEVELS) - 1)  # type: ignore[arg-type]
    return LEVELS[i]


def is_measurable(info: SeriesInfo) -> bool:
    """A CT series the core measures: no refusing problem beyond those batch accepts.

    ``hu-roi measure`` accepts ``missing-slices`` and ``gantry-tilt``
    (:data:`hu_roi.batch.ACCEPTED_PROBLEMS`: the voxel rule uses each slice's own
    position), so the viewer opens those series too, with a warning.
    """
    return accepted_problems(info) is not None


def accepted_problems(info: SeriesInfo) -> tuple[str, ...] | None:
    """Problems to accept when loading like the batch does; None when batch refuses."""
    from hu_roi.batch import ACCEPTED_PROBLEMS

    if set(info.problems) & NEVER_LOADABLE:
        return None
    refusing = set(info.refusing_problems)
    if refusing - set(ACCEPTED_PROBLEMS):
        return None
    return tuple(p for p in info.problems if p in ACCEPTED_PROBLEMS)


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration checks of the scan shown (all from :mod:`hu_roi.calibration`).

    Attributes
    ----------
    header_flags : list of str
        Rescale type/slope/intercept sanity, contrast agent.
    consistency_flags : list of str
        Differences from the patient's baseline scan.
    baseline : str
        Label of the baseline scan compared with ("" when none / this is it).
    references : list of (kind, mean_hu, flag or "")
        Reference ROIs measured on this scan.
    air : tuple (mean_hu, n_voxels, flag or "") or None
        Automatic air check on the loaded slices (when no reference-air ROI).
    phantom : str
        Phantom fit summary, "" when no phantom ROIs.
    rows : list of (fact, this scan, baseline)
        Header facts side by side.
    """

    header_flags: list[str] = field(default_factory=list)
    consistency_flags: list[str] = field(default_factory=list)
    baseline: str = ""
    references: list[tuple[str, float, str]] = field(default_factory=list)
    air: tuple[float, int, str] | None = None
    phantom: str = ""
    rows: list[tuple[str, str, str]] = field(default_factory=list)


class Session:
    """State of one reading session (see the module docstring).

    Parameters
    ----------
    viewer : napari.Viewer or None
        Layers are added to it; ``None`` for headless use (layer data only).
    reader : str
        Reader id written into new ROI sets (e.g. ``"R1"``).
    """

    def __init__(self, viewer: Any = None, *, reader: str = "R1") -> None:
        self.viewer = viewer
        self.reader = reader
        self.root: Path | None = None
        self.index: IndexResult | None = None
        self.roiset = RoiSet(reader=reader)
        self.roi_path: Path | None = None
        self.dirty = False
        self.blinded = False
        self.seed = 0
        self.reading_list: list[SeriesInfo] = []
        self.labels: dict[str, str] = {}
        self.position = -1
        self.current: SeriesHandle | None = None
        self.image_layer: Any = None
        self.shapes_layer: Any = None
        #: non-editable layer drawing each sphere ROI on every slice it covers
        self.extent_layer: Any = None
        self._extent_sig: tuple = ()
        #: study codes typed by the reader for series whose PatientID is empty
        #: (anonymised exports): series_key -> code
        self.study_codes: dict[str, str] = {}
        self.timepoint: str | None = None
        self.measurements: list[Measurement] = []
        self.problems: list[str] = []
        self.listeners: list[Callable[[str], None]] = []
        self._syncing = False
        self._by_series: dict[str, list[Roi]] = {}
        self._last_signature: tuple = ()
        self._by_series_src: tuple[RoiSet, IndexResult] | None = None
        #: old series keys already noted (hu_roi.series_lookup logs one line per key)
        self._noted_keys: set[str] = set()
        #: ids made for ROIs drawn since the ROI file was last read or saved: they follow
        #: every level/kind change (a stored ROI's id changes only when it would name
        #: another level than the ROI's, see :meth:`_rename_id`)
        self.fresh_ids: set[str] = set()
        #: True while the session adds its own layers (the widget must not adopt them)
        self.adding_layers = False
        #: set by the widget: adopts plugin layers added to the viewer and still waiting
        #: for adoption (see :meth:`settle`)
        self.on_settle: Callable[[], None] | None = None
        self._settling = False
        #: re-read session (:meth:`start_reread`): series_key -> (timepoint, patient code)
        #: the series had in the first reading; empty when not re-reading
        self.reread: dict[str, tuple[str | None, str]] = {}
        #: vertebra label map and RT dose of the series shown (:mod:`._overlays`), and
        #: their layers; dropped when another series is shown
        self.label_overlay: LabelOverlay | None = None
        self.label_layer: Any = None
        self.dose_overlay: DoseOverlay | None = None
        self.dose_layer: Any = None
        #: mean dose (Gy) of each measured ROI of the series shown (roi_id -> value, None
        #: when a voxel lies outside the dose grid); empty without a dose
        self.dose_means: dict[str, float | None] = {}

    # -- notifications to the UI ---------------------------------------------------------
    def _emit(self, what: str) -> None:
        for cb in list(self.listeners):
            try:
                cb(what)
            except Exception:  # noqa: BLE001 - a broken listener must not break the session
                log.exception("listener failed on %s", what)

    def settle(self) -> None:
        """Adopt layers that wait for adoption before acting on the layers.

        The widget adopts a layer added by the reader or the sample data on the next turn
        of Qt's event loop, when its Shapes layer has been added too.  Whether that turn
        comes before the next action depends on the machine's load (napari's ``open``
        runs the loop only when its progress bar redraws), so every action that shows,
        renames or replaces layers first settles the pending adoption: actions then run
        in the order they were asked for, on a busy machine as on an idle one.
        """
        if self.on_settle is None or self._settling:
            return
        self._settling = True
        try:
            self.on_settle()
        finally:
            self._settling = False

    @contextmanager
    def _adding(self) -> Iterator[None]:
        """Mark layers inserted meanwhile as the session's own (never adopted)."""
        self.adding_layers = True
        try:
            yield
        finally:
            self.adding_layers = False

    def _claim_name(self, layer: Any, name: str) -> None:
        """Give a layer of the session exactly ``name``.

        napari keeps layer names unique by appending `` [1]`` to a name another layer
        holds.  The session's layers are the ones the dock and its messages speak of, so
        they always carry their own label; any other layer holding that name (a layer
        left from an earlier series, a second copy of the same series, a layer renamed
        when blinded mode started) yields and gets napari's suffix instead.
        """
        if self.viewer is not None:
            for other in list(self.viewer.layers):
                if other is not layer and other.name == name:
                    other.name = f"{name} [1]"  # napari counts up when that is taken too
        if layer is not None:
            layer.name = name

    # -- folder and reading list ---------------------------------------------------------
    def open_folder(
        self,
        root: str | Path,
        *,
        roi_file: str | Path | None = None,
        index: IndexResult | None = None,
    ) -> IndexResult:
        """Index ``root`` with the core and build the reading list.

        The ROI file is ``roi_file`` when given; else the only ``*.rois.json`` in
        ``root/../rois`` or ``root`` if there is exactly one; else ``<root>.rois.json``
        next to the folder (created on first save).  ``index``: the folder's index made
        already (in a worker thread), else it is made here.
        """
        self.settle()
        new_root = Path(root)
        if self.root is not None and new_root.resolve() != self.root.resolve():
            self.close_series()  # another study: nothing of the old one stays on screen
        self.root = new_root
        self.index = index if index is not None else index_cached(self.root)
        self._build_reading_list()
        if roi_file is None:
            roi_file = self._default_roi_file()
        if roi_file is not None and (self.roi_path is None or Path(roi_file) != self.roi_path):
            self.load_rois(roi_file)
        self._emit("folder")
        return self.index

    def _default_roi_file(self) -> Path:
        assert self.root is not None
        cands: list[Path] = []
        for d in (self.root.parent / "rois", self.root):
            if d.is_dir():
                cands = sorted(d.glob("*.rois.json"))
                if cands:
                    break
        if len(cands) == 1:
            return cands[0]
        if self.blinded:  # the folder's name may be a patient id ("BS-4711")
            return self.root.parent / BLINDED_ROI_FILE
        return self.root.parent / f"{self.root.name}.rois.json"

    def roi_file_name(self) -> str:
        """The ROI file's name as the dock shows it (a neutral text when blinded)."""
        if self.roi_path is None:
            return "–"
        if self.blinded and self.roi_path.name not in (BLINDED_ROI_FILE, REREAD_ROI_FILE):
            return "the reading's ROI file"
        return self.roi_path.name

    def suggested_path(self, what: str) -> Path:
        """Where a save/export dialog opens: the study's folder and a suggested file name.

        Parameters
        ----------
        what : {"rois", "export", "measure-all", "dicom-export"}
            The ROI file ("save as"), the CSV of the series shown, the CSV of every
            stored ROI of the folder, the folder of the DICOM SR/SEG export.  Names carry
            no identifier when blinded.
        """
        base = (
            self.roi_path.parent
            if self.roi_path is not None
            else (self.root.parent if self.root is not None else Path.cwd())
        )
        if what == "rois":
            if self.roi_path is not None and not self.blinded:
                return self.roi_path
            if self.reread:
                return base / REREAD_ROI_FILE
            return base / (BLINDED_ROI_FILE if self.blinded else "rois.rois.json")
        if what == "export":
            label = self.label(self.current.info) if self.current is not None else "series"
            return base / f"{_file_safe(label)}_measurements.csv"
        if what == "dicom-export":
            return base / "dicom_export"
        if self.blinded or self.root is None:
            return base / "all_measurements.csv"
        return base / f"{_file_safe(self.root.name)}_measurements.csv"

    def _build_reading_list(self) -> None:
        series = [s for s in (self.index.series if self.index else []) if is_measurable(s)]
        if self.reread:
            series = [s for s in series if s.series_key in self.reread]
        if self.blinded:
            rng = np.random.default_rng(self.seed)
            order = rng.permutation(len(series))
            series = [series[i] for i in order]
            self.labels = {s.series_key: f"Case {i + 1:02d}" for i, s in enumerate(series)}
        else:
            self.labels = {}
        PLUGIN_STATE.blinded = self.blinded
        PLUGIN_STATE.labels = dict(self.labels)
        self.reading_list = series
        self.position = -1

    def set_blinded(self, on: bool, seed: int | None = None) -> None:
        """Switch blinded reading on/off (reshuffles the reading list with ``seed``)."""
        self.settle()
        cur = self.current.info.series_key if self.current else None
        self.blinded = bool(on)
        if not self.blinded:
            self.reread = {}  # unblinding ends a re-read (its ROI file stays the one used)
        if seed is not None:
            self.seed = int(seed)
        self._build_reading_list()
        if (
            self.blinded
            and self.root is not None
            and self.roi_path == self.root.parent / f"{self.root.name}.rois.json"
            and not self.roi_path.exists()
            and not self.roiset.rois
        ):
            # the default new ROI file, not written yet: named after the folder, whose
            # name may identify (a file the reader chose is kept)
            self.roi_path = self.root.parent / BLINDED_ROI_FILE
            self.roiset = replace(self.roiset, path=str(self.roi_path))
        if cur is not None:
            self.open_series(cur)
        self._relabel_other_layers()
        self._emit("blinded")

    def reread_subset(self, fraction: float, seed: int) -> list[SeriesInfo]:
        """The series a re-read session presents: a random ``fraction`` of those read.

        "Read" series are the measurable series with at least one ROI in the current ROI
        set.  ``round(fraction · n)`` of them (at least one) are drawn with
        ``numpy.random.default_rng(seed)`` from the read series sorted by series_key, so
        the same folder, ROI set, fraction and seed give the same subset.  Returned in
        series_key order.
        """
        if not (0.0 < fraction <= 1.0):
            raise ValueError(f"the re-read fraction must lie in (0, 1]; got {fraction}")
        read = sorted(
            (s for s in (self.index.series if self.index else []) if is_measurable(s)),
            key=lambda s: s.series_key,
        )
        read = [s for s in read if self.rois_of(s)]
        if not read:
            return []
        n = min(len(read), max(1, round(fraction * len(read))))
        pick = np.random.default_rng(seed).choice(len(read), size=n, replace=False)
        return [read[i] for i in sorted(int(i) for i in pick)]

    def start_reread(
        self, fraction: float, seed: int, path: str | Path | None = None
    ) -> list[SeriesInfo]:
        """Start a blinded re-read of a random subset of the series already read.

        The current ROI set is saved first (when it has unsaved edits).  The subset
        (:meth:`reread_subset`) becomes the reading list, shown blinded (``Case NN``,
        shuffled with ``seed``); the earlier ROIs are not shown: the ROIs drawn now go to
        a separate ROI set, ``path`` or ``blinded_reread.rois.json`` next to the current
        ROI file (read again when it exists: a re-read can be resumed).  Each series keeps
        the timepoint and patient it had in the first reading, so the two measurement CSVs
        pair by (patient_id, timepoint, level) in ``hu-roi reliability``.

        Returns the subset (series_key order).  Raises ValueError when no series has ROIs.
        """
        self.settle()
        if self.shapes_layer is not None:
            self.sync()
        subset = self.reread_subset(fraction, seed)
        if not subset:
            raise ValueError("no series has ROIs in the current ROI file: nothing to re-read")
        if self.roi_path is None:
            raise ValueError("choose the ROI file of the first reading first")
        if self.dirty:
            self.save()
        first = {s.series_key: (self.timepoint_of(s), self.patient_code(s)) for s in subset}
        target = Path(path) if path is not None else self.roi_path.parent / REREAD_ROI_FILE
        if target.resolve() == self.roi_path.resolve():
            raise ValueError("the re-read needs its own ROI file, not the first reading's")
        self.close_series()
        for s in subset:
            code = first[s.series_key][1]
            if code and not s.patient_id:
                self.study_codes[s.series_key] = code
        self.reread = first
        self.load_rois(target)
        self.set_blinded(True, seed)
        return subset

    def _relabel_other_layers(self) -> None:
        """Rename/strip plugin layers not shown by the session (reader, sample data)."""
        from ._series import handle_of_layer, header_metadata

        if self.viewer is None:
            return
        for lay in list(self.viewer.layers):
            if self.blinded and (
                handle_of_layer(lay) is not None or "hu_roi_rois" in (lay.metadata or {})
            ):
                _clear_source(lay)  # napari's layer tooltip shows the dropped path
            if lay is self.image_layer or lay is self.shapes_layer:
                continue
            h = handle_of_layer(lay)
            meta = dict(lay.metadata or {})
            if h is not None:
                tok = {"token": h.token}
                if self.blinded:
                    lay.name = self.labels.get(h.info.series_key, "Case ?")
                    meta["hu_roi"] = tok
                else:
                    lay.name = series_label(h.info)
                    meta["hu_roi"] = {**tok, **header_metadata(h.info)}
                lay.metadata = meta
            elif "hu_roi_rois" in meta and self.blinded:
                lay.name = "ROIs"
                meta["hu_roi_rois"] = {"token": meta["hu_roi_rois"].get("token", "")}
                lay.metadata = meta

    def label(self, info: SeriesInfo) -> str:
        """Display label of a series (neutral ``Case NN`` when blinded)."""
        if self.blinded:
            return self.labels.get(info.series_key, "Case ?")
        return series_label(info)

    def series_rows(self) -> list[dict[str, Any]]:
        """Rows for the study browser: patient, timepoint, label, problems, measurable.

        Blinded: only the reading list, as ``Case NN``, no patient/date/timepoint.
        """
        if self.index is None:
            return []
        if self.blinded:
            return [
                {
                    "patient": "",
                    "timepoint": "",
                    "label": self.labels[s.series_key],
                    "problems": ", ".join(s.problems),
                    "key": s.series_key,
                    "measurable": True,
                    "n_rois": len(self.rois_of(s)),
                }
                for s in self.reading_list
            ]
        rows = []
        for s in self.index.series:
            rows.append(
                {
                    "patient": s.patient_id,
                    "timepoint": self.timepoint_of(s) or s.study_date,
                    "label": series_label(s),
                    "problems": ", ".join(s.problems),
                    "key": s.series_key,
                    "measurable": is_measurable(s),
                    "n_rois": len(self.rois_of(s)),
                }
            )
        return rows

    def timepoint_of(self, info: SeriesInfo) -> str | None:
        """Timepoint of a series: from its stored ROIs, else a ``T0``–``T3`` folder name.

        In a re-read session, the timepoint the series had in the first reading.
        """
        first = self.reread.get(info.series_key)
        if first is not None and first[0]:
            return first[0]
        tps = Counter(r.timepoint for r in self.rois_of(info) if r.timepoint)
        if tps:
            return tps.most_common(1)[0][0]
        return timepoint_from_path(info, self.root or "")

    def rois_of(self, info: SeriesInfo) -> list[Roi]:
        """Stored ROIs whose series (core matching rule) is ``info``."""
        if self.index is None:
            one = SeriesResolver([info], noted=self._noted_keys)
            return [r for r in self.roiset.rois if one.resolve(r).info is not None]
        src = self._by_series_src
        if src is None or src[0] is not self.roiset or src[1] is not self.index:
            # match every ROI once per ROI-set/index version (RoiSet is immutable), with the
            # rule of hu-roi measure (old path-based keys resolve, noted once per key)
            by: dict[str, list[Roi]] = {}
            resolver = SeriesResolver(self.index.series, noted=self._noted_keys)
            for r in self.roiset.rois:
                m = resolver.resolve(r)
                if m.info is not None:
                    by.setdefault(m.info.series_key, []).append(r)
            self._by_series, self._by_series_src = by, (self.roiset, self.index)
        return list(self._by_series.get(info.series_key, []))

    def find_series(self, key: str) -> SeriesInfo:
        """The indexed series with this series_key (KeyError when absent)."""
        for s in self.index.series if self.index else []:
            if s.series_key == key:
                return s
        raise KeyError(key)

    # -- showing a series ----------------------------------------------------------------
    def open_series(self, key: str | SeriesInfo, *, keep_edits: bool = True) -> SeriesHandle:
        """Show a series (image + its ROIs), replacing the one shown before.

        ``keep_edits=False`` drops the shown Shapes layer without reading it back (used
        after the ROI set was replaced from disk).
        """
        self.settle()
        info = key if isinstance(key, SeriesInfo) else self.find_series(key)
        if self.shapes_layer is not None and keep_edits:
            self.sync()
        reuse = self._detach_layers()
        handle = register(
            SeriesHandle(info, root=self.root or "", accept=accepted_problems(info) or ())
        )
        self.current = handle
        self._drop_overlays(keep_token=handle.token)  # a label map or dose of another series
        self.timepoint = self.timepoint_of(info)
        keys = [s.series_key for s in self.reading_list]
        if info.series_key in keys:
            self.position = keys.index(info.series_key)
        rois = self.rois_of(info)
        if self.viewer is not None:
            data, kw, _ = handle.layer_data(blinded=self.blinded, label=self.label(info))
            sdata, skw, _ = rois_layer_data(
                handle, rois, name=self._rois_name(), blinded=self.blinded
            )
            if reuse is not None:
                self._refill_layers(reuse, data, kw, sdata, skw)
                self.viewer.reset_view()  # another series: fit it in the canvas
            else:
                self._claim_name(None, kw["name"])
                self._claim_name(None, skw["name"])
                with self._adding():
                    self.image_layer = self.viewer.add_image(data, **kw)
                    self.shapes_layer = self.viewer.add_shapes(sdata, **skw)
            self._connect_shapes()
            self._one_series_on_screen()
            self._goto_first_roi(rois)
            self.viewer.layers.selection.active = self.shapes_layer
        self.measure()
        self._emit("series")
        return handle

    def close_series(self) -> None:
        """Take the shown series off the screen (its ROI edits are kept in the ROI set)."""
        if self.shapes_layer is not None:
            self.sync()
        pair = self._detach_layers()
        if self.viewer is not None:
            for lay in (*(pair or ()), self.extent_layer):
                if lay is not None and lay in self.viewer.layers:
                    self.viewer.layers.remove(lay)
        self.extent_layer = None
        self._extent_sig = ()
        self.current = None
        self._drop_overlays()
        self.timepoint = None
        self.measurements = []
        self.position = -1
        self._emit("closed")

    def _one_series_on_screen(self) -> None:
        """Remove plugin layers of other series: the viewer shows one series at a time.

        Two series in one viewer make napari's slice slider span both (e.g. 241 steps
        from -804.5 to -112.5 mm, the other series invisible at most positions).  The
        series stay in the study list; the ROI set keeps every ROI.
        """
        from ._series import handle_of_layer

        self._drop_overlays(keep_token=self.current.token if self.current else None)
        if self.viewer is None:
            return
        keep = {id(self.image_layer), id(self.shapes_layer), id(self.extent_layer)}
        for lay in list(self.viewer.layers):
            if id(lay) in keep:
                continue
            if handle_of_layer(lay) is not None or "hu_roi_rois" in (lay.metadata or {}):
                self.viewer.layers.remove(lay)

    def _rois_name(self) -> str:
        return (
            "ROIs"
            if self.blinded or self.current is None
            else f"ROIs {self.label(self.current.info)}"
        )

    def adopt(self, image_layer: Any, shapes_layer: Any = None) -> None:
        """Take over layers made elsewhere (reader, sample data) as the current series."""
        from ._series import handle_of_layer

        h = handle_of_layer(image_layer)
        if h is None:
            return
        if self.shapes_layer is not None and self.shapes_layer is not shapes_layer:
            self.sync()
        self.current = h
        self.image_layer = image_layer
        self.timepoint = self.timepoint_of(h.info)
        if shapes_layer is None and self.viewer is not None:
            sdata, skw, _ = rois_layer_data(
                h, self.rois_of(h.info), name=self._rois_name(), blinded=self.blinded
            )
            self._claim_name(None, skw["name"])
            with self._adding():
                shapes_layer = self.viewer.add_shapes(sdata, **skw)
        self.shapes_layer = shapes_layer
        if self.viewer is not None:
            self._claim_name(image_layer, self.label(h.info))
            self._claim_name(shapes_layer, self._rois_name())
        self._connect_shapes()
        self._one_series_on_screen()
        if self.blinded:
            for lay in (image_layer, shapes_layer):
                _clear_source(lay)
        self._goto_first_roi([])
        self.measure()
        self._emit("series")

    @property
    def transform(self) -> Any:
        """:class:`LayerTransform` of the series shown (None when none)."""
        from ._geometry import layer_transform

        return None if self.current is None else layer_transform(self.current.info)

    def show_slice(self, k: int) -> None:
        """Move the viewer to slice ``k`` of the series shown, viewed along its slices."""
        if self.viewer is None or self.image_layer is None or self.current is None:
            return
        tr = self.transform
        ax = tr.slice_axis
        if self.viewer.dims.ndim == 3 and tuple(self.viewer.dims.order)[0] != ax:
            self.viewer.dims.order = (ax, *[a for a in range(3) if a != ax])
        info = self.current.info
        v = tr.to_layer([[k, info.rows / 2, info.columns / 2]])[0]
        world = self.image_layer.data_to_world(v)
        self.viewer.dims.set_point(ax, world[ax])

    def _goto_first_roi(self, rois: Sequence[Roi]) -> None:
        if self.viewer is None or self.current is None:
            return
        if self.shapes_layer is not None and len(self.shapes_layer.data):
            k = int(round(self.transform.from_layer(self.shapes_layer.data[0])[0, 0]))
        else:
            k = self.current.info.n_slices // 2
        self.show_slice(k)

    def _detach_layers(self) -> tuple[Any, Any] | None:
        """Stop listening to the shown layers; return them for reuse when both still exist.

        Reusing the two layers (new data, transform and shapes) is much faster than
        removing and adding layers, which makes paging through a reading list smooth.
        """
        if self.viewer is None:
            return None
        if self.shapes_layer is not None:
            self.shapes_layer.events.data.disconnect(self._on_data)
            self.shapes_layer.events.features.disconnect(self._on_data)
            self.shapes_layer.events.set_data.disconnect(self._on_redraw)
        pair = (self.image_layer, self.shapes_layer)
        self.shapes_layer = self.image_layer = None
        if all(lay is not None and lay in self.viewer.layers for lay in pair):
            return pair
        for lay in pair:
            if lay is not None and lay in self.viewer.layers:
                self.viewer.layers.remove(lay)
        return None

    def _refill_layers(
        self, pair: tuple[Any, Any], data: Any, kw: dict, sdata: list, skw: dict
    ) -> None:
        """Put another series (and its ROIs) into the existing image and Shapes layers."""
        img, shp = pair
        for lay, k in ((img, kw), (shp, skw)):
            _clear_source(lay)  # it holds another series now (no "sample: hu-roi", no path)
            _set_transform(lay, k)
            self._claim_name(lay, k["name"])
            lay.metadata = k["metadata"]
        img.data = data
        if len(shp.data):
            shp.selected_data = set(range(len(shp.data)))
            shp.remove_selected()
        if sdata:
            shp.add(
                sdata,
                shape_type=skw["shape_type"],
                edge_color=skw["edge_color"],
                edge_width=skw["edge_width"],
                face_color=skw["face_color"],
            )
        shp.features = skw["features"]
        shp.feature_defaults = skw["feature_defaults"]
        self.image_layer, self.shapes_layer = img, shp

    def _connect_shapes(self) -> None:
        if self.shapes_layer is None:
            return
        self.shapes_layer.events.data.connect(self._on_data)
        self.shapes_layer.events.features.connect(self._on_data)
        self.shapes_layer.events.set_data.connect(self._on_redraw)

    on_change: Callable[[], None] | None = None  #: set by the widget (debounced sync)
    on_redraw: Callable[[], None] | None = None  #: set by the widget (debounced preview)

    def _on_redraw(self, event: Any = None) -> None:
        if self.on_redraw is not None:
            self.on_redraw()

    def _on_data(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(getattr(action, "value", action)).endswith("ing"):
            return  # "adding"/"changing"/"removing": wait for the finished event
        if self.on_change is not None:
            self.on_change()
        else:
            self.sync()

    def next_series(self, step: int = 1) -> SeriesHandle | None:
        """Open the next (or previous, ``step=-1``) series of the reading list."""
        self.settle()
        if not self.reading_list:
            return None
        pos = min(max(self.position + step, 0), len(self.reading_list) - 1)
        if self.position < 0:
            pos = 0 if step > 0 else len(self.reading_list) - 1
        return self.open_series(self.reading_list[pos])

    # -- ROIs ----------------------------------------------------------------------------
    def patient_code(self, info: SeriesInfo) -> str:
        """The patient id new ROIs of a series get ("" when none is known).

        The series' PatientID; when that is empty (anonymised exports), the study code
        the reader gave (:meth:`set_study_code`), else the one its stored ROIs carry.
        """
        if info.patient_id:
            return info.patient_id
        if info.series_key in self.study_codes:
            return self.study_codes[info.series_key]
        ids = Counter(r.patient_id for r in self.rois_of(info) if r.patient_id)
        return ids.most_common(1)[0][0] if ids else ""

    def needs_study_code(self) -> bool:
        """True when the series shown has no patient id for new ROIs (``hu-roi measure``
        fails such target ROIs ``patient-id-missing``)."""
        return self.current is not None and not self.patient_code(self.current.info)

    def set_study_code(self, code: str) -> None:
        """Give the shown series' ROIs without a patient id the study code ``code``.

        ROIs already drawn with the placeholder ``P`` in their id are renamed
        (``P-T0-L1`` → ``<code>-T0-L1``).
        """
        code = code.strip()
        if self.current is None or not code:
            return
        info = self.current.info
        self.sync()
        self.study_codes[info.series_key] = code
        rs = self.roiset
        for r in self.rois_of(info):
            if r.patient_id:
                continue
            rid = r.roi_id
            if rid == "P" or rid.startswith(("P-", "P_")):
                rid = self._unique_id(code + rid[1:])
                if r.roi_id in self.fresh_ids:
                    self.fresh_ids.discard(r.roi_id)
                    self.fresh_ids.add(rid)
            rs = rs.without_roi(r.roi_id).with_roi(replace(r, patient_id=code, roi_id=rid))
        if rs is not self.roiset:
            self.roiset = rs
            self.dirty = True
            self.autosave()
        self.open_series(info, keep_edits=False)

    def placeholder_ids(self) -> list[str]:
        """Ids of the shown series' ROIs with a placeholder part (``P`` patient, ``TX``)."""
        out = []
        for m in self.measurements:
            parts = m.roi_id.replace("_", "-").split("-")
            if parts[:1] == ["P"] or "TX" in parts:
                out.append(m.roi_id)
        return out

    def _make_id(self, level: str | None, kind: str) -> str:
        info = self.current.info  # type: ignore[union-attr]
        base = "-".join(
            x
            for x in (
                self.patient_code(info) or "P",
                self.timepoint or "TX",
                *(
                    (kind, level or "")  # a height: P01-T0-height-anterior-L1
                    if kind in HEIGHT_KINDS
                    else (level if kind == "target" and level else kind,)
                ),
            )
            if x
        )
        rid = self._unique_id(base)
        self.fresh_ids.add(rid)
        return rid

    def _unique_id(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, … when another ROI already holds it."""
        used = {r.roi_id for r in self.roiset.rois}
        if self.shapes_layer is not None and "key" in self.shapes_layer.features.columns:
            for k in self.shapes_layer.features["key"]:
                if k in ROI_KEYS:
                    used.add(ROI_KEYS[k].roi_id)
        rid, n = base, 2
        while rid in used:
            rid, n = f"{base}-{n}", n + 1
        return rid

    def _rename_id(self, roi: Roi, level: str | None, kind: str) -> str:
        """The id of an ROI whose level or kind the reader changed.

        A newly drawn ROI (id in :attr:`fresh_ids`) gets the id of its new level/kind
        (``P01-T0-L1`` → ``P01-T0-L2``).  A stored ROI keeps its id unless the id names
        another level (:func:`id_for_level`): the table and the CSV must never show an id
        that contradicts the level (``P-TX-T12`` relabelled L1 becomes ``P-TX-L1``).
        """
        if roi.roi_id in self.fresh_ids:
            self.fresh_ids.discard(roi.roi_id)
            return self._make_id(level, kind)
        new = id_for_level(roi.roi_id, roi.timepoint, level, kind)
        return roi.roi_id if new is None else self._unique_id(new)

    def _signature(self) -> tuple:
        lay = self.shapes_layer
        return tuple(
            (st, np.asarray(d, dtype=float).tobytes())
            for st, d in zip(lay.shape_type, lay.data, strict=False)
        )

    def preview(self) -> bool:
        """Measure the shapes as they are now (during a drag), without touching the ROI set.

        Returns True when the shapes changed since the last measurement (the numbers were
        recomputed); the ROI set is updated and autosaved when the edit ends (:meth:`sync`).
        """
        if self.current is None or self.shapes_layer is None or self._syncing:
            return False
        sig = self._signature()
        if sig == self._last_signature:
            return False
        self._last_signature = sig
        self.measure(self.current_rois())
        self._emit("preview")
        return True

    def current_rois(self) -> list[Roi]:
        """ROIs of the series shown, in shape order (from the Shapes layer)."""
        if self.current is None:
            return []
        if self.shapes_layer is None:
            return self.rois_of(self.current.info)
        rois, self.problems = rois_from_layer(
            self.current,
            self.shapes_layer,
            make_id=self._make_id,
            rename_id=self._rename_id,
            patient_id=self.patient_code(self.current.info),
            timepoint=self.timepoint,
            study_date=self.current.info.study_date,
        )
        return rois

    def sync(self) -> bool:
        """Read the Shapes layer back into the ROI set; autosave when it changed.

        Returns True when the ROI set changed.
        """
        if self.current is None or self._syncing:
            return False
        self._syncing = True
        try:
            new = self.current_rois()
            old = self.rois_of(self.current.info)
            old_ids = {r.roi_id for r in old}
            rs = self.roiset
            for r in old:
                if r.roi_id not in {n.roi_id for n in new}:
                    rs = rs.without_roi(r.roi_id)
            for r in new:
                rs = rs.with_roi(r)
            changed = [r.to_dict() for r in rs.rois] != [r.to_dict() for r in self.roiset.rois]
            self.roiset = rs
            if changed:
                self.dirty = True
                self.autosave()
                log.debug(
                    "ROI set changed (%d ROIs on this series, was %d)", len(new), len(old_ids)
                )
            self.measure(new)
        finally:
            self._syncing = False
        self._emit("rois")
        return changed

    def set_attributes(self, indices: Sequence[int], **values: Any) -> None:
        """Set ROI attributes (level, irradiated, lesion_type, kind) of shapes by index."""
        if self.shapes_layer is None:
            return
        feats = self.shapes_layer.features
        defaults = self.shapes_layer.feature_defaults.iloc[0].to_dict()
        if "irradiated" not in feats.columns:
            values.pop("irradiated", None)
        for i in indices:
            for k, v in values.items():
                if k == "irradiated":
                    v = "" if v is None else ("yes" if v else "no")
                feats.loc[feats.index[i], k] = "" if v is None else v
        self.shapes_layer.features = feats  # ids follow in sync (Session._rename_id)
        # napari resets the defaults to the last row (its key included): keep the pickers'
        self.shapes_layer.feature_defaults = defaults
        self.sync()

    def set_defaults(self, **values: Any) -> None:
        """Attributes given to the next shape drawn."""
        if self.shapes_layer is None:
            return
        for k, v in values.items():
            if k == "irradiated":
                if "irradiated" not in self.shapes_layer.features.columns:
                    continue
                v = "" if v is None else ("yes" if v else "no")
            self.shapes_layer.feature_defaults[k] = "" if v is None else v

    def add_roi(self, roi_shape_type: str, vertices: np.ndarray, **attrs: Any) -> None:
        """Add a shape programmatically and sync.

        Parameters
        ----------
        roi_shape_type : str
            napari shape type (``ellipse``: 4 bounding-box corners, ``polygon``,
            ``rectangle``).
        vertices : array, shape (n, 3)
            Series data indices ``(k, r, c)`` (slice, row, column; may be fractional).
        **attrs
            level, irradiated, lesion_type, kind, geometry for this ROI.
        """
        self.set_defaults(**attrs)
        v = self.transform.to_layer(np.asarray(vertices, dtype=float))
        self.shapes_layer.add(v, shape_type=roi_shape_type)
        self.sync()

    def add_sphere(self, center_index: Sequence[float], radius_mm: float, **attrs: Any) -> None:
        """Add a sphere ROI centred at data index ``(k, r, c)`` with ``radius_mm``."""
        from hu_roi.roi import Shape

        from ._geometry import shape_to_napari, vertex_to_lps

        info = self.current.info  # type: ignore[union-attr]
        c = vertex_to_lps(info, np.asarray([center_index], dtype=float))[0]
        k = int(round(center_index[0]))
        _, verts = shape_to_napari(
            info, Shape(type="sphere", center_mm=tuple(c), radius_mm=radius_mm), k
        )  # type: ignore[arg-type]
        self.add_roi("ellipse", verts, geometry="sphere", **attrs)
        self.set_defaults(geometry="")

    # -- proposals from the baseline (issue 14) ------------------------------------------
    def baseline_rois(self) -> tuple[str, list[Roi]]:
        """The baseline timepoint and ROIs to propose on the series shown.

        ROIs of the same patient (:meth:`patient_code`) on other series, of timepoint
        ``T0`` when there are any, else of the patient's earliest timepoint with ROIs
        (never the shown series' own timepoint), without those whose kind and level the
        shown series has already (proposed or drawn).

        Raises
        ------
        ValueError
            No series shown, no timepoint set, or no baseline ROI of this patient.
        """
        if self.current is None:
            raise ValueError("open the follow-up series first")
        if not self.timepoint:
            raise ValueError("set the timepoint of this series first (ROIs tab)")
        if self.shapes_layer is not None:
            self.sync()
        info = self.current.info
        patient = self.patient_code(info)
        if not patient:
            raise ValueError("this series has no patient id: give the study code first")
        own = {r.roi_id for r in self.rois_of(info)}
        order = {t: i for i, t in enumerate(TIMEPOINTS)}
        pool = [
            r
            for r in self.roiset.rois
            if r.patient_id == patient
            and r.roi_id not in own
            and r.timepoint in order
            and r.timepoint != self.timepoint
            and not r.proposed
        ]
        if not pool:
            raise ValueError(
                f"no baseline ROIs of this patient on another timepoint than {self.timepoint}"
            )
        tp = "T0" if any(r.timepoint == "T0" for r in pool) else None
        if tp is None:
            tp = min((r.timepoint for r in pool), key=lambda t: order[str(t)])  # type: ignore[arg-type]
        # a vertebra (or reference) this series has already is not proposed again: two
        # rows of one level and timepoint would be ambiguous for longitudinal/reliability
        have = {(r.kind, r.level) for r in self.rois_of(info)}
        todo = [r for r in pool if r.timepoint == tp and (r.kind, r.level) not in have]
        if not todo:
            raise ValueError(
                f"every {tp} ROI of this patient has its counterpart on this series already"
            )
        return str(tp), todo

    def proposal_job(self) -> Callable[[], list[Roi] | str]:
        """A function computing the proposals for the shown series (run it in a worker).

        The ROI set is read on the calling (GUI) thread; the returned function only
        registers and maps (:func:`propose_rois`) and returns the proposed ROIs, or the
        reason of a refusal as a string (an expected outcome, not an error of the
        worker).  Raises ValueError as :meth:`baseline_rois`.
        """
        if self.root is None:
            raise ValueError("index the DICOM folder first (Study tab)")
        _tp, rois = self.baseline_rois()
        series = list(self.index.series) if self.index is not None else []
        key, timepoint = self.current.info.series_key, str(self.timepoint)  # type: ignore[union-attr]

        def job() -> list[Roi] | str:
            try:
                return propose_rois(series, rois, to_series=key, timepoint=timepoint)
            except ValueError as exc:
                return str(exc)

        return job

    def add_proposals(self, proposals: Sequence[Roi]) -> int:
        """Add proposed ROIs to the ROI set (ids made unique) and redraw the series shown.

        Returns the number added.  A proposal keeps ``proposed=True`` and its
        ``registration`` until the reader confirms or moves it (:meth:`confirm`).
        """
        if self.shapes_layer is not None:
            self.sync()
        rs = self.roiset
        for r in proposals:
            rid = self._unique_id(r.roi_id)
            rs = rs.with_roi(replace(r, roi_id=rid))
            self.roiset = rs  # _unique_id looks at the set
        if proposals:
            self.dirty = True
            self.autosave()
            if self.current is not None:
                self.open_series(self.current.info, keep_edits=False)
        self._emit("rois")
        return len(proposals)

    def propose_from_baseline(self) -> int:
        """:meth:`proposal_job` and :meth:`add_proposals` on this thread (scripts, tests).

        Raises ValueError (the reason) when nothing can be proposed.
        """
        res = self.proposal_job()()
        if isinstance(res, str):
            raise ValueError(res)
        return self.add_proposals(res)

    def confirm(self, indices: Sequence[int] | None = None) -> int:
        """Confirm proposed ROIs (shape indices; None: the selected shapes).

        Their ``proposed`` becomes unset (written without the field); the ``registration``
        record stays as provenance.  Moving or reshaping a proposal confirms it too.
        Returns the number confirmed.
        """
        lay = self.shapes_layer
        if lay is None:
            return 0
        idx = sorted(lay.selected_data) if indices is None else list(indices)
        keys = list(lay.features["key"]) if "key" in lay.features.columns else []
        n = 0
        for i in idx:
            entry = ROI_KEYS.get(str(keys[i])) if i < len(keys) else None
            if entry is not None and entry.roi is not None and entry.roi.proposed:
                ROI_KEYS[str(keys[i])] = replace(entry, roi=replace(entry.roi, proposed=None))
                n += 1
        if n:
            self.sync()
        return n

    # -- label maps and RT dose on the series shown (issue 15) ---------------------------
    def _shown(self) -> SeriesHandle:
        self.settle()  # a series dropped onto the viewer is the one shown
        if self.current is None:
            raise ValueError("open a series first")
        return self.current

    def label_map_job(self, path: str | Path) -> Callable[[], LabelOverlay | str]:
        """A function putting the label map ``path`` on the shown series' grid (run it in a
        worker); it returns the :class:`LabelOverlay` or the reason of a refusal (not on
        the CT's grid, another series, no vertebra label) as one line.

        Raises ValueError when no series is shown.
        """
        return self._overlay_job(read_label_overlay, path)

    def dose_job(self, path: str | Path) -> Callable[[], DoseOverlay | str]:
        """A function sampling the RTDOSE ``path`` on the shown series' voxels (run it in a
        worker) after checking its Frame of Reference and patient; it returns the
        :class:`DoseOverlay` or the reason of a refusal as one line.

        Raises ValueError when no series is shown.
        """
        return self._overlay_job(read_dose_overlay, path)

    def _overlay_job(
        self, read: Callable[[SeriesInfo, str, str | Path], _Ov], path: str | Path
    ) -> Callable[[], _Ov | str]:
        """``read(info, token, path)`` for the shown series, as a worker job whose expected
        refusals come back as one line of text."""
        h = self._shown()
        info, token = h.info, h.token

        def job() -> _Ov | str:
            try:
                return read(info, token, path)
            except (HuRoiError, ValueError, OSError) as exc:
                return _one_line(exc)

        return job

    def show_overlay(self, ov: LabelOverlay | DoseOverlay) -> Any:
        """Show a label map or dose as a layer on the series (replacing one of its kind).

        Raises ValueError when the series shown is no longer the one it was read for.
        """
        h = self._shown()
        if ov.token != h.token:
            raise ValueError("another series is shown now; load it again for this one")
        is_labels = isinstance(ov, LabelOverlay)
        old = self.label_layer if is_labels else self.dose_layer
        if self.viewer is not None and old is not None and old in self.viewer.layers:
            self.viewer.layers.remove(old)
        if is_labels:
            self.label_overlay = ov  # type: ignore[assignment]
        else:
            self.dose_overlay = ov  # type: ignore[assignment]
        lay = None
        if self.viewer is not None:
            if is_labels:
                data, kw = labels_layer_data(ov, h.info)  # type: ignore[arg-type]
            else:
                data, kw = dose_layer_data(ov, h.info)  # type: ignore[arg-type]
            self._claim_name(None, kw["name"])
            with self._adding():
                if is_labels:
                    lay = self.viewer.add_labels(data, **kw)
                else:
                    lay = self.viewer.add_image(data, **kw)
            lay.editable = False
            if self.shapes_layer is not None:  # drawing goes on in the ROI layer
                self.viewer.layers.selection.active = self.shapes_layer
        if is_labels:
            self.label_layer = lay
        else:
            self.dose_layer = lay
        self.measure()
        self._emit("overlay")
        return lay

    def load_label_map(self, path: str | Path) -> LabelOverlay:
        """:meth:`label_map_job` and :meth:`show_overlay` on this thread (scripts, tests).

        Raises ValueError (the reason) when the map is refused; nothing is shown then.
        """
        return self._load_now(self.label_map_job(path))

    def load_dose(self, path: str | Path) -> DoseOverlay:
        """:meth:`dose_job` and :meth:`show_overlay` on this thread (scripts, tests).

        Raises ValueError (the reason) when the dose is refused; nothing is shown then.
        """
        return self._load_now(self.dose_job(path))

    def _load_now(self, job: Callable[[], _Ov | str]) -> _Ov:
        res = job()
        if isinstance(res, str):
            raise ValueError(res)
        self.show_overlay(res)  # type: ignore[arg-type]
        return res

    def _drop_overlays(self, keep_token: str | None = None) -> None:
        """Remove the label map and dose layers unless they belong to ``keep_token``'s
        series (the one still shown), and any stray overlay layer of another series."""
        for attr in ("label", "dose"):
            ov = getattr(self, f"{attr}_overlay")
            if ov is not None and ov.token != keep_token:
                setattr(self, f"{attr}_overlay", None)
                setattr(self, f"{attr}_layer", None)
        if keep_token is None:
            self.dose_means = {}
        if self.viewer is None:
            return
        for lay in list(self.viewer.layers):
            meta = (lay.metadata or {}).get(OVERLAY_KEY)
            if meta is not None and meta.get("token") != keep_token:
                self.viewer.layers.remove(lay)
        for attr in ("label", "dose"):  # the reader deleted the layer: forget it
            lay = getattr(self, f"{attr}_layer")
            if lay is not None and lay not in self.viewer.layers:
                setattr(self, f"{attr}_overlay", None)
                setattr(self, f"{attr}_layer", None)

    def overlay_text(self, voxel: tuple[int, int, int] | None) -> str:
        """The labelled level and the dose at a voxel of the shown series, for the cursor
        status (e.g. ``"   L1   12.34 Gy"``; "" without overlays)."""
        if voxel is None:
            return ""
        out = ""
        if self.label_overlay is not None and self.label_layer_shown():
            lev = self.label_overlay.level_at(*voxel)
            out += f"   {lev}" if lev else "   no level"
        if self.dose_overlay is not None and self.dose_layer_shown():
            d = self.dose_overlay.at(*voxel)
            out += "   dose –" if d is None else f"   {d:.2f} Gy"
        return out

    def label_layer_shown(self) -> bool:
        """The label map layer is in the viewer (always true headless)."""
        return self.viewer is None or (
            self.label_layer is not None and self.label_layer in self.viewer.layers
        )

    def dose_layer_shown(self) -> bool:
        """The dose layer is in the viewer (always true headless)."""
        return self.viewer is None or (
            self.dose_layer is not None and self.dose_layer in self.viewer.layers
        )

    def labels_proposal_job(self) -> Callable[[], tuple[list[Roi], list[str]] | str]:
        """A function proposing ROIs from the label map shown (run it in a worker).

        One target ROI per labelled level without one on this series yet
        (:func:`hu_roi.roisfromlabels.rois_from_labels`, the code of ``hu-roi
        rois-from-labels``); it returns ``(rois, notes)`` or the reason of a refusal.

        Raises
        ------
        ValueError
            No series or label map shown, no timepoint or patient id set, or every
            labelled level has an ROI on this series already.
        """
        h = self._shown()
        ov = self.label_overlay
        if ov is None or ov.token != h.token or not self.label_layer_shown():
            raise ValueError("load a label map for this series first")
        if not self.timepoint:
            raise ValueError("set the timepoint of this series first (ROIs tab)")
        if self.shapes_layer is not None:
            self.sync()
        patient = self.patient_code(h.info)
        if not patient:
            raise ValueError("this series has no patient id: give the study code first")
        have = {r.level for r in self.rois_of(h.info) if r.kind == "target"}
        todo = [lev for lev in ov.levels if lev not in have]
        if not todo:
            raise ValueError("every labelled level has a target ROI on this series already")
        info, accept, timepoint = h.info, h.accept, str(self.timepoint)

        def job() -> tuple[list[Roi], list[str]] | str:
            from hu_roi.io import load_series
            from hu_roi.roisfromlabels import rois_from_labels

            table = {v: lev for v, lev in ov.table.items() if lev in todo}
            try:
                vol = load_series(info, accept=accept)
                return rois_from_labels(
                    ov.labels,
                    vol,
                    table,
                    info=info,
                    timepoint=timepoint,
                    patient_id=patient,
                    source=ov.source,
                )
            except (HuRoiError, ValueError, OSError) as exc:
                return _one_line(exc)

        return job

    def propose_from_labels(self) -> tuple[int, list[str]]:
        """:meth:`labels_proposal_job` and :meth:`add_proposals` on this thread.

        Returns (number added, notes on levels left out).  Raises ValueError (the reason)
        when nothing can be proposed.
        """
        res = self.labels_proposal_job()()
        if isinstance(res, str):
            raise ValueError(res)
        rois, notes = res
        return self.add_proposals(rois), notes

    # -- numbers -------------------------------------------------------------------------
    def measure(self, rois: Sequence[Roi] | None = None) -> list[Measurement]:
        """Measure the shown series' ROIs with the core (same voxels as ``hu-roi measure``)."""
        if self.current is None:
            self.measurements = []
            return []
        if self.shapes_layer is not None:
            self._last_signature = self._signature()
        rois = self.current_rois() if rois is None else rois
        # the flags hu-roi measure puts on the ROI itself: an unconfirmed proposal, a target
        # or height without timepoint or level (longitudinal could not place it)
        self.measurements = [add_flags(self.measure_one(r), *label_flags(r)) for r in rois]
        self.dose_means = (
            {m.roi_id: m.dose_mean_gy for m in self.measurements} if self.dose_overlay else {}
        )
        self.decorate(rois)
        return self.measurements

    def decorate(self, rois: Sequence[Roi] = ()) -> None:
        """Draw what the numbers say on the canvas: labels, colours by kind, sphere extents.

        Each shape is labelled with its level (or kind) and mean HU; its colour is that of
        its kind (the same for a shape just drawn and one read from the ROI file); every
        sphere is drawn on each slice it covers (the circle of that slice's cross-section)
        in a separate, non-editable layer.
        """
        lay = self.shapes_layer
        if self.viewer is None or lay is None or self.current is None:
            return
        by_id = {m.roi_id: m for m in self.measurements}
        feats = lay.features
        labels, colors, widths = [], [], []
        for i in range(len(lay.data)):
            row = feats.iloc[i] if i < len(feats) else {}
            key = str(row.get("key", "") or "")
            entry = ROI_KEYS.get(key)
            kind = str(row.get("kind", "") or "target")
            level = str(row.get("level", "") or "") or None
            m = by_id.get(entry.roi_id) if entry is not None and entry.roi_id else None
            proposed = bool(entry is not None and entry.roi is not None and entry.roi.proposed)
            labels.append(canvas_label(level, kind, m, proposed=proposed))
            colors.append(PROPOSED_COLOR if proposed else edge_color(kind))
            widths.append(PROPOSED_EDGE_WIDTH if proposed else 1.0)
        lay.text = {
            "string": {"array": labels, "default": ""},
            "color": "yellow",
            "size": 10,
            "anchor": "upper_left",
        }
        if colors:
            lay.edge_color = colors
            if list(lay.edge_width) != widths:
                lay.edge_width = widths
        if not lay.selected_data:
            kind = str(lay.feature_defaults.iloc[0].get("kind", "") or "target")
            lay.current_edge_color = edge_color(kind)
        self._draw_sphere_extents(rois)

    def _draw_sphere_extents(self, rois: Sequence[Roi]) -> None:
        from ._geometry import layer_transform

        info = self.current.info  # type: ignore[union-attr]
        data, colors = [], []
        for r in rois:
            for _k, verts in sphere_extent(info, r):
                data.append(layer_transform(info).to_layer(verts))
                colors.append(edge_color(r.kind))
        lay = self.extent_layer
        if lay is not None and lay not in self.viewer.layers:
            lay = self.extent_layer = None
        sig = (info.series_key, tuple(d.tobytes() for d in data), tuple(colors))
        if lay is not None and sig == self._extent_sig:
            return  # unchanged (a drag of another shape): keep the layer as it is
        self._extent_sig = sig
        if lay is None:
            if not data:
                return
            with self._adding():
                lay = self.extent_layer = self.viewer.add_shapes(
                    data,
                    shape_type="ellipse",
                    ndim=3,
                    name="sphere extent",
                    edge_color=colors,
                    edge_width=0.5,
                    face_color="transparent",
                    opacity=0.6,
                    **layer_transform(info).kwargs(),
                )
            lay.editable = False
            if self.shapes_layer is not None:
                self.viewer.layers.selection.active = self.shapes_layer
        else:
            if len(lay.data):
                lay.data = []
            if data:
                lay.add(
                    data,
                    shape_type="ellipse",
                    edge_color=colors,
                    edge_width=0.5,
                    face_color="transparent",
                )
        _set_transform(lay, layer_transform(info).kwargs())

    def measure_one(self, roi: Roi) -> Measurement:
        """One ROI on the shown series: partial volume of the slices it needs, measure_roi."""
        h = self.current
        assert h is not None
        reader = self.roiset.reader or self.reader
        roi_file = str(self.roi_path) if self.roi_path else ""
        try:
            idx = slices_needed(roi, h.info)
        except RoiPlacementError as exc:
            return failed_measurement(
                roi, [exc.code], info=h.info, detail=str(exc), reader=reader, roi_file=roi_file
            )
        try:
            vol = h.volume(idx)
        except Exception as exc:  # noqa: BLE001 - shown as a failed row, like batch
            return failed_measurement(
                roi,
                ["series-load-failed"],
                info=h.info,
                detail=str(exc),
                reader=reader,
                roi_file=roi_file,
            )
        try:
            rm = rasterize_roi(vol, roi) if not roi.shape.is_line else None
        except RoiPlacementError:  # measure_roi makes the fail row with the reason
            rm = None
        m = measure_roi(vol, roi, reader=reader, roi_file=roi_file, mask=rm)
        if rm is None or m.qc_status == "fail":
            return m
        return self._with_overlays(m, roi, vol, rm)

    def _with_overlays(self, m: Measurement, roi: Roi, vol: Any, rm: Any) -> Measurement:
        """The dose columns and label-map flags of ``hu-roi measure --rtdose / --labels``
        from the dose and label layers of the series shown (same rules, same numbers: the
        dose was sampled at the same voxel centres)."""
        from hu_roi.doselabels import annotate

        ov, lo = self.dose_overlay, self.label_overlay
        return annotate(
            m,
            roi,
            vol,
            rm,
            doses=[ov.grid] if ov is not None and ov.grid is not None else [],
            labels=(lo.labels, lo.table, lo.source) if lo is not None else None,
            full_series=True,  # the layers hold the whole series
        )

    def heights(self) -> list[tuple[str, str, float | None, float | None, float | None]]:
        """Vertebral heights of the series shown and their loss against the baseline scan.

        Returns
        -------
        list of (level, kind, length_mm, baseline_mm, loss_pct)
            One row per height line ROI measured on this series (``kind``
            ``height-anterior/middle/posterior``), ordered by level and kind.
            ``baseline_mm`` is the same level and kind on the patient's baseline scan
            (:meth:`baseline_of`; None when there is none, or this is it) and
            ``loss_pct`` = 100 · (baseline − now) / baseline (positive = height lost;
            the trial's fracture endpoint is a loss above 20 %).
        """
        if self.current is None:
            return []
        info = self.current.info
        base = self.baseline_of(info)
        base_len: dict[tuple[str, str], float] = {}
        if base is not None and base.series_key != info.series_key:
            for r in self.rois_of(base):
                if r.kind in HEIGHT_KINDS and r.shape.length_mm is not None:
                    base_len[(r.level or "", r.kind)] = float(r.shape.length_mm)
        out = []
        for m in self.measurements:
            if m.kind not in HEIGHT_KINDS:
                continue
            key = (m.level or "", m.kind)
            b = base_len.get(key)
            now = m.length_mm
            loss = None if b is None or now is None or b <= 0 else 100.0 * (b - now) / b
            out.append((key[0], m.kind, now, b, loss))
        order = {k: i for i, k in enumerate(HEIGHT_KINDS)}
        lv = {x: i for i, x in enumerate(LEVELS)}
        out.sort(key=lambda t: (lv.get(t[0], -1), order[t[1]]))
        return out

    def air_check(self) -> Any:
        """The core's automatic air check on the slices the shown ROIs touch (as batch)."""
        from hu_roi.calibration import auto_air_check

        if self.current is None:
            return None
        idx = sorted({s for m in self.measurements for s in m.slice_indices})
        if not idx:
            idx = [self.current.info.n_slices // 2]
        return auto_air_check(self.current.volume(idx))

    def calibrated_measurements(self) -> list[Measurement]:
        """Measurements of the shown series with the core's calibration flags added.

        As in ``hu-roi measure``: :func:`hu_roi.calibration.apply_calibration` with the
        automatic air check on the loaded slices, plus the header consistency flags
        against the patient's baseline scan found in the folder.
        """
        from hu_roi.calibration import apply_calibration

        if self.current is None or not self.measurements:
            return list(self.measurements)
        key = self.current.info.series_key
        air = {}
        if not any(m.kind == "reference-air" and m.n_voxels > 0 for m in self.measurements):
            ac = self.air_check()
            if ac is not None:
                air[key] = ac
        rows, _ = apply_calibration(self.measurements, {key: self.current.info}, air)
        base = self.baseline_of(self.current.info)
        if base is not None:
            from hu_roi.calibration import consistency_flags
            from hu_roi.measure import add_flags

            extra = consistency_flags(self.current.info, base)
            rows = [add_flags(m, *extra) for m in rows]
        return rows

    def baseline_of(self, info: SeriesInfo) -> SeriesInfo | None:
        """The patient's baseline (T0) series in the index, else the earliest measurable one."""
        if self.index is None:
            return None
        same = [
            s for s in self.index.series if s.patient_id == info.patient_id and is_measurable(s)
        ]
        t0 = [s for s in same if self.timepoint_of(s) == "T0"]
        if t0:
            with_rois = [s for s in t0 if self.rois_of(s)]
            return (with_rois or t0)[0]
        same.sort(key=lambda s: (s.study_date, s.study_time))
        return same[0] if same else None

    def calibration_report(self) -> CalibrationReport:
        """Calibration checks of the shown scan (core functions, see CalibrationReport)."""
        from hu_roi.calibration import (
            consistency_flags,
            header_flags,
            phantom_fit,
            reference_flag,
        )

        if self.current is None:
            return CalibrationReport()
        info = self.current.info
        base = self.baseline_of(info)
        refs = [
            (m.kind, m.mean_hu, reference_flag(m) or "")
            for m in self.measurements
            if m.kind.startswith("reference-")
        ]
        air = None
        if not any(m.kind == "reference-air" for m in self.measurements):
            ac = self.air_check()
            air = (ac.mean_hu, ac.n_voxels, ac.flag or "")
        ph = [m for m in self.measurements if m.kind.startswith("phantom-")]
        phantom = ""
        if ph:
            dens = {r.roi_id: r.density_mg_cm3 for r in self.roiset.rois}
            pairs = [(m.mean_hu, dens.get(m.roi_id)) for m in ph if dens.get(m.roi_id) is not None]
            fit = phantom_fit([a for a, _ in pairs], [b for _, b in pairs])
            phantom = (
                f"{len(pairs)} inserts: mg/cm³ = {fit.intercept:.1f} + {fit.slope:.3f}·HU, R² = {fit.r2:.4f}"
                if fit
                else f"{len(ph)} phantom ROIs, fewer than 2 with a density: no fit"
            )
        facts = [
            ("kVp", "kvp"),
            ("kernel", "kernel"),
            ("slice thickness (mm)", "slice_thickness_mm"),
            ("manufacturer", "manufacturer"),
            ("model", "model"),
            ("contrast agent", "contrast_agent"),
            ("rescale slope", "rescale_slope"),
            ("rescale intercept", "rescale_intercept"),
            ("rescale type", "rescale_type"),
        ]
        rows = [
            (name, _fmt(getattr(info, a)), _fmt(getattr(base, a)) if base is not None else "")
            for name, a in facts
        ]
        same = base is not None and base.series_key == info.series_key
        return CalibrationReport(
            header_flags=header_flags(info),
            consistency_flags=consistency_flags(info, base) if base is not None else [],
            baseline="this scan" if same else ("" if base is None else self.label(base)),
            references=refs,
            air=air,
            phantom=phantom,
            rows=rows,
        )

    # -- files ---------------------------------------------------------------------------
    def load_rois(self, path: str | Path) -> bool:
        """Use the ROI file at ``path`` (a new, empty set when it does not exist yet).

        Returns True when a newer autosave exists (call :meth:`restore_autosave`).
        """
        self.settle()
        p = Path(path)
        if p.exists():
            self.roiset = load_roiset(p)
        else:
            self.roiset = RoiSet(reader=self.reader, path=str(p))
        self.roi_path = p
        self.dirty = False
        self.fresh_ids.clear()
        if self.current is not None:
            self.open_series(self.current.info, keep_edits=False)
        self._emit("roifile")
        return self.autosave_available()

    def autosave_available(self) -> bool:
        """True when ``<roi file>.autosave`` exists and differs from the ROI file."""
        if self.roi_path is None:
            return False
        a = autosave_path(self.roi_path)
        if not a.exists():
            return False
        try:
            saved = json.loads(a.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return saved.get("rois") != [r.to_dict() for r in self.roiset.rois]

    def restore_autosave(self) -> None:
        """Replace the ROIs by the autosaved ones (kept unsaved: save to make them final)."""
        a = autosave_path(self.roi_path)  # type: ignore[arg-type]
        data = json.loads(a.read_text(encoding="utf-8"))
        rs = RoiSet.from_dict(data)
        self.roiset = replace(self.roiset, rois=rs.rois)
        self.dirty = True
        if self.current is not None:
            self.open_series(self.current.info, keep_edits=False)
        self._emit("rois")

    def discard(self) -> None:
        """Drop unsaved edits: delete the autosave and re-read the ROI file."""
        if self.roi_path is not None:
            autosave_path(self.roi_path).unlink(missing_ok=True)
            self.load_rois(self.roi_path)
        self.dirty = False

    def autosave(self) -> Path | None:
        """Write the ROI set (unsaved edits included) to the autosave sidecar, atomically."""
        if self.roi_path is None:
            return None
        a = autosave_path(self.roi_path)
        a.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a, json.dumps(self.roiset.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return a

    def save(self, path: str | Path | None = None) -> Path:
        """Save the ROI set with the core (atomic, refuses to overwrite a changed file)."""
        self.sync()
        target = Path(path) if path is not None else self.roi_path
        if target is None:
            raise ValueError("no ROI file chosen: use save(path)")
        same = self.roiset.path is not None and Path(self.roiset.path).resolve() == target.resolve()
        self.roiset = save_roiset(self.roiset, target, overwrite=not same and not target.exists())
        old_auto = autosave_path(self.roi_path) if self.roi_path else None
        self.roi_path = target
        self.dirty = False
        self.fresh_ids.clear()
        for a in {old_auto, autosave_path(target)} - {None}:
            try:
                os.unlink(a)  # type: ignore[arg-type]
            except OSError:
                pass
        self._emit("saved")
        return target

    def export_csv(self, path: str | Path) -> Path:
        """Measurement CSV of the shown series (core export; same columns as hu-roi measure)."""
        from hu_roi.export import write_measurements_csv

        rows, meta = self.export_rows()
        return write_measurements_csv(rows, path, meta=meta)

    def export_rows(self) -> tuple[list, dict]:
        """The rows and sidecar metadata of :meth:`export_csv` (a snapshot: the file can
        then be written off the GUI thread)."""
        self.sync()
        rows = list(self.calibrated_measurements())
        return rows, {"source": "hu-roi napari plugin", "roi_file": str(self.roi_path or "")}

    @property
    def unsaved(self) -> bool:
        """The ROI file on disk is not the ROI set: unsaved edits, or never written."""
        return self.dirty or self.roi_path is None or not self.roi_path.exists()

    def stored_roi_file(self) -> Path:
        """The ROI file, saved first when :attr:`unsaved` (what the batch commands read)."""
        if self.unsaved:
            self.save()
        assert self.roi_path is not None  # save() names it
        return self.roi_path

    def measure_all(self, out: str | Path) -> Path:
        """Measure every stored ROI of the indexed folder with the core batch; write CSV."""
        from hu_roi.batch import measure_batch
        from hu_roi.export import write_measurements_csv

        if self.root is None:
            raise ValueError("open a DICOM folder first")
        res = measure_batch(self.root, self.stored_roi_file())
        meta = dict(res.meta)
        meta["source"] = "hu-roi napari plugin (measure all stored ROIs)"
        return write_measurements_csv(res.measurements, out, meta=meta)

    def export_dicom(self, out: str | Path, sr_groups: str = "geometry") -> Any:
        """``hu-roi export-dicom`` of every stored ROI of the folder into the folder ``out``:
        per series a DICOM SR and SEG, and ``export.csv``.

        The ROI file is saved first when it has unsaved edits (the export reads it, as
        the command does).  Series that cannot be exported (no UIDs) are skipped and
        listed in the result rather than stopping the export.

        Returns
        -------
        hu_roi.exportdicom.ExportResult

        Raises
        ------
        ValueError
            No folder indexed.
        hu_roi.errors.HuRoiError
            The folder is refused (not new and not an earlier export), nothing exportable.
        """
        from hu_roi.exportdicom import export_dicom_to

        if self.root is None:
            raise ValueError("open a DICOM folder first")
        roi_file = self.stored_roi_file()
        return export_dicom_to(
            out,
            self.root,
            roi_file,
            inputs=[("the ROI file", roi_file), ("the DICOM folder", self.root)],
            skip_unexportable=True,
            sr_groups=sr_groups,
        )


def propose_rois(
    series: Sequence[SeriesInfo],
    baseline: Sequence[Roi],
    *,
    to_series: str,
    timepoint: str,
) -> list[Roi]:
    """Baseline ROIs proposed on a follow-up series by ``hu-roi propagate``'s code (no Qt).

    Calls :func:`hu_roi.propagate.propose` (registration, refusal rules, ids and the
    ``registration`` record) with the command's defaults and returns its ROIs
    (``proposed=True``).  Safe to call in a worker thread (it touches no layer).

    Parameters
    ----------
    series : sequence of SeriesInfo
        The indexed series of the folder (both series among them).
    baseline : sequence of Roi
        ROIs of one timepoint on the baseline series of the same patient.
    to_series : str
        series_key of the follow-up series.
    timepoint : str
        Timepoint of the follow-up (``T0``…``T3``).

    Raises
    ------
    ValueError
        Nothing can be proposed (poor registration, series that do not overlap, …); the
        message is the reason (:class:`hu_roi.propagate.PropagationError`).
    """
    from hu_roi import propagate

    hits = [s for s in series if s.series_key == to_series]
    if len(hits) != 1:
        raise ValueError(f"the follow-up series is no longer in the folder's index ({to_series})")
    # the module's defaults read now (not at import): the command's current settings
    return propagate.propose(
        baseline,
        series,
        hits[0],
        timepoint=timepoint,
        margin_mm=propagate.DEFAULT_MARGIN_MM,
        min_ncc=propagate.DEFAULT_MIN_NCC,
    )


def _one_line(exc: BaseException) -> str:
    """An exception's message as one line (the reason shown to the reader)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _set_transform(layer: Any, kw: dict) -> None:
    """Give a layer the scale/translate or affine of ``kw`` (resetting the other)."""
    if kw.get("affine") is not None:
        layer.scale, layer.translate = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
        layer.affine = kw["affine"]
    else:
        layer.affine = np.eye(4)
        layer.scale, layer.translate = kw["scale"], kw["translate"]


def _clear_source(layer: Any) -> None:
    """Forget where a layer came from (napari shows the path in tooltips and status)."""
    if layer is None:
        return
    try:
        from napari.layers._source import Source

        layer._source = Source()
    except Exception:  # noqa: BLE001 - another napari: nothing to hide
        log.debug("cannot clear the layer source", exc_info=True)


def _file_safe(text: str) -> str:
    """``text`` as a file name part: letters, digits, ``-`` and ``.``; others ``_``."""
    import re

    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "series"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
