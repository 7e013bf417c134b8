"""Shared helpers of the napari plugin tests (series geometry, identifiers, widget).

A module with a unique name (not ``conftest``) so that ``from napari_helpers import ...``
is unambiguous whatever else the test run imports.
"""

from __future__ import annotations

import numpy as np

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


def lps_of(origin, orientation, spacing, step, k: int, r: int, c: int) -> np.ndarray:
    """LPS (mm) of voxel (k, r, c) by the formula of docs/roi_format.md (independent of the plugin)."""
    o = np.asarray(orientation, dtype=float).reshape(2, 3)
    n = np.cross(o[0], o[1])
    return np.asarray(origin) + k * step * n + c * spacing[1] * o[0] + r * spacing[0] * o[1]


def key_of(w, desc: str) -> str:
    """series_key of the series of the widget's reading list with SeriesDescription ``desc``."""
    return next(s.series_key for s in w.session.reading_list if s.series_description == desc)


def make_widget(viewer):
    """A docked HuRoiWidget whose dialogs answer from ``w.answers`` (else the last button).

    File dialogs return ``w.answers[title]`` (else "", cancelled) and record
    ``"title|directory"`` in ``w.asked``.
    """
    from hu_roi_napari._qt import HuRoiWidget

    w = HuRoiWidget(viewer)
    viewer.window.add_dock_widget(w, name="hu-roi")
    answers: dict[str, str] = {"Unsaved ROI edits": "Discard"}  # when the test closes it
    # instance attribute, not monkeypatch: monkeypatch would keep the viewer alive past
    # napari's leak check
    w.ask = lambda title, q, buttons: answers.get(title, buttons[-1])
    w.ask_text = lambda title, q: answers.get(title, "")
    asked: list[str] = []
    w.asked = asked
    w.choose_path = lambda title, *, save, filter="", directory="": (
        asked.append(f"{title}|{directory}") or answers.get(title, "")
    )
    w.answers = answers
    return w
