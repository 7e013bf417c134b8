#!/usr/bin/env python
"""Screenshots of the hu-roi napari plugin, from a real napari window (needs an X server).

Usage::

    xvfb-run -a .venv/bin/python scripts/make_screenshots.py [--out docs/screenshots]

What it does, as a new user would (menus → plugin calls, mouse drags on the canvas):

1. opens napari, docks *Plugins › hu-roi* and *File › Open Sample › hu-roi*
   (P01's baseline scan with its 9 stored ROIs) → ``sample_rois.png`` (ROI table),
   ``study_browser.png`` and ``calibration.png``;
2. indexes ``sample_dicom/dicom`` with a new, empty ROI file, opens patient P02's
   baseline from the study browser, draws three ellipses with the mouse (T12, L1, L2,
   using *Next level*), exports the measurement CSV → ``drawn_rois.png`` (with the HU
   and LPS position under the cursor in napari's status bar);
3. switches to the sagittal view and draws L1's anterior, middle and posterior heights
   → ``heights_sagittal.png``; the soft-tissue window → ``soft_tissue_window.png``;
4. loads the sample plan's RT dose (*Load RT dose…*) over the same scan, sagittal →
   ``rt_dose.png`` (the dose column of the ROI table filled).

It prints what it did and the timings (time to the first slice, fresh and warm); a
non-zero exit means a step failed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "screenshots"), help="PNG folder")
    ap.add_argument("--size", default="1360x860", help="window size WxH (pixels)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))

    t0 = time.perf_counter()
    import napari
    from qtpy.QtCore import QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="hu-roi")
    viewer.window._qt_window.resize(width, height)  # script only: plugins must not do this
    dock, w = viewer.window.add_plugin_dock_widget("hu-roi")
    viewer.window._qt_window.resizeDocks([dock], [600], Qt.Orientation.Horizontal)
    app = QApplication.instance()

    def pump(seconds: float = 0.2) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.01)

    def shot(name: str) -> None:
        from PIL import Image

        pump(0.4)
        img = viewer.screenshot(canvas_only=False, flash=False)
        # 256-colour palette PNG: a fraction of the size, same look for a UI screenshot
        pal = Image.fromarray(img[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        pal.save(out / name, optimize=True)
        print(f"  wrote {out / name} ({(out / name).stat().st_size // 1024} KB)")

    pump()
    print(f"napari + plugin up in {time.perf_counter() - t0:.1f} s")

    def first_slice(t_start: float) -> float:
        """Seconds from ``t_start`` until the shown series' slice is drawn."""
        for _ in range(2000):
            lay = w.session.image_layer
            if lay is not None and getattr(lay, "loaded", True):
                break
            app.processEvents()
            time.sleep(0.005)
        return time.perf_counter() - t_start

    # 1. sample data with its stored ROIs -----------------------------------------------
    t = time.perf_counter()
    viewer.open_sample("hu-roi", "sample-ct")
    for _ in range(2000):
        if w.session.image_layer is not None:
            break
        app.processEvents()
        time.sleep(0.005)
    fresh = first_slice(t)
    print(
        f"time to first slice, fresh (first series in a new napari): {fresh:.2f} s "
        f"({time.perf_counter() - t0:.1f} s since the script started)"
    )
    for _ in range(300):
        pump(0.05)
        if len(w.session.measurements) >= 9:
            break
    print(
        f"sample opened and measured in {time.perf_counter() - t:.1f} s: "
        f"{len(w.session.measurements)} ROIs"
    )
    if len(w.session.measurements) < 9:
        print("the widget did not pick up the sample's ROIs", file=sys.stderr)
        return 1
    w.tabs.setCurrentIndex(1)
    w.table.selectRow(1)  # L1: jumps to its slice and selects its outline
    shot("sample_rois.png")
    w.tabs.setCurrentIndex(0)
    shot("study_browser.png")
    w.tabs.setCurrentIndex(2)
    shot("calibration.png")

    # 2. a new reader draws three ROIs with the mouse ---------------------------------
    work = Path(tempfile.mkdtemp(prefix="hu-roi-trial-"))
    roi_file = work / "trial.rois.json"
    t = time.perf_counter()
    w.open_folder(REPO / "sample_dicom" / "dicom", roi_file=roi_file)
    key = next(
        s.series_key
        for s in w.session.reading_list
        if s.patient_id == "P02" and w.session.timepoint_of(s) == "T0"
    )
    t = time.perf_counter()
    w.open_series(key)
    warm = first_slice(t)
    print(f"time to first slice, warm (another series, napari running): {warm:.2f} s")
    pump(0.3)
    truth = [
        r
        for r in csv.DictReader(open(REPO / "sample_dicom" / "ground_truth.csv"))
        if r["patient_id"] == "P02" and r["timepoint"] == "T0" and r["kind"] == "target"
    ]
    truth.sort(key=lambda r: -float(r["center_z_mm"]))  # T12 (top) first
    native = viewer.window._qt_viewer.canvas.native
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera

    def to_px(y_mm: float, x_mm: float) -> QPointF:
        cy, cx = camera.center[-2:]
        z = camera.zoom
        return QPointF(native.width() / 2 + (x_mm - cx) * z, native.height() / 2 + (y_mm - cy) * z)

    def send(kind: QMouseEvent.Type, p: QPointF, buttons: Qt.MouseButton) -> None:
        ev = QMouseEvent(
            kind,
            p,
            native.mapToGlobal(p),
            Qt.MouseButton.LeftButton,
            buttons,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(native, ev)

    def drag(p1: QPointF, p2: QPointF) -> None:
        send(QMouseEvent.Type.MouseButtonPress, p1, Qt.MouseButton.LeftButton)
        for f in np.linspace(0.0, 1.0, 8)[1:]:
            send(QMouseEvent.Type.MouseMove, p1 + (p2 - p1) * float(f), Qt.MouseButton.LeftButton)
            pump(0.02)
        send(QMouseEvent.Type.MouseButtonRelease, p2, Qt.MouseButton.NoButton)
        pump(0.3)

    w.level_combo.setCurrentText("T12")
    info = w.session.current.info
    for row in truth:
        z = float(row["center_z_mm"])
        k = int(np.argmin(np.abs(info.positions_along_normal_mm - z)))
        w.session.show_slice(k)
        w.set_mode("add_ellipse")
        pump(0.2)
        cx, cy = float(row["center_x_mm"]), float(row["center_y_mm"])
        rx, ry = 0.6 * float(row["radius_x_mm"]), 0.6 * float(row["radius_y_mm"])
        drag(to_px(cy - ry, cx - rx), to_px(cy + ry, cx + rx))
        w.step_level(1)  # T12 -> L1 -> L2 for the next one
    w.set_mode("select")
    pump(0.5)
    rows = w.table_rows()
    print(f"drew {len(rows)} ROIs by mouse:")
    for r in rows:
        print("   ", " | ".join(r))
    csv_path = w.export_csv(work / "P02_T0.csv")
    w.save()
    print(f"exported {csv_path} and saved {roi_file}")
    last = truth[-1]  # zoom on the last vertebra drawn
    camera.center = (*camera.center[:-2], float(last["center_y_mm"]), float(last["center_x_mm"]))
    camera.zoom = camera.zoom * 3.0
    # the cursor on the vertebra: napari's status bar shows its HU and LPS position
    viewer.mouse_over_canvas = True
    viewer.cursor.position = (
        *viewer.dims.point[:-2],
        float(last["center_y_mm"]),
        float(last["center_x_mm"]),
    )
    viewer.update_status_from_cursor()
    shot("drawn_rois.png")

    # 3. heights on the sagittal view ----------------------------------------------------
    from hu_roi_napari._geometry import lps_to_line

    l1 = next(r for r in truth if r["level"] == "L1")
    cx, cy = float(l1["center_x_mm"]), float(l1["center_y_mm"])
    z0, z1 = float(l1["z_min_mm"]), float(l1["z_max_mm"])
    ry = float(l1["radius_y_mm"])
    w.set_view("sagittal")
    viewer.dims.set_point(2, cx)
    for kind, dy in (("height-anterior", -0.8), ("height-middle", 0.0), ("height-posterior", 0.8)):
        pts = [[cx, cy + dy * ry, z0], [cx, cy + dy * ry, z1]]
        w.session.add_roi("line", lps_to_line(info, pts), level="L1", kind=kind)
    w.set_mode("select")
    pump(0.5)
    print(w.heights_text())
    camera.center = (*camera.center[:-2], (z0 + z1) / 2, cy)
    camera.zoom = camera.zoom * 4.0
    shot("heights_sagittal.png")
    w.set_view("axial")
    w.set_window("soft tissue")
    shot("soft_tissue_window.png")

    # 4. the plan's RT dose over the same scan (sagittal: the dose band over T12) ---------
    w.set_window("bone")
    w.session.load_dose(REPO / "sample_dicom" / "rtdose" / "P02_RD.dcm")
    w.set_view("sagittal")
    viewer.dims.set_point(2, cx)
    pump(0.5)
    camera.center = (*camera.center[:-2], (z0 + z1) / 2, cy)
    w.tabs.setCurrentIndex(1)
    bar = w.table.horizontalScrollBar()
    bar.setValue(bar.maximum())  # the table's last column: the mean dose of each ROI
    shot("rt_dose.png")
    doses = [r[11] for r in w.table_rows()]
    print(f"RT dose shown; mean dose per ROI (Gy): {doses}")
    w.set_view("axial")
    w.save()
    n_csv = sum(1 for _ in csv.DictReader(open(csv_path))) if csv_path else 0
    w.session.dirty = False
    viewer.close()
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0 if len(rows) == 3 and n_csv == 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
