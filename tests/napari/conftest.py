"""Fixtures of the napari plugin tests: small real CT series written with pydicom.

napari's pytest plugin (``make_napari_viewer``) is registered by napari's entry point;
pytest-xvfb starts an X server, so the viewer renders for real (screenshots work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

#: Identifiers written into the test series; blinded mode must never show them.
SECRET = {
    "PatientID": "PSECRET7",
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19610704",
    "StudyDate": "20210315",
    "SeriesDate": "20210315",
    "AcquisitionDate": "20210315",
    "ContentDate": "20210315",
}
SECRET_STRINGS = ("PSECRET7", "Doe", "Jane", "20210315", "2021-03-15", "19610704")

#: Series A: axial, head first, anisotropic pixels, 2.5 mm slices.
A_SHAPE = (6, 40, 48)
A_SPACING = (0.8, 0.6)
A_ORIGIN = (-10.0, -12.0, 100.0)
A_STEP = 2.5
#: Series B: coronal (X = L, Y = -S: normal +P), affine placement.
B_SHAPE = (5, 30, 36)
B_SPACING = (1.0, 0.7)
B_ORIGIN = (-5.0, 20.0, 60.0)
B_ORIENT = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
B_STEP = 2.0


def hu_a() -> np.ndarray:
    """HU of series A: a distinct value per voxel plus a textured disc (the 'vertebra')."""
    k, r, c = np.indices(A_SHAPE)
    hu = 2000 * k + 48 * r + c - 1000  # one value per voxel
    rng = np.random.default_rng(7)
    disc = (r - 20) ** 2 * 0.8**2 + (c - 24) ** 2 * 0.6**2 <= 9.0**2
    hu = np.where(disc, 150 + rng.integers(-40, 41, A_SHAPE), hu)
    return hu.astype(float)


def hu_b() -> np.ndarray:
    k, r, c = np.indices(B_SHAPE)
    return (1100 * k + 36 * r + c - 1000).astype(float)  # one value per voxel


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """``study/dicom/{T0,T2}`` with series A and B, plus a refused localizer in T0."""
    root = tmp_path / "study" / "dicom"
    tags = dict(SECRET, SeriesDescription="Spine A")
    write_ct_series(
        root / "T0",
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(A_SHAPE[0]) * A_STEP,
        extra_tags=tags,
    )
    tags_b = dict(SECRET, SeriesDescription="Spine B", StudyDate="20210614")
    write_ct_series(
        root / "T2",
        hu_b(),
        pixel_spacing=B_SPACING,
        origin=B_ORIGIN,
        orientation=B_ORIENT,
        slice_positions=np.arange(B_SHAPE[0]) * B_STEP,
        extra_tags=tags_b,
    )
    scout = dict(
        SECRET, SeriesDescription="Topogram", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]
    )
    write_ct_series(root / "T0", np.zeros((1, 16, 16)), extra_tags=scout)
    return root


def lps_of(origin, orientation, spacing, step, k: int, r: int, c: int) -> np.ndarray:
    """LPS (mm) of voxel (k, r, c) by DESIGN.md's formula (independent of the plugin)."""
    o = np.asarray(orientation, dtype=float).reshape(2, 3)
    n = np.cross(o[0], o[1])
    return np.asarray(origin) + k * step * n + c * spacing[1] * o[0] + r * spacing[0] * o[1]


@pytest.fixture(autouse=True)
def _reset_plugin_state():
    """Blinded mode is process-wide (the reader reads it): reset around each test."""
    from hu_roi_napari._series import PLUGIN_STATE

    PLUGIN_STATE.blinded, PLUGIN_STATE.labels = False, None
    yield
    PLUGIN_STATE.blinded, PLUGIN_STATE.labels = False, None


@pytest.fixture
def notes(monkeypatch) -> list[str]:
    """Messages the reader shows as napari notifications (collected, not shown)."""
    import hu_roi_napari._reader as rd

    seen: list[str] = []
    monkeypatch.setattr(rd, "_notify", lambda msg, warning=True: seen.append(msg))
    return seen


def make_widget(viewer):
    """A docked HuRoiWidget whose dialogs answer from ``w.answers`` (else the last button)."""
    from hu_roi_napari._qt import HuRoiWidget

    w = HuRoiWidget(viewer)
    viewer.window.add_dock_widget(w, name="hu-roi")
    answers: dict[str, str] = {"Unsaved ROI edits": "Discard"}  # when the test closes it
    # instance attribute, not monkeypatch: monkeypatch would keep the viewer alive past
    # napari's leak check
    w.ask = lambda title, q, buttons: answers.get(title, buttons[-1])
    w.answers = answers
    return w


@pytest.fixture
def widget(make_napari_viewer):
    """(viewer, HuRoiWidget) with dialogs answered automatically."""
    viewer = make_napari_viewer()
    return viewer, make_widget(viewer)
