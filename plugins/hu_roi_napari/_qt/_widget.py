"""The hu-roi dock widget: study browser, ROI tools with live statistics, calibration.

All Qt code of the plugin lives in this package.  The widget only wires controls to a
:class:`~hu_roi_napari._session.Session`, which calls the core for every number.

Keyboard (active while the viewer window has focus):

* ``Alt+Right`` / ``Alt+Left`` — next / previous series of the reading list (the next
  case when blinded; napari keymap)
* ``]`` / ``[`` — next / previous vertebral level for the next ROI (napari keymap)
* ``Ctrl+S`` — save the ROI file (napari's *Save Selected Layers* moves to Ctrl+Shift+S)
* ``Alt+Y`` — confirm the selected proposed ROIs (napari keymap)
* ``Alt+1`` / ``Alt+2`` / ``Alt+3`` — bone / soft tissue / lung window (napari keymap)
* ``Alt+4`` / ``Alt+5`` / ``Alt+6`` — axial / sagittal / coronal view (napari keymap;
  napari itself uses Alt+S and Alt+C for screenshots)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hu_roi.clibase import plural
from hu_roi.roi import HEIGHT_KINDS, LESION_TYPES, LEVELS, REFERENCE_KINDS, TIMEPOINTS

from .._series import handle_of_layer
from .._session import Session, next_level
from .._viewing import (
    VIEWS,
    WINDOW_PRESETS,
    cursor_text,
    orientation_letters,
    slice_text,
    voxel_at,
    window_limits,
    window_text,
)

log = logging.getLogger(__name__)

__all__ = ["HuRoiWidget", "TABLE_COLUMNS"]

#: Columns of the live statistics table.
TABLE_COLUMNS = (
    "ROI",
    "n",
    "mean HU",
    "SD",
    "median",
    "area mm²",
    "QC",
    "level",
    "kind",
    "shape",
    "slice",
    "dose Gy",
)
#: Table columns holding numbers (right-aligned).
_NUMERIC = {1, 2, 3, 4, 5, 10, 11}
KINDS = ("target", *REFERENCE_KINDS, "phantom-water", *HEIGHT_KINDS)
#: Loss of vertebral body height against baseline that is the trial's fracture endpoint (%).
HEIGHT_LOSS_ENDPOINT_PCT = 20.0
DEBOUNCE_MS = 150
PREVIEW_MS = 80


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return fmt.format(v)


def _is_plugin_layer(layer: Any) -> bool:
    """A layer made by this plugin: a series image or a Shapes layer of ROIs."""
    return handle_of_layer(layer) is not None or "hu_roi_rois" in (layer.metadata or {})


class _CloseGuard(QObject):
    """Event filter on the main window: ask before closing with unsaved ROI edits."""

    def __init__(self, widget: HuRoiWidget) -> None:
        super().__init__(widget)
        self._w = widget

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Close:
            if not self._w.confirm_close():
                event.ignore()
                return True
            self._w.teardown()
        return False


class HuRoiWidget(QWidget):
    """Dock widget of hu-roi (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a proxy of the viewer whose layers are new proxy
        # objects at each access: the session compares layers by identity, and hooks the
        # status computation, so it works on the viewer itself
        napari_viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.viewer = napari_viewer
        self.session = Session(napari_viewer)
        self.session.listeners.append(self._on_session)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._sync_now)
        self.session.on_change = self._timer.start
        # live numbers while a shape is dragged (napari emits ``data`` only on release)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_MS)
        self._preview_timer.timeout.connect(self._preview_now)
        self.session.on_redraw = self._preview_timer.start
        self.last_message = ""
        self._series_line = ""
        #: the napari worker of the long task running (indexing, Measure all), if any
        self.worker: Any = None
        self._loading_pickers = False
        self._selection_watched: set[int] = set()
        self._prompted: set[str] = set()

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_study_tab(), "Study")
        self.tabs.addTab(self._build_roi_tab(), "ROIs")
        self.tabs.addTab(self._build_calibration_tab(), "Calibration")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(self._build_view_row())
        lay.addWidget(self.tabs)
        self.status = QLabel("Open a DICOM folder (Study tab).")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

        self._shortcuts: list[QShortcut] = []
        for keys, fn in (("Ctrl+S", self.save),):
            sc = QShortcut(QKeySequence(keys), self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(fn)
            self._shortcuts.append(sc)

        self._keys: list[str] = []
        for keys, fn in (
            ("Alt-1", lambda: self.set_window("bone")),
            ("Alt-2", lambda: self.set_window("soft tissue")),
            ("Alt-3", lambda: self.set_window("lung")),
            ("Alt-4", lambda: self.set_view("axial")),
            ("Alt-5", lambda: self.set_view("sagittal")),
            ("Alt-6", lambda: self.set_view("coronal")),
            ("Alt-Right", lambda: self.next_series(1)),
            ("Alt-Left", lambda: self.next_series(-1)),
            ("]", lambda: self.step_level(1)),
            ("[", lambda: self.step_level(-1)),
            ("Alt-Y", self.confirm_selected),
            ("Control-S", self.save),
        ):
            napari_viewer.bind_key(keys, lambda _v, f=fn: f(), overwrite=True)
            self._keys.append(keys)
        self._overlays: dict[str, Any] = {}
        self._moved_actions: list[tuple[Any, Any]] = []
        self._take_ctrl_s()
        self._install_cursor_status()
        napari_viewer.dims.events.point.connect(self.update_overlays)
        napari_viewer.dims.events.order.connect(self.update_overlays)
        self._camera().events.orientation.connect(self.update_overlays)

        self._guard = _CloseGuard(self)
        self._guarded: QWidget | None = None
        #: plugin layers added to the viewer (reader, sample data) and not yet adopted
        self._pending: list[Any] = [lay for lay in napari_viewer.layers if _is_plugin_layer(lay)]
        self.session.on_settle = self.adopt_pending
        napari_viewer.layers.events.inserted.connect(self._on_layer_inserted)
        if self._pending:
            QTimer.singleShot(0, self.adopt_pending)

    # ------------------------------------------------------------------ building the UI
    def _build_view_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self._window_buttons: dict[str, QPushButton] = {}
        for i, name in enumerate(WINDOW_PRESETS):
            w, lv = WINDOW_PRESETS[name]
            b = QPushButton(name.capitalize())
            b.setToolTip(f"{name} window W {w:.0f} / L {lv:.0f} (Alt+{i + 1})")
            b.clicked.connect(lambda _=False, n=name: self.set_window(n))
            row.addWidget(b)
            self._window_buttons[name] = b
        self.window_label = QLabel("W – / L –")
        self.window_label.setToolTip("Window width / level of the series shown (HU)")
        row.addWidget(self.window_label)
        self.view_combo = QComboBox()
        self.view_combo.addItems(list(VIEWS))
        self.view_combo.setToolTip(
            "Axial, sagittal or coronal view of the series (Alt+4 / Alt+5 / Alt+6); "
            "ROIs are drawn on axial slices"
        )
        self.view_combo.currentTextChanged.connect(self.set_view)
        row.addWidget(self.view_combo)
        return row

    def _build_study_tab(self) -> QWidget:
        w = QWidget()
        g = QGridLayout(w)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("DICOM folder")
        b_browse = QPushButton("Browse…")
        b_browse.clicked.connect(self._browse_folder)
        b_index = QPushButton("Index")
        b_index.setToolTip("Scan the folder (headers only) and list patients × timepoints × series")
        b_index.clicked.connect(lambda: self.open_folder(self.folder_edit.text(), background=True))
        g.addWidget(QLabel("Folder"), 0, 0)
        g.addWidget(self.folder_edit, 0, 1)
        g.addWidget(b_browse, 0, 2)
        g.addWidget(b_index, 0, 3)

        self.roi_file_label = QLabel("ROI file: –")
        self.roi_file_label.setWordWrap(True)
        b_load = QPushButton("ROI file…")
        b_load.setToolTip("Choose the *.rois.json file to read and save")
        b_load.clicked.connect(self._choose_roi_file)
        g.addWidget(self.roi_file_label, 1, 0, 1, 3)
        g.addWidget(b_load, 1, 3)

        self.blind_check = QCheckBox("Blinded reading")
        self.blind_check.setToolTip(
            "Hide patient id, dates and clinical fields; show series as 'Case NN' in a "
            "shuffled order (reproducible with the seed)"
        )
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 999_999)
        self.seed_spin.setPrefix("seed ")
        self.blind_check.toggled.connect(lambda on: self.set_blinded(on, self.seed_spin.value()))
        self.seed_spin.editingFinished.connect(
            lambda: self.session.blinded and self.set_blinded(True, self.seed_spin.value())
        )
        g.addWidget(self.blind_check, 2, 0, 1, 2)
        g.addWidget(self.seed_spin, 2, 2, 1, 2)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Series", "Timepoint", "ROIs", "Problems"])
        self.tree.itemActivated.connect(self._open_item)
        self.tree.itemClicked.connect(self._open_item)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        g.addWidget(self.tree, 3, 0, 1, 4)

        b_prev = QPushButton("◀ Previous")
        b_prev.setToolTip("Previous series of the reading list (Alt+Left)")
        b_prev.clicked.connect(lambda: self.next_series(-1))
        b_next = QPushButton("Next ▶")
        b_next.setToolTip("Next series of the reading list (Alt+Right)")
        b_next.clicked.connect(lambda: self.next_series(1))
        g.addWidget(b_prev, 4, 0, 1, 2)
        g.addWidget(b_next, 4, 2, 1, 2)
        self.reread_fraction = QDoubleSpinBox()
        self.reread_fraction.setRange(0.05, 1.0)
        self.reread_fraction.setSingleStep(0.05)
        self.reread_fraction.setValue(0.2)
        self.reread_fraction.setPrefix("fraction ")
        b_reread = QPushButton("Start re-read…")
        b_reread.setToolTip(
            "Blinded re-read of a random fraction of the series already read (with the "
            "seed), saved to a separate ROI file for hu-roi reliability"
        )
        b_reread.clicked.connect(
            lambda: self.start_reread(self.reread_fraction.value(), self.seed_spin.value())
        )
        g.addWidget(self.reread_fraction, 5, 0, 1, 2)
        g.addWidget(b_reread, 5, 2, 1, 2)
        return w

    def _build_roi_tab(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        form = QFormLayout()
        self.timepoint_combo = QComboBox()
        self.timepoint_combo.addItems(["", *TIMEPOINTS])
        self.timepoint_combo.currentTextChanged.connect(self._timepoint_changed)
        self.timepoint_label = QLabel("Timepoint")
        form.addRow(self.timepoint_label, self.timepoint_combo)
        lev = QHBoxLayout()
        self.level_combo = QComboBox()
        self.level_combo.addItems(["", *LEVELS])
        self.level_combo.setCurrentText("L1")
        b_next_level = QPushButton("Next level ↓")
        b_next_level.setToolTip("Next vertebral level for the next ROI (]; [ goes up)")
        b_next_level.clicked.connect(lambda: self.step_level(1))
        lev.addWidget(self.level_combo)
        lev.addWidget(b_next_level)
        form.addRow("Level", lev)
        self.irradiated_combo = QComboBox()
        self.irradiated_combo.addItems(["", "yes", "no"])
        self.irradiated_label = QLabel("Irradiated")
        form.addRow(self.irradiated_label, self.irradiated_combo)
        self.lesion_combo = QComboBox()
        self.lesion_combo.addItems(["", *LESION_TYPES])
        form.addRow("Lesion type", self.lesion_combo)
        self.kind_combo = QComboBox()
        self.kind_combo.setEditable(True)
        self.kind_combo.addItems(list(KINDS))
        self.kind_combo.setToolTip("target, reference-air/fat/muscle/water, or phantom-<name>")
        form.addRow("Kind", self.kind_combo)
        for c in (self.level_combo, self.irradiated_combo, self.lesion_combo, self.kind_combo):
            c.currentTextChanged.connect(self._push_defaults)
        # editing a picker while ROIs are selected changes that attribute of those ROIs
        for attr, c in (
            ("level", self.level_combo),
            ("irradiated", self.irradiated_combo),
            ("lesion_type", self.lesion_combo),
            ("kind", self.kind_combo),
        ):
            c.currentTextChanged.connect(lambda _t, a=attr: self._edit_selected(a))
        v.addLayout(form)

        tools = QGridLayout()
        self._tool_buttons = {}
        for i, (label, mode, tip) in enumerate(
            (
                ("Ellipse/circle", "add_ellipse", "Drag on the slice; hold Shift for a circle"),
                ("Polygon", "add_polygon", "Click vertices; double-click or Esc to finish"),
                ("Rectangle", "add_rectangle", "Stored as a 4-point polygon"),
                ("Select/move", "select", "Move, resize or rotate ROIs; Delete removes"),
            )
        ):
            b = QPushButton(label)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, m=mode: self.set_mode(m))
            tools.addWidget(b, i // 2, i % 2)
            self._tool_buttons[mode] = b
        self.sphere_radius = QDoubleSpinBox()
        self.sphere_radius.setRange(0.5, 100.0)
        self.sphere_radius.setValue(8.0)
        self.sphere_radius.setSuffix(" mm")
        b_sphere = QPushButton("Sphere at centre")
        b_sphere.setToolTip("Add a sphere ROI at the centre of the current view (move it after)")
        b_sphere.clicked.connect(self.add_sphere_at_view_centre)
        tools.addWidget(b_sphere, 2, 0)
        tools.addWidget(self.sphere_radius, 2, 1)
        heights = QHBoxLayout()
        for kind in HEIGHT_KINDS:
            part = kind.removeprefix("height-")
            b = QPushButton(f"{part.capitalize()} height")
            b.setToolTip(
                f"Draw the {part} height of the vertebral body as a line (best on the "
                "sagittal view, Alt+5): click its two end points"
            )
            b.clicked.connect(lambda _=False, k=kind: self.draw_height(k))
            heights.addWidget(b)
        tools.addLayout(heights, 4, 0, 1, 2)
        b_apply = QPushButton("Apply to selected")
        b_apply.setToolTip("Set level/irradiated/lesion/kind of the selected ROIs")
        b_apply.clicked.connect(self.apply_to_selected)
        b_delete = QPushButton("Delete selected")
        b_delete.clicked.connect(self.delete_selected)
        tools.addWidget(b_apply, 3, 0)
        tools.addWidget(b_delete, 3, 1)
        b_propose = QPushButton("Propose from baseline")
        b_propose.setToolTip(
            "Register this follow-up to the patient's baseline series and propose its ROIs "
            "here (hu-roi propagate; drawn orange and thin, labelled 'proposed')"
        )
        b_propose.clicked.connect(lambda: self.propose_from_baseline(background=True))
        b_confirm = QPushButton("Confirm proposals")
        b_confirm.setToolTip(
            "Confirm the selected proposed ROIs (Alt+Y; moving one confirms it too)"
        )
        b_confirm.clicked.connect(self.confirm_selected)
        tools.addWidget(b_propose, 5, 0)
        tools.addWidget(b_confirm, 5, 1)
        b_labels = QPushButton("Load label map…")
        b_labels.setToolTip(
            "Show a vertebra label map (NIfTI .nii/.nii.gz, e.g. TotalSegmentator, or a DICOM "
            "SEG) of this series as a layer; it must lie on the CT's grid"
        )
        b_labels.clicked.connect(lambda: self.load_label_map(background=True))
        b_from_labels = QPushButton("Propose ROIs from labels")
        b_from_labels.setToolTip(
            "One ellipse in the trabecular core of each labelled vertebral body without a "
            "target ROI here (hu-roi rois-from-labels; drawn orange and thin, 'proposed')"
        )
        b_from_labels.clicked.connect(lambda: self.propose_from_labels(background=True))
        b_dose = QPushButton("Load RT dose…")
        b_dose.setToolTip(
            "Show an RTDOSE of this series' Frame of Reference as a translucent layer (Gy); "
            "the cursor and the table show the dose"
        )
        b_dose.clicked.connect(lambda: self.load_dose(background=True))
        tools.addWidget(b_labels, 6, 0)
        tools.addWidget(b_from_labels, 6, 1)
        tools.addWidget(b_dose, 7, 0)
        v.addLayout(tools)

        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._table_selection)
        v.addWidget(self.table, stretch=1)
        self.heights_label = QLabel("")
        self.heights_label.setWordWrap(True)
        self.heights_label.setToolTip(
            "Vertebral heights of this scan and their loss against the patient's baseline "
            f"(> {HEIGHT_LOSS_ENDPOINT_PCT:.0f} % is the fracture endpoint)"
        )
        v.addWidget(self.heights_label)

        files = QGridLayout()
        for i, (label, fn, tip) in enumerate(
            (
                ("Save ROIs", self.save, "Save the ROI file (atomic; Ctrl+S)"),
                ("Save ROIs as…", self.save_as, "Save under another name"),
                (
                    "Export CSV…",
                    lambda: self.export_csv(background=True),
                    "Measurement CSV of this series (hu-roi measure columns)",
                ),
                (
                    "Measure all…",
                    lambda: self.measure_all(background=True),
                    "Measure every stored ROI of the folder (hu-roi measure)",
                ),
                (
                    "Export DICOM SR/SEG…",
                    lambda: self.export_dicom(background=True),
                    "Every stored ROI as DICOM: per series a Structured Report (TID 1500) "
                    "and a SEG, for PACS, 3D Slicer and OHIF (hu-roi export-dicom)",
                ),
            )
        ):
            b = QPushButton(label)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, f=fn: f())
            files.addWidget(b, i // 2, i % 2)
        v.addLayout(files)
        return w

    def _build_calibration_tab(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        self.cal_summary = QLabel("No series shown.")
        self.cal_summary.setWordWrap(True)
        v.addWidget(self.cal_summary)
        self.cal_table = QTableWidget(0, 3)
        self.cal_table.setHorizontalHeaderLabels(["Header", "This scan", "Baseline"])
        self.cal_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.cal_table.verticalHeader().setVisible(False)
        self.cal_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        v.addWidget(self.cal_table, stretch=1)
        b = QPushButton("Refresh")
        b.clicked.connect(self.refresh_calibration)
        v.addWidget(b)
        return w

    # ------------------------------------------------------------------ reading aids
    def _camera(self) -> Any:
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; older: viewer.camera
        return scene.camera if scene is not None else self.viewer.camera

    def set_window(self, name: str) -> None:
        """Apply a window preset (``bone``, ``soft tissue``, ``lung``) to the series shown."""
        img = self.session.image_layer
        if img is None:
            self.message("Open a series first.", warning=True)
            return
        img.contrast_limits = window_limits(*WINDOW_PRESETS[name])
        self.update_window_label()

    def update_window_label(self, *_: Any) -> None:
        """Show the current window width/level of the series shown."""
        img = self.session.image_layer
        self.window_label.setText("W – / L –" if img is None else window_text(img.contrast_limits))

    def set_view(self, name: str) -> None:
        """Axial, sagittal or coronal view (world LPS planes; superior up in reformats).

        ROIs are drawn on the series' own slices; the reformats are for looking (and for
        vertebral heights), napari reads every slice of the series once for them.
        """
        if name not in VIEWS:
            return
        if self.view_combo.currentText() != name:
            self.view_combo.blockSignals(True)
            self.view_combo.setCurrentText(name)
            self.view_combo.blockSignals(False)
        shown, orient = VIEWS[name]
        hidden = next(a for a in range(3) if a not in shown)
        if self.viewer.dims.ndim == 3:
            self.viewer.dims.order = (hidden, *shown)
            self._camera().orientation2d = orient
            self.viewer.reset_view()
        self.update_overlays()

    def update_overlays(self, *_: Any) -> None:
        """R/L/A/P markers at the canvas edges and the slice index and position (mm)."""
        from napari.components.overlays import TextOverlay

        cur = self.session.current
        dims = self.viewer.dims
        show = cur is not None and dims.ndisplay == 2 and dims.ndim == 3
        texts: dict[str, str] = {}
        if show:
            displayed = tuple(dims.displayed)
            letters = orientation_letters(displayed, tuple(self._camera().orientation2d))
            texts = {
                "middle_left": letters["left"],
                "middle_right": letters["right"],
                "top_center": letters["top"],
                "bottom_center": letters["bottom"],
                "top_left": slice_text(cur.info, tuple(dims.point), displayed),  # type: ignore[union-attr]
            }
        overlays = self.viewer.canvas.overlays
        for pos in ("middle_left", "middle_right", "top_center", "bottom_center", "top_left"):
            key = f"hu_roi_{pos}"
            ov = self._overlays.get(pos)
            if ov is None:
                if not show:
                    continue
                size = 10 if pos == "top_left" else 13  # small: clear of the top marker
                ov = TextOverlay(position=pos, font_size=size, color="yellow", visible=True)
                overlays[key] = ov
                self._overlays[pos] = ov
            ov.text = texts.get(pos, "")
            ov.visible = show

    def overlay_texts(self) -> dict[str, str]:
        """What the canvas markers show now (position → text; only visible ones)."""
        return {p: o.text for p, o in self._overlays.items() if o.visible}

    def _take_ctrl_s(self) -> None:
        """Ctrl+S saves the ROI set: napari's *Save Selected Layers* moves to Ctrl+Shift+S.

        Two shortcuts on one key are ambiguous to Qt, and then neither fires.  The menu
        entry keeps working (and its new key is shown in the menu); the old key is given
        back when the dock closes.
        """
        win = getattr(self.viewer.window, "_qt_window", None)
        if win is None:
            return
        ctrl_s = QKeySequence("Ctrl+S")
        for menu_act in win.menuBar().actions():
            menu = menu_act.menu()
            for act in menu.actions() if menu is not None else ():
                if act.shortcut() == ctrl_s:
                    self._moved_actions.append((act, act.shortcut()))
                    act.setShortcut(QKeySequence("Ctrl+Shift+S"))

    def _install_cursor_status(self) -> None:
        """Put the image's HU and the voxel's LPS position into napari's status bar.

        napari computes the status from the *active* layer (the ROI Shapes layer while
        drawing, which shows shape indices); its status thread and its own update both
        call the viewer's ``_calc_status_from_cursor``, so the hook wraps that method of
        this viewer only.
        """
        v = self.viewer
        self._status_viewer = v
        self._orig_status = v._calc_status_from_cursor
        object.__setattr__(v, "_calc_status_from_cursor", self._status_from_cursor)

    def _status_from_cursor(self) -> tuple[Any, str] | None:
        res = self._orig_status()
        s = self.session
        if res is None or s is None:
            return res
        status, tip = res
        img, cur = s.image_layer, s.current
        if cur is not None and img is not None and img in self.viewer.layers:
            try:
                vox = voxel_at(cur.info, img, self.viewer.cursor.position)
                hu = None if vox is None else float(cur.slice_hu(vox[0])[vox[1], vox[2]])
                text = cursor_text(cur.info, vox, hu) + s.overlay_text(vox)
            except Exception:  # noqa: BLE001 - runs on napari's status thread: never raise
                log.debug("cursor status failed", exc_info=True)
                return res
            status = {
                "layer_base": s.label(cur.info),
                "source_type": "",
                "plugin": "",
                "coordinates": text,
            }
        elif s.blinded:
            coords = status.get("coordinates", "") if isinstance(status, dict) else ""
            status = {"layer_base": "", "source_type": "", "plugin": "", "coordinates": coords}
        if s.blinded:
            tip = ""
        return status, tip

    # ------------------------------------------------------------------ dialogs (overridable)
    def ask(self, title: str, question: str, buttons: tuple[str, ...]) -> str:
        """Ask the user; returns the button text.  Tests replace this method."""
        box = QMessageBox(self)
        box.setWindowTitle(title)
        box.setText(question)
        btns = {box.addButton(b, QMessageBox.ButtonRole.ActionRole): b for b in buttons}
        box.exec()
        return btns.get(box.clickedButton(), buttons[-1])

    def ask_text(self, title: str, question: str) -> str:
        """Ask for a line of text; "" when cancelled.  Tests replace this method."""
        from qtpy.QtWidgets import QInputDialog

        text, ok = QInputDialog.getText(self, title, question)
        return text if ok else ""

    def choose_path(self, title: str, *, save: bool, filter: str = "", directory: str = "") -> str:
        """File dialog; returns "" when cancelled.  Tests replace this method."""
        if save:
            return QFileDialog.getSaveFileName(self, title, directory, filter)[0]
        if filter == "folder":
            return QFileDialog.getExistingDirectory(self, title, directory)
        return QFileDialog.getOpenFileName(self, title, directory, filter)[0]

    def message(self, text: str, *, warning: bool = False) -> None:
        """Show a one-line message in the status bar of the widget (and log it)."""
        self.last_message = text
        self.status.setText(text)
        (log.warning if warning else log.info)(text)
        if warning:
            try:
                from napari.utils.notifications import show_warning

                show_warning(text)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ actions
    def _browse_folder(self) -> None:
        p = self.choose_path("DICOM folder", save=False, filter="folder")
        if p:
            self.folder_edit.setText(p)
            self.open_folder(p, background=True)

    def run_in_background(
        self, fn: Any, *args: Any, desc: str, done: Any, failed: str = "Failed"
    ) -> Any:
        """Run ``fn(*args)`` in napari's ``thread_worker`` with napari's progress bar.

        ``done(result)`` runs on the GUI thread; an error is shown as a message.  Only
        one piece of long work at a time: returns None (and says so) while one runs.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            self.message("Still working on the previous task; wait for it.", warning=True)
            return None
        worker = create_worker(fn, *args, _progress={"desc": desc})
        self.worker = worker

        def _returned(res: Any) -> None:
            self.worker = None
            done(res)

        def _errored(exc: Exception) -> None:
            self.worker = None
            self.message(f"{failed}: {exc}", warning=True)

        worker.returned.connect(_returned)
        worker.errored.connect(_errored)
        self.message(f"{desc}…")
        worker.start()
        return worker

    def open_folder(
        self,
        path: str | Path,
        *,
        roi_file: str | Path | None = None,
        background: bool = False,
    ) -> None:
        """Index a DICOM folder and list it; loads its ROI file (see Session.open_folder).

        ``background=True`` (the Index button) indexes in a worker thread, so the viewer
        stays responsive while thousands of headers are read; the study opens when done.
        """
        path = str(path).strip()
        if not path:
            self.message("Type or browse a DICOM folder first.", warning=True)
            return
        if not self.confirm_discard():
            return
        self.folder_edit.setText(path)
        if background:
            from .._series import index_cached

            if not Path(path).is_dir():
                self.message(f"Not a folder: {path}", warning=True)
                return
            self.run_in_background(
                index_cached,
                path,
                desc="Indexing DICOM headers",
                failed="Cannot index the folder",
                done=lambda idx: self._folder_indexed(path, roi_file, idx),
            )
            return
        self._folder_indexed(path, roi_file, None)

    def _folder_indexed(self, path: str, roi_file: str | Path | None, index: Any) -> None:
        try:
            res = self.session.open_folder(path, roi_file=roi_file, index=index)
        except FileNotFoundError as exc:
            self.message(str(exc), warning=True)
            return
        n_ok = len(self.session.reading_list)
        self.message(
            f"{plural(len(res.series), 'series', 'series')} ({n_ok} measurable), "
            f"{plural(len(res.skipped), 'file')} skipped. "
            "Click a series or press Next."
        )
        self._offer_autosave()

    def _choose_roi_file(self) -> None:
        p = self.choose_path(
            "ROI file",
            save=False,
            filter="ROI sets (*.rois.json)",
            directory=str(self.session.suggested_path("rois").parent),
        )
        if p:
            self.load_rois(p)

    def load_rois(self, path: str | Path) -> None:
        """Use another ROI file (asks first when there are unsaved edits)."""
        if not self.confirm_discard():
            return
        try:
            self.session.load_rois(path)
        except Exception as exc:  # noqa: BLE001 - bad file: say why, keep going
            self.message(f"Cannot read ROI file: {exc}", warning=True)
            return
        self._offer_autosave()

    def _offer_autosave(self) -> None:
        if self.session.autosave_available():
            ans = self.ask(
                "Unsaved ROI edits found",
                "An autosave with ROI edits that were never saved exists for this ROI file "
                "(e.g. after a crash). Restore them?",
                ("Restore", "Ignore"),
            )
            if ans == "Restore":
                self.session.restore_autosave()
                self.message("Restored the autosaved ROI edits (not yet saved).")

    def set_blinded(self, on: bool, seed: int = 0) -> None:
        """Blinded reading on/off (see Session.set_blinded)."""
        if self.blind_check.isChecked() != on:
            self.blind_check.blockSignals(True)
            self.blind_check.setChecked(on)
            self.blind_check.blockSignals(False)
        self.seed_spin.setValue(seed)
        self.session.set_blinded(on, seed)
        self._apply_blinding_ui()

    def start_reread(self, fraction: float, seed: int, path: str | Path | None = None) -> bool:
        """Start a blinded re-read session (see Session.start_reread); True when started."""
        try:
            subset = self.session.start_reread(fraction, seed, path)
        except Exception as exc:  # noqa: BLE001 - no ROIs, a save refused: say why
            self.message(f"No re-read started: {exc}", warning=True)
            return False
        self.blind_check.blockSignals(True)
        self.blind_check.setChecked(True)
        self.blind_check.blockSignals(False)
        self.seed_spin.setValue(seed)
        self._apply_blinding_ui()
        self.message(
            f"Re-read of {plural(len(subset), 'series', 'series')}, blinded; ROIs go to "
            f"{self.session.roi_file_name()}. Press Next."
        )
        self.tabs.setCurrentIndex(0)
        return True

    def _apply_blinding_ui(self) -> None:
        b = self.session.blinded
        for wdg in (
            self.timepoint_combo,
            self.timepoint_label,
            self.irradiated_combo,
            self.irradiated_label,
        ):
            wdg.setVisible(not b)
        self.folder_edit.setEchoMode(
            QLineEdit.EchoMode.Password if b else QLineEdit.EchoMode.Normal
        )
        self._update_roi_file_label()
        self.refresh_tree()
        self.refresh_table()
        self.refresh_calibration()

    def _open_item(self, item: QTreeWidgetItem, column: int = 0) -> None:
        key = item.data(0, Qt.ItemDataRole.UserRole)
        if not key:
            return
        if not item.data(1, Qt.ItemDataRole.UserRole):
            self.message(f"Not measurable: {item.text(3)}", warning=True)
            return
        cur = self.session.current
        if cur is not None and cur.info.series_key == key and self.session.image_layer is not None:
            return  # already shown
        self.open_series(key)

    def open_series(self, key: str) -> None:
        """Show one series of the folder with its ROIs."""
        try:
            self.session.open_series(key)
        except Exception as exc:  # noqa: BLE001 - e.g. unreadable pixel data
            self.message(f"Cannot open the series: {exc}", warning=True)

    def next_series(self, step: int = 1) -> None:
        """Next/previous series of the reading list."""
        if not self.session.reading_list:
            self.message("Index a folder first.", warning=True)
            return
        self.session.next_series(step)

    def step_level(self, step: int = 1) -> None:
        """Move the level picker to the next (or previous) vertebral level."""
        # for the next ROI: never relabels the selected ones (Apply to selected does)
        self._loading_pickers = True
        try:
            self.level_combo.setCurrentText(
                next_level(self.level_combo.currentText() or None, step)
            )
        finally:
            self._loading_pickers = False
        self._push_defaults()

    def _edit_selected(self, attr: str) -> None:
        """A picker changed: give the selected ROIs that attribute (not while loading)."""
        lay = self.session.shapes_layer
        if self._loading_pickers or lay is None or not lay.selected_data:
            return
        if str(lay.mode) != "select":
            return  # napari selects a shape just drawn: the pickers are for the next one
        if attr == "irradiated" and self.session.blinded:
            return
        value = self._attrs()[attr]
        self.session.set_attributes(sorted(lay.selected_data), **{attr: value})

    def _on_shape_selection(self, *_: Any) -> None:
        """Selecting an ROI loads its attributes into the pickers."""
        lay = self.session.shapes_layer
        if lay is None or not lay.selected_data or str(lay.mode) != "select":
            return
        i = min(lay.selected_data)
        if i >= len(lay.features):
            return
        row = lay.features.iloc[i]
        self._loading_pickers = True
        try:
            for col, combo in (
                ("level", self.level_combo),
                ("irradiated", self.irradiated_combo),
                ("lesion_type", self.lesion_combo),
                ("kind", self.kind_combo),
            ):
                if col in lay.features.columns:
                    v = row.get(col)
                    combo.setCurrentText("" if v is None or v != v else str(v))
        finally:
            self._loading_pickers = False

    def _watch_selection(self) -> None:
        lay = self.session.shapes_layer
        if lay is None or id(lay) in self._selection_watched:
            return
        ev = lay.selected_data.events  # psygnal's Selection (napari >= 0.6) or napari's
        (getattr(ev, "items_changed", None) or ev.changed).connect(self._on_shape_selection)
        self._selection_watched.add(id(lay))

    def _prompt_missing(self) -> None:
        """Ask once per series for what new ROI ids would otherwise hold placeholders for.

        A series without PatientID (anonymised exports) needs a study code: ``hu-roi
        measure`` fails target ROIs without one (``patient-id-missing``).  A series whose
        timepoint is unknown gets ``TX`` in its ids.  Not asked in blinded reading (the
        reader must not know either); a message says so instead.
        """
        s = self.session
        cur = s.current
        if cur is None or cur.info.series_key in self._prompted:
            return
        self._prompted.add(cur.info.series_key)
        if s.blinded:
            if s.needs_study_code() or s.timepoint is None:
                self.message(
                    "This series has no study code or timepoint: ROIs drawn now get "
                    "placeholder ids (P, TX) to be completed after unblinding.",
                    warning=True,
                )
            return
        if s.timepoint is None:
            ans = self.ask(
                "Timepoint",
                "The timepoint of this scan is not known (no stored ROIs, no T0–T3 folder). "
                "Which timepoint is it? ROI ids get 'TX' until it is set.",
                ("T0", "T1", "T2", "T3", "Later"),
            )
            if ans in ("T0", "T1", "T2", "T3"):
                self.timepoint_combo.setCurrentText(ans)
        if s.needs_study_code():
            code = self.ask_text(
                "Study code",
                "This series has no PatientID (anonymised export). Type the study code of "
                "the patient: hu-roi measure fails ROIs without one (patient-id-missing).",
            )
            if code.strip():
                s.set_study_code(code)
                self.message(f"Study code {code.strip()} given to this series' ROIs.")
            else:
                self.message(
                    "No study code: ROIs of this series get the placeholder 'P' and "
                    "hu-roi measure will fail them (patient-id-missing).",
                    warning=True,
                )

    def _timepoint_changed(self, tp: str) -> None:
        self.session.timepoint = tp or None

    def _attrs(self) -> dict[str, Any]:
        irr = self.irradiated_combo.currentText()
        return {
            "level": self.level_combo.currentText() or None,
            "irradiated": None if not irr else irr == "yes",
            "lesion_type": self.lesion_combo.currentText() or None,
            "kind": self.kind_combo.currentText().strip() or "target",
        }

    def _push_defaults(self, *_: Any) -> None:
        attrs = self._attrs()
        if self.session.blinded:
            attrs.pop("irradiated")
        self.session.set_defaults(**attrs)

    def draw_height(self, kind: str) -> None:
        """Draw a vertebral height (kind ``height-anterior/middle/posterior``) as a line."""
        self.kind_combo.setCurrentText(kind)
        self.set_mode("add_line")

    def heights_text(self) -> str:
        """The heights line of the ROIs tab (loss against baseline hidden when blinded)."""
        rows = self.session.heights()
        parts = []
        for level, kind, now, base, loss in rows:
            name = f"{level} {kind.removeprefix('height-')}".strip()
            txt = f"{name} {_num(now)} mm"
            if not self.session.blinded and base is not None:
                txt += f" (baseline {_num(base)} mm"
                if loss is not None:
                    txt += f", loss {loss:.1f} %"
                    if loss > HEIGHT_LOSS_ENDPOINT_PCT:
                        txt += f" ⚠ > {HEIGHT_LOSS_ENDPOINT_PCT:.0f} %"
                txt += ")"
            parts.append(txt)
        return ("Heights: " + "; ".join(parts)) if parts else ""

    def set_mode(self, mode: str) -> None:
        """Shapes layer mode (add_ellipse, add_polygon, add_rectangle, select)."""
        lay = self.session.shapes_layer
        if lay is None:
            self.message("Open a series first.", warning=True)
            return
        self._push_defaults()
        self.viewer.layers.selection.active = lay
        lay.mode = mode

    def add_sphere_at_view_centre(self) -> None:
        """Add a sphere ROI at the centre of the view on the current slice."""
        s = self.session
        if s.image_layer is None:
            self.message("Open a series first.", warning=True)
            return
        world = list(self.viewer.dims.point)
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; older: viewer.camera
        camera = scene.camera if scene is not None else self.viewer.camera
        centre = list(camera.center)[-2:]
        for ax, val in zip(self.viewer.dims.displayed, centre, strict=False):
            world[ax] = val
        idx = s.transform.from_layer(s.image_layer.world_to_data(world))[0]
        attrs = self._attrs()
        s.add_sphere(idx, float(self.sphere_radius.value()), **attrs)

    def apply_to_selected(self) -> None:
        """Give the selected ROIs the picker's attributes."""
        lay = self.session.shapes_layer
        if lay is None or not lay.selected_data:
            self.message("Select ROIs first (Select/move, click a shape or a table row).")
            return
        attrs = self._attrs()
        if self.session.blinded:
            attrs.pop("irradiated")
        self.session.set_attributes(sorted(lay.selected_data), **attrs)

    def delete_selected(self) -> None:
        """Remove the selected ROIs."""
        lay = self.session.shapes_layer
        if lay is None or not lay.selected_data:
            return
        lay.remove_selected()
        self._sync_now()

    def propose_from_baseline(self, *, background: bool = False) -> int | None:
        """Propose the patient's baseline ROIs on the series shown (``hu-roi propagate``).

        The registration runs in napari's ``thread_worker`` when ``background=True`` (the
        button; returns None); a refusal (poor registration, no overlap, no baseline) is
        shown as a message and nothing is added.  Returns the number proposed otherwise.
        """
        return self._propose(
            self.session.proposal_job, "Registering the baseline", self._proposals_ready, background
        )

    def _propose(
        self,
        make_job: Callable[[], Callable[[], Any]],
        desc: str,
        done: Callable[[Any], int | None],
        background: bool,
    ) -> int | None:
        """Run a proposal job (in napari's worker with ``background``); a job that cannot
        start (ValueError) is shown as a message."""
        try:
            job = make_job()
        except ValueError as exc:
            self.message(f"Nothing proposed: {exc}", warning=True)
            return None
        if background:
            self.run_in_background(job, desc=desc, failed="Nothing proposed", done=done)
            return None
        return done(job())

    def _proposals_ready(self, rois: list | str) -> int | None:
        if isinstance(rois, str):  # refused (poor registration, no overlap): say why
            self.message(f"Nothing proposed: {rois}", warning=True)
            return None
        n = self.session.add_proposals(rois)
        self.message(
            f"{plural(n, 'ROI')} proposed from the baseline: check each, then move it or "
            "press Confirm proposals."
        )
        return n

    # ------------------------------------------------------------------ label maps, dose
    def load_label_map(self, path: str | Path | None = None, *, background: bool = False) -> bool:
        """Show a vertebra label map (NIfTI or DICOM SEG) of the series shown as a layer.

        Asks for the file when ``path`` is None.  A map not on the CT's grid, of another
        series or without vertebra labels is refused: the reason is shown (one line) and
        no layer is added.  ``background=True`` reads it in a worker (returns False at once).
        """
        return self._load_overlay("label map", path, background=background)

    def load_dose(self, path: str | Path | None = None, *, background: bool = False) -> bool:
        """Show an RTDOSE of the series shown as a translucent dose layer (Gy).

        Its Frame of Reference (and patient) must be the series'; otherwise the reason is
        shown (one line) and no layer is added.
        """
        return self._load_overlay("RT dose", path, background=background)

    def _load_overlay(self, what: str, path: str | Path | None, *, background: bool) -> bool:
        s = self.session
        if s.current is None:
            self.message(f"Open a series first, then load its {what}.", warning=True)
            return False
        if path is None:
            filt = (
                "Label maps (*.nii *.nii.gz *.dcm);;All files (*)"
                if what == "label map"
                else "RT dose (*.dcm);;All files (*)"
            )
            path = self.choose_path(
                "Label map" if what == "label map" else "RT dose",
                save=False,
                filter=filt,
                directory=str(s.root.parent if s.root is not None else ""),
            )
            if not path:
                return False
        job = s.label_map_job(path) if what == "label map" else s.dose_job(path)
        done = lambda res: self._overlay_ready(what, res)  # noqa: E731
        if background:
            self.run_in_background(
                job,
                desc=f"Reading the {what}",
                failed=f"{what[0].upper()}{what[1:]} not loaded",
                done=done,
            )
            return False
        return done(job())

    def _overlay_ready(self, what: str, res: Any) -> bool:
        if isinstance(res, str):
            self.message(
                f"{what[0].upper()}{what[1:]} not loaded: {self._neutral(res)}", warning=True
            )
            return False
        try:
            self.session.show_overlay(res)
        except ValueError as exc:
            self.message(f"{what[0].upper()}{what[1:]} not loaded: {exc}", warning=True)
            return False
        name = "" if self.session.blinded else f" {res.source}"
        if what == "label map":
            levels = res.levels
            self.message(
                f"Label map{name} shown: {plural(len(levels), 'labelled level')} "
                f"({', '.join(levels)}). Propose ROIs from labels, or compare by eye."
            )
        else:
            self.message(
                f"RT dose{name} shown: 0–{res.max_gy:.2f} Gy on this series; the cursor "
                "and the table give the dose."
            )
        return True

    def _neutral(self, text: str) -> str:
        """``text`` with the shown series' UID and key replaced by its label when blinded
        (the core's refusals name the series)."""
        cur = self.session.current
        if not self.session.blinded or cur is None:
            return text
        label = self.session.label(cur.info)
        for ident in (cur.info.series_instance_uid, cur.info.series_key):
            if ident:
                text = text.replace(ident, label)
        return text

    def propose_from_labels(self, *, background: bool = False) -> int | None:
        """Propose one target ROI per labelled level (the label map shown) without one.

        Runs :func:`hu_roi.roisfromlabels.rois_from_labels` in a worker when
        ``background=True`` (returns None); a refusal is shown as a message and nothing is
        added.  Returns the number proposed otherwise.
        """
        return self._propose(
            self.session.labels_proposal_job,
            "Proposing ROIs from the label map",
            self._label_proposals_ready,
            background,
        )

    def _label_proposals_ready(self, res: tuple | str) -> int | None:
        if isinstance(res, str):
            self.message(f"Nothing proposed: {self._neutral(res)}", warning=True)
            return None
        rois, notes = res
        n = self.session.add_proposals(rois)
        text = (
            f"{plural(n, 'ROI')} proposed from the label map: check each, then move it or "
            "press Confirm proposals."
        )
        if notes:
            text += " Note: " + self._neutral("; ".join(notes))
        self.message(text, warning=bool(notes))
        return n

    def confirm_selected(self) -> None:
        """Confirm the selected proposed ROIs."""
        lay = self.session.shapes_layer
        if lay is None or not lay.selected_data:
            self.message("Select proposed ROIs first (Select/move, or a table row).")
            return
        n = self.session.confirm()
        self.message(f"{plural(n, 'proposal')} confirmed.")

    def save(self) -> None:
        """Save the ROI file (the core refuses to overwrite a file changed on disk)."""
        if self.session.roi_path is None:
            self.save_as()
            return
        try:
            self.session.save()
        except Exception as exc:  # noqa: BLE001 - conflict, permissions: say why
            self.message(f"Not saved: {exc}", warning=True)
            return
        self.message(
            f"Saved {plural(len(self.session.roiset.rois), 'ROI')} to {self.session.roi_file_name()}."
        )

    def save_as(self) -> None:
        p = self.choose_path(
            "Save ROI file",
            save=True,
            filter="ROI sets (*.rois.json)",
            directory=str(self.session.suggested_path("rois")),
        )
        if not p:
            return
        if not p.endswith(".rois.json"):
            p += ".rois.json"
        try:
            self.session.save(p)
        except Exception as exc:  # noqa: BLE001
            self.message(f"Not saved: {exc}", warning=True)
            return
        self._update_roi_file_label()
        self.message(f"Saved to {self.session.roi_file_name()}.")

    def export_csv(
        self, path: str | Path | None = None, *, background: bool = False
    ) -> Path | None:
        """Measurement CSV of the series shown (core export).

        ``background=True`` (the button) takes the rows on the GUI thread (they read the
        ROI layer) and writes the file in a worker thread; returns None then.
        """
        if self.session.current is None:
            self.message("Open a series first.", warning=True)
            return None
        path = path or self.choose_path(
            "Export measurements",
            save=True,
            filter="CSV (*.csv)",
            directory=str(self.session.suggested_path("export")),
        )
        if not path:
            return None
        if background:
            import functools

            from hu_roi.export import write_measurements_csv

            try:
                rows, meta = self.session.export_rows()
            except Exception as exc:  # noqa: BLE001
                self.message(f"Export failed: {exc}", warning=True)
                return None
            self.run_in_background(
                functools.partial(write_measurements_csv, rows, path, meta=meta),
                desc="Writing the measurement CSV",
                failed="Export failed",
                done=lambda out: self.message(
                    f"Wrote {plural(len(rows), 'row')} to {Path(out).name}."
                ),
            )
            return None
        try:
            out = self.session.export_csv(path)
        except Exception as exc:  # noqa: BLE001
            self.message(f"Export failed: {exc}", warning=True)
            return None
        self.message(f"Wrote {plural(len(self.session.measurements), 'row')} to {Path(out).name}.")
        return out

    def measure_all(
        self, path: str | Path | None = None, *, background: bool = False
    ) -> Path | None:
        """Measure every stored ROI of the folder with the core batch; write a CSV.

        ``background=True`` (the button) measures in a worker thread (napari's progress)
        after saving the ROI file on the GUI thread; returns None then.
        """
        if self.session.root is None:
            self.message("Index a folder first.", warning=True)
            return None
        path = path or self.choose_path(
            "Measure all stored ROIs",
            save=True,
            filter="CSV (*.csv)",
            directory=str(self.session.suggested_path("measure-all")),
        )
        if not path:
            return None
        if background:
            s = self.session
            if not self._saved_first():
                return None
            self.run_in_background(
                s.measure_all,
                path,
                desc="Measuring all stored ROIs",
                failed="Measure all failed",
                done=lambda out: self.message(f"Measured all stored ROIs into {Path(out).name}."),
            )
            return None
        try:
            out = self.session.measure_all(path)
        except Exception as exc:  # noqa: BLE001
            self.message(f"Measure all failed: {exc}", warning=True)
            return None
        self.message(f"Measured all stored ROIs into {Path(out).name}.")
        return out

    def _saved_first(self) -> bool:
        """Save the ROI file when it is not on disk as shown (on the GUI thread: saving
        reads the ROI layer); False when it still has unsaved edits (save refused)."""
        if self.session.unsaved:
            self.save()
            return not self.session.dirty
        return True

    def export_dicom(
        self,
        folder: str | Path | None = None,
        sr_groups: str | None = None,
        *,
        background: bool = False,
    ) -> Any:
        """Every stored ROI as DICOM SR and SEG (``hu-roi export-dicom``) into a folder.

        Asks for the folder (new, or an earlier export, which is replaced) and for what
        the SR groups point at: the ROI geometry (viewers, PACS) or the SEG segment (3D
        Slicer's QuantitativeReporting).  ``background=True`` (the button) exports in a
        worker thread after saving the ROI file on the GUI thread; returns None then, else
        the :class:`hu_roi.exportdicom.ExportResult` (None when cancelled or refused).
        """
        s = self.session
        if s.root is None:
            self.message("Index a folder first.", warning=True)
            return None
        folder = folder or self.choose_path(
            "Export DICOM SR/SEG into a folder",
            save=True,
            directory=str(s.suggested_path("dicom-export")),
        )
        if not folder:
            return None
        if sr_groups is None:
            ans = self.ask(
                "DICOM SR measurement groups",
                "What should each SR measurement group point at?",
                ("ROI geometry (OHIF, PACS)", "SEG segment (3D Slicer)", "Cancel"),
            )
            if ans == "Cancel":
                return None
            sr_groups = "segment" if ans.startswith("SEG") else "geometry"
        if not self._saved_first():
            return None
        if background:
            self.run_in_background(
                s.export_dicom,
                folder,
                sr_groups,
                desc="Exporting DICOM SR and SEG",
                failed="DICOM export failed",
                done=lambda res: self._exported(res, folder),
            )
            return None
        try:
            res = s.export_dicom(folder, sr_groups)
        except Exception as exc:  # noqa: BLE001 - the reason, as one line
            self.message(f"DICOM export failed: {exc}", warning=True)
            return None
        self._exported(res, folder)
        return res

    def _exported(self, res: Any, folder: str | Path) -> None:
        n_sr = sum(n.endswith(".SR.dcm") for n in res.files)
        skipped = sum(r["exported"] != "true" for r in res.rows)
        text = (
            f"Exported {plural(res.n_exported, 'ROI')} in {plural(n_sr, 'SR')} and "
            f"{plural(n_sr, 'SEG')} into {Path(folder).name} ({skipped} skipped"
        )
        if res.skipped_series:
            _key, why = res.skipped_series[0]
            text += f"; {plural(len(res.skipped_series), 'series', 'series')} not exported: {why}"
        self.message(text + ").")

    def confirm_discard(self) -> bool:
        """True when there are no unsaved edits, or the user chose to save/discard them."""
        if not self.session.dirty:
            return True
        ans = self.ask(
            "Unsaved ROI edits",
            "The ROI file has unsaved edits (they are autosaved next to it). Save them now?",
            ("Save", "Discard", "Cancel"),
        )
        if ans == "Save":
            self.save()
            return not self.session.dirty
        if ans == "Discard":
            self.session.discard()
            return True
        return False

    def confirm_close(self) -> bool:
        """Called when the viewer window closes: warn about unsaved ROI edits."""
        self._sync_now()
        return self.confirm_discard()

    # ------------------------------------------------------------------ layer adoption
    def _on_layer_inserted(self, event: Any) -> None:
        lay = event.value
        s = self.session
        if s.adding_layers or lay is s.shapes_layer or lay is s.image_layer:
            return  # the session's own layers
        if not _is_plugin_layer(lay):
            return
        # adopted on the next turn of the event loop, when the reader's Shapes layer is
        # there too, or earlier by the session's next action (Session.settle)
        self._pending.append(lay)
        QTimer.singleShot(0, self.adopt_pending)

    def adopt_pending(self) -> None:
        """Make the last plugin image layer added to the viewer the current series.

        Runs once per batch of inserted layers: from a timer, or from
        :meth:`Session.settle` before the session's next action, whichever comes first.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        s = self.session
        mine = {id(s.shapes_layer), id(s.image_layer)}
        layers = [lay for lay in self.viewer.layers if id(lay) not in mine]
        images = [lay for lay in pending if handle_of_layer(lay) is not None and lay in layers]
        shapes = [lay for lay in layers if "hu_roi_rois" in (lay.metadata or {})]
        if images:
            self._adopt(images[-1], shapes)

    def _adopt(self, image: Any, shapes: list[Any]) -> None:
        h = handle_of_layer(image)
        match = [s for s in shapes if s.metadata["hu_roi_rois"].get("token") == h.token]
        shp = match[-1] if match else None
        roi_file = shp.metadata["hu_roi_rois"].get("roi_file") if shp is not None else None
        s = self.session
        if s.root is None and h.root:
            try:
                s.open_folder(h.root, roi_file=roi_file)
            except Exception as exc:  # noqa: BLE001
                self.message(f"Cannot index {h.root}: {exc}", warning=True)
        elif roi_file and s.roi_path is None:
            s.load_rois(roi_file)
        s.adopt(image, shp)

    # ------------------------------------------------------------------ refresh
    def _sync_now(self) -> None:
        self._timer.stop()
        try:
            self.session.sync()
        except Exception as exc:  # noqa: BLE001 - never break the event loop
            log.exception("sync failed")
            self.message(f"ROI update failed: {exc}", warning=True)

    def _preview_now(self) -> None:
        try:
            self.session.preview()
        except Exception:  # noqa: BLE001 - a half-drawn shape: wait for the finished edit
            log.debug("preview failed", exc_info=True)

    def _on_session(self, what: str) -> None:
        if what in ("preview", "overlay"):
            self.refresh_table()  # "overlay": a dose adds its column's values
            return
        if what == "closed":
            self._watch_image()
            self.update_overlays()
            self.refresh_table()
            self.refresh_calibration()
        if what in ("folder", "blinded"):
            if self.session.root is not None:
                self.folder_edit.setText(str(self.session.root))
            self.refresh_tree()
        if what == "folder":
            self.tabs.setCurrentIndex(0)  # the new study's list
        if what == "blinded" and self.session.blinded:
            # napari keeps the last status (a layer name, a path) until the mouse moves
            self.viewer.status = ""
            self.viewer.tooltip.text = ""
        if what in ("rois", "saved"):
            self._series_status()
            self.refresh_tree()
        if what in ("folder", "roifile", "saved", "blinded"):
            self._update_roi_file_label()
        if what == "series":
            tp = self.session.timepoint or ""
            self.timepoint_combo.blockSignals(True)
            self.timepoint_combo.setCurrentText(tp)
            self.timepoint_combo.blockSignals(False)
            self._push_defaults()
            if self.session.current is not None:
                self._series_status(force=True)
                self.tabs.setCurrentIndex(1)
            self.refresh_tree()
            self._watch_image()
            self._watch_selection()
            self.update_overlays()
            self._prompt_missing()
        if what in ("series", "rois", "saved", "roifile"):
            self.refresh_table()
            self.refresh_calibration()
            if self.session.problems:
                self.message("; ".join(self.session.problems), warning=True)

    def _series_status(self, *, force: bool = False) -> None:
        """The status line about the series shown, with its current ROI count.

        Rewritten after every ROI change while it is the line shown (a message about
        something else, e.g. a save, stays until the next series).
        """
        cur = self.session.current
        if cur is None or not (force or self.last_message == self._series_line):
            return
        n = len(self.session.measurements)
        self._series_line = (
            f"{self.session.label(cur.info)}: {plural(n, 'ROI')}. Draw with the ROI tools."
        )
        self.message(self._series_line)

    def _watch_image(self) -> None:
        """Follow the contrast limits of the image shown (the W/L label)."""
        img = self.session.image_layer
        old = getattr(self, "_watched_image", None)
        if old is not img:
            if old is not None:
                try:
                    old.events.contrast_limits.disconnect(self.update_window_label)
                except Exception:  # noqa: BLE001 - layer already gone
                    pass
            if img is not None:
                img.events.contrast_limits.connect(self.update_window_label)
            self._watched_image = img
        self.update_window_label()

    def _update_roi_file_label(self) -> None:
        p = self.session.roi_path
        star = " (unsaved edits)" if self.session.dirty else ""
        self.roi_file_label.setText(f"ROI file: {self.session.roi_file_name()}{star}")
        self.roi_file_label.setToolTip("" if self.session.blinded or p is None else str(p))

    def refresh_tree(self) -> None:
        """Rebuild the study browser list."""
        self.tree.clear()
        cur = self.session.current.info.series_key if self.session.current else None
        parents: dict[str, QTreeWidgetItem] = {}
        for row in self.session.series_rows():
            if self.session.blinded:
                parent = self.tree.invisibleRootItem()
            else:
                pid = row["patient"] or "(no patient id)"
                if pid not in parents:
                    parents[pid] = QTreeWidgetItem(self.tree, [pid])
                    parents[pid].setExpanded(True)
                parent = parents[pid]
            it = QTreeWidgetItem(
                parent, [row["label"], row["timepoint"], str(row["n_rois"]), row["problems"]]
            )
            it.setData(0, Qt.ItemDataRole.UserRole, row["key"])
            it.setData(1, Qt.ItemDataRole.UserRole, row["measurable"])
            if not row["measurable"]:
                for c in range(4):
                    it.setForeground(c, Qt.GlobalColor.gray)
            if row["key"] == cur:
                f = it.font(0)
                f.setBold(True)
                it.setFont(0, f)
                self.tree.setCurrentItem(it)

    def table_rows(self) -> list[list[str]]:
        """The statistics table as text (what the table shows)."""
        rows = []
        ms = self.session.calibrated_measurements()
        blinded = self.session.blinded
        for i, m in enumerate(ms):
            name = f"ROI {i + 1}" if blinded else m.roi_id
            flags = [f for f in m.qc_flags if not (blinded and f.endswith("-differs-from-T0"))]
            rows.append(
                [
                    name,
                    str(m.n_voxels),
                    _num(m.mean_hu),
                    _num(m.sd_hu),
                    _num(m.median_hu),
                    _num(m.area_mm2 if m.area_mm2 is not None else m.volume_mm3),
                    (m.qc_status + (": " + ", ".join(flags) if flags else "")),
                    m.level or "",
                    m.kind,
                    m.shape,
                    "" if m.slice_index is None else str(m.slice_index),
                    _num(self.session.dose_means.get(m.roi_id), "{:.2f}"),
                ]
            )
        return rows

    def refresh_table(self) -> None:
        """Refill the statistics table from the session's measurements."""
        rows = self.table_rows()
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if c in _NUMERIC:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(r, c, item)
        self.table.blockSignals(False)
        self.heights_label.setText(self.heights_text())
        self._update_roi_file_label()

    def _table_selection(self) -> None:
        lay = self.session.shapes_layer
        if lay is None:
            return
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if not rows:
            return
        lay.selected_data = set(rows)
        if rows[0] < len(lay.data):
            k = int(round(self.session.transform.from_layer(lay.data[rows[0]])[0, 0]))
            self.session.show_slice(k)
        lay.refresh()

    def refresh_calibration(self) -> None:
        """Recompute the calibration panel (core calibration functions)."""
        try:
            rep = self.session.calibration_report()
        except Exception as exc:  # noqa: BLE001
            self.cal_summary.setText(f"Calibration checks failed: {exc}")
            return
        if self.session.current is None:
            self.cal_summary.setText("No series shown.")
            self.cal_table.setRowCount(0)
            return
        lines = []
        blinded = self.session.blinded
        flags = rep.header_flags + ([] if blinded else rep.consistency_flags)
        lines.append("Header checks: " + (", ".join(flags) if flags else "pass"))
        if blinded:  # whether this scan is the baseline would reveal its timepoint
            lines.append("Comparison with the baseline scan: hidden in blinded reading")
        elif rep.baseline:
            lines.append(f"Baseline: {rep.baseline}")
        else:
            lines.append("Baseline: none found in the folder")
        for kind, mean, flag in rep.references:
            lines.append(f"{kind}: {_num(mean)} HU {'⚠ ' + flag if flag else 'ok'}")
        if rep.air is not None:
            mean, n, flag = rep.air
            lines.append(
                f"Automatic air check: {_num(mean)} HU over {n} voxels "
                f"{'⚠ ' + flag if flag else 'ok'}"
            )
        if rep.phantom:
            lines.append(f"Phantom: {rep.phantom}")
        self.cal_summary.setText("\n".join(lines))
        self.cal_table.setColumnHidden(2, blinded)
        self.cal_table.setRowCount(len(rep.rows))
        for r, (name, a, b) in enumerate(rep.rows):
            for c, text in enumerate((name, a, "" if blinded else b)):
                self.cal_table.setItem(r, c, QTableWidgetItem(text))

    # ------------------------------------------------------------------ teardown
    def teardown(self) -> None:
        """Stop timers and drop references to the viewer (the window is closing)."""
        self._timer.stop()
        self._preview_timer.stop()
        self._pending.clear()
        if getattr(self, "_orig_status", None) is not None:
            self._status_viewer.__dict__.pop("_calc_status_from_cursor", None)
            self._orig_status = None
        for act, key in self._moved_actions:
            try:
                act.setShortcut(key)
            except RuntimeError:  # the menu is gone already
                pass
        self._moved_actions.clear()
        for keys in self._keys:
            try:
                self.viewer.bind_key(keys, None)
            except Exception:  # noqa: BLE001 - already unbound
                pass
        self._keys.clear()
        try:
            self.viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
        except Exception:  # noqa: BLE001 - already gone
            pass
        sess = self.session
        if sess is not None:
            sess.on_change = sess.on_redraw = sess.on_settle = None
            sess.listeners.clear()
            if sess.shapes_layer is not None:
                sess.shapes_layer.events.data.disconnect(sess._on_data)
                sess.shapes_layer.events.features.disconnect(sess._on_data)
                sess.shapes_layer.events.set_data.disconnect(sess._on_redraw)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Once docked, watch the main window's close to warn about unsaved edits."""
        super().showEvent(event)
        top = self.window()
        if top is not self and top is not self._guarded:
            top.installEventFilter(self._guard)
            self._guarded = top

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._timer.stop()
        super().closeEvent(event)

    def all_texts(self) -> list[str]:
        """Every text this widget shows on any of its tabs (labels, fields, lists, tables).

        For the blinding tests: each tab is brought to the front in turn, so hidden
        pages are included; widgets hidden by blinding stay excluded.
        """
        out: list[str] = [self.status.text()]
        current = self.tabs.currentIndex()
        for t in range(self.tabs.count()):
            self.tabs.setCurrentIndex(t)
            out.append(self.tabs.tabText(t))
            out.extend(self._visible_texts(self.tabs.widget(t)))
        self.tabs.setCurrentIndex(current)
        return [t for t in out if t]

    def _visible_texts(self, root: QWidget) -> list[str]:
        out: list[str] = []
        for wdg in root.findChildren(QWidget):
            if not wdg.isVisibleTo(root):
                continue
            if isinstance(wdg, QLabel | QPushButton | QCheckBox):
                out.append(wdg.text())
            elif isinstance(wdg, QLineEdit) and wdg.echoMode() == QLineEdit.EchoMode.Normal:
                out.append(wdg.text())
            elif isinstance(wdg, QComboBox):
                out.extend(wdg.itemText(i) for i in range(wdg.count()))
            elif isinstance(wdg, QTableWidget):
                out.extend(
                    wdg.horizontalHeaderItem(c).text()
                    for c in range(wdg.columnCount())
                    if wdg.horizontalHeaderItem(c) is not None
                )
                for r in range(wdg.rowCount()):
                    for c in range(wdg.columnCount()):
                        it = wdg.item(r, c)
                        if it is not None:
                            out.append(it.text())
            elif isinstance(wdg, QTreeWidget):
                stack = [wdg.invisibleRootItem()]
                while stack:
                    it = stack.pop()
                    for i in range(it.childCount()):
                        ch = it.child(i)
                        out.extend(ch.text(c) for c in range(wdg.columnCount()))
                        stack.append(ch)
            out.append(wdg.toolTip())
        return [t for t in out if t]
