"""Sample data: "File › Open Sample › hu-roi" opens a sample CT series with its stored ROIs.

The series is patient P01's baseline scan (bone kernel) of the synthetic cohort in
``sample_dicom/`` of the repository (``scripts/make_sample_dicom.py``), with the ROIs of
``sample_dicom/rois/sample.rois.json`` that belong to it.  The ROI file is copied to
``<tempdir>/hu-roi-sample/`` first, so edits, autosaves and saves never change the
repository's sample.
"""

from __future__ import annotations

from pathlib import Path

import hu_roi

__all__ = ["sample_dicom_dir", "make_sample_data"]


def sample_dicom_dir() -> Path:
    """``sample_dicom/`` of the repository this hu_roi was imported from."""
    return Path(hu_roi.__file__).resolve().parents[1] / "sample_dicom"


def working_copy(roi_file: Path) -> Path:
    """A fresh copy of the sample ROI file in the temp folder (edits never touch the repo)."""
    import shutil
    import tempfile

    d = Path(tempfile.gettempdir()) / "hu-roi-sample"
    d.mkdir(parents=True, exist_ok=True)
    dst = d / roi_file.name
    for p in (dst, dst.with_name(dst.name + ".autosave")):
        p.unlink(missing_ok=True)
    shutil.copyfile(roi_file, dst)
    return dst


def make_sample_data() -> list[tuple]:
    """Layer data: the sample series (image) and its ROIs (shapes).

    Returns ``[(None,)]``-free plain layer data; a notification (not an exception) when
    the sample folder is missing.
    """
    from hu_roi.roi import load_roiset, match_series

    from ._rois_layer import rois_layer_data
    from ._series import PLUGIN_STATE, SeriesHandle, notify, register
    from ._session import accepted_problems, is_measurable

    root = sample_dicom_dir()
    dicom = root / "dicom"
    roi_file = root / "rois" / "sample.rois.json"
    if not dicom.is_dir():
        notify(f"hu-roi: sample data not found at {dicom}; run scripts/make_sample_dicom.py")
        return []
    from ._series import index_cached

    # index only the folder of the sample scan (fast); the widget indexes the whole cohort
    first = dicom / "P01" / "T0"
    idx = index_cached(first if first.is_dir() else dicom)
    rs = load_roiset(roi_file) if roi_file.exists() else None
    series = [s for s in idx.series if is_measurable(s)]
    # the first measurable series that carries target ROIs (P01 baseline, bone kernel)
    chosen = None
    rois = []
    for s in sorted(series, key=lambda s: (s.patient_id, s.study_date, s.series_key)):
        mine = [r for r in (rs.rois if rs else ()) if match_series(r, idx.series).info is s]
        if any(r.kind == "target" for r in mine):
            chosen, rois = s, mine
            break
    if chosen is None:
        if not series:
            notify(f"hu-roi: no measurable CT series in {dicom}")
            return []
        chosen = series[0]
    if rs is not None:
        roi_file = working_copy(roi_file)
    h = register(SeriesHandle(chosen, root=dicom, accept=accepted_problems(chosen) or ()))
    label = (PLUGIN_STATE.labels or {}).get(chosen.series_key, "Case")
    image = h.layer_data(blinded=PLUGIN_STATE.blinded, label=label)
    shapes = rois_layer_data(
        h,
        rois,
        name="ROIs",
        metadata={"roi_file": str(roi_file) if rs else ""},
        blinded=PLUGIN_STATE.blinded,
    )
    return [image, shapes]
