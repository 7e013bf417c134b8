"""Which indexed series an ROI belongs to: the one rule of ``hu-roi measure`` and the viewer.

:func:`resolve_series` (or a :class:`SeriesResolver` for many ROIs) applies
:func:`hu_roi.roi.match_series` (UID, then ``series_key``, then the only CT series of the
patient, where a series without DICOM PatientID counts for an ROI whose own patient_id is
the study code) and, when an ROI names a ``nouid-…`` key that is not in the index, tries the
older, path-based key of series without SeriesInstanceUID:

1. *legacy key*: older versions of hu-roi keyed such series by ``sha1(repr((folder, StudyDate,
   Modality, FrameOfReferenceUID, SeriesNumber, SeriesDescription, orientation rounded to
   1e-4, Rows, Columns)))`` with ``folder`` the files' folder *as typed*
   (:func:`legacy_nouid_key`).  The key is recomputed for the plausible spellings of each
   folder of every series without UID (as indexed, absolute, resolved, relative to the
   working directory; :func:`folder_spellings`).
2. *content*: else the only series without UID (not a localizer, not non-CT) whose
   patient agrees (equal, or one of the two IDs empty), whose StudyDate equals the ROI's
   (when the ROI has one; at least the date or a non-empty patient ID must agree), and
   whose slice stack and image contain the ROI's centre.

A match found either way is ``how == "legacy-key"`` or ``"legacy-content"``: the
measurement row carries the info flag :data:`LEGACY_FLAG` with a detail, and one note per
old key is logged (warning).  Neither way guesses between two candidates: those ROIs stay
``series-not-found`` / ``series-ambiguous``.

:func:`patient_id_rule` is the study-code rule of the measurement rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from hu_roi.roi import Roi, SeriesMatch, match_series
from hu_roi.series import SeriesInfo

log = logging.getLogger(__name__)

__all__ = [
    "LEGACY_FLAG",
    "LEGACY_HOWS",
    "PATIENT_ID_MISSING",
    "PatientIdRule",
    "SeriesResolver",
    "folder_spellings",
    "legacy_nouid_key",
    "patient_id_rule",
    "resolve_series",
]

#: qc flag (info) of a row whose ROI named its series by an old path-based key.
LEGACY_FLAG = "series-key-legacy"
#: ``SeriesMatch.how`` of a match through an old key.
LEGACY_HOWS = frozenset({"legacy-key", "legacy-content"})
#: qc flag (fail) of a target ROI without a patient ID in the ROI and in DICOM.
PATIENT_ID_MISSING = "patient-id-missing"

_NOT_MEASURABLE = frozenset({"not-ct", "localizer"})


def legacy_nouid_key(folder: str, info: SeriesInfo) -> str:
    """The path-based ``nouid-…`` key older hu-roi gave the images of ``info`` in ``folder``.

    Parameters
    ----------
    folder : str
        The folder of the files exactly as the old index saw it (``os.path.dirname`` of
        the path as walked from the folder typed on the command line).
    info : SeriesInfo
        A series without SeriesInstanceUID.
    """
    ori = tuple(round(v, 4) for v in info.orientation)
    key = (
        folder,
        info.study_date,
        info.modality,
        info.frame_of_reference_uid,
        info.series_number,
        info.series_description,
        ori,
        info.rows,
        info.columns,
    )
    return "nouid-" + hashlib.sha1(repr(key).encode()).hexdigest()[:16]


def folder_spellings(folder: str, cwd: str | None = None) -> list[str]:
    """Plausible ways the folder of an old index was typed: as given, absolute, with
    symbolic links resolved, relative to ``cwd`` (default: the working directory), each
    also with a leading ``./`` when relative."""
    cwd = os.getcwd() if cwd is None else cwd
    absolute = os.path.normpath(os.path.join(cwd, folder))
    real = os.path.realpath(absolute)
    out = [folder, os.path.normpath(folder), absolute, real]
    for target in (absolute, real):
        try:
            out.append(os.path.relpath(target, cwd))
        except ValueError:  # another drive
            pass
    out += ["." + os.sep + p for p in out if not os.path.isabs(p) and not p.startswith(".")]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class PatientIdRule:
    """Outcome of :func:`patient_id_rule`.

    Attributes
    ----------
    patient_id : str
        The ID the measurement row carries.
    code : str
        ``""`` when the row may be measured, else a fail flag (:data:`PATIENT_ID_MISSING`).
    detail : str
        Why, for the row's detail column.
    """

    patient_id: str
    code: str = ""
    detail: str = ""


def patient_id_rule(roi: Roi, info: SeriesInfo | None) -> PatientIdRule:
    """The patient ID of an ROI's measurement row (the study code rule).

    The ROI's ``patient_id`` is the study code and wins.  When it is empty, the DICOM
    PatientID of the series fills it.  A *target* or *height* ROI needs one of the two:
    without both the row fails (:data:`PATIENT_ID_MISSING`), because ``hu-roi longitudinal`` cannot
    place it.  Reference and phantom ROIs may have none.
    """
    if roi.patient_id:
        return PatientIdRule(roi.patient_id)
    dicom = info.patient_id if info is not None else ""
    if dicom:
        return PatientIdRule(dicom)
    if roi.kind == "target" or roi.kind.startswith("height-"):  # both enter longitudinal
        return PatientIdRule(
            "",
            PATIENT_ID_MISSING,
            f"a {'target' if roi.kind == 'target' else 'height'} ROI needs a patient_id (the "
            "study code): the ROI has none and the DICOM PatientID is empty; set patient_id "
            "in the ROI file",
        )
    return PatientIdRule("")


def _ref_point(roi: Roi) -> np.ndarray | None:
    """The ROI's centre (LPS mm): centre_mm, else the mean of its points."""
    sh = roi.shape
    if sh.center_mm is not None:
        p = np.asarray(sh.center_mm, dtype=float)
    elif sh.points_mm:
        p = np.asarray(sh.points_mm, dtype=float).mean(axis=0)
    else:
        return None
    return p if p.shape == (3,) and np.all(np.isfinite(p)) else None


def contains_point(info: SeriesInfo, point: np.ndarray) -> bool:
    """True when ``point`` (LPS mm) lies within the slice stack (± half a spacing) and
    within the rows and columns (± half a pixel) of the nearest slice of ``info``."""
    along = info.positions_along_normal_mm
    if along.size == 0 or not np.all(np.isfinite(along)):
        return False
    a = float(point @ info.normal)
    half = info.slice_spacing_mm / 2 if np.isfinite(info.slice_spacing_mm) else 0.5
    if a < along[0] - half or a > along[-1] + half:
        return False
    k = int(np.argmin(np.abs(along - a)))
    o = np.asarray(info.slices[k].position_lps_mm, dtype=float)
    x = np.asarray(info.orientation[:3], dtype=float)
    y = np.asarray(info.orientation[3:], dtype=float)
    d_r, d_c = info.pixel_spacing_mm
    c = float((point - o) @ x) / d_c
    r = float((point - o) @ y) / d_r
    return -0.5 <= c <= info.columns - 0.5 and -0.5 <= r <= info.rows - 0.5


class SeriesResolver:
    """:func:`resolve_series` for many ROIs over one index (old keys computed once).

    Parameters
    ----------
    series : iterable of SeriesInfo
        The indexed series.
    cwd : str, optional
        Working directory for :func:`folder_spellings` (default: the current one).
    noted : set of str, optional
        Old keys already reported; one warning is logged per key not in it (the set is
        updated).  Pass one set per run or session.
    """

    def __init__(
        self, series: Iterable[SeriesInfo], *, cwd: str | None = None, noted: set[str] | None = None
    ) -> None:
        self.series = list(series)
        self.cwd = cwd
        self.noted: set[str] = set() if noted is None else noted
        self._legacy: dict[str, list[SeriesInfo]] | None = None

    def _legacy_keys(self) -> dict[str, list[SeriesInfo]]:
        if self._legacy is None:
            keys: dict[str, list[SeriesInfo]] = {}
            for s in self.series:
                if s.series_instance_uid:
                    continue
                folders = {os.path.dirname(sl.path) for sl in s.slices}
                mine = {
                    legacy_nouid_key(f, s)
                    for folder in folders
                    for f in folder_spellings(folder, self.cwd)
                }
                for k in mine:
                    keys.setdefault(k, []).append(s)
            self._legacy = keys
        return self._legacy

    def _by_content(self, roi: Roi, among: list[SeriesInfo]) -> list[SeriesInfo]:
        p = _ref_point(roi)
        if p is None:
            return []
        out = []
        for s in among:
            if s.series_instance_uid or set(s.problems) & _NOT_MEASURABLE:
                continue
            if roi.patient_id and s.patient_id and s.patient_id != roi.patient_id:
                continue
            if roi.study_date and s.study_date != roi.study_date:
                continue
            same_patient = bool(roi.patient_id) and s.patient_id == roi.patient_id
            if not (roi.study_date or same_patient):
                continue
            if contains_point(s, p):
                out.append(s)
        return out

    def resolve(self, roi: Roi) -> SeriesMatch:
        """The series of ``roi`` (see the module docstring); never raises."""
        m = match_series(roi, self.series)
        if (
            m.info is None
            and m.reason == "series-not-found"
            and roi.patient_id
            and not (roi.series_instance_uid or roi.series_key)
        ):
            # the ROI's patient_id is the study code: the only CT series without a DICOM
            # PatientID (on the ROI's study date) is then the patient's too
            anon = [s for s in self.series if not s.patient_id]
            m2 = match_series(replace(roi, patient_id=""), anon)
            if m2.info is not None:
                return m2
            if m2.reason == "series-ambiguous":
                return SeriesMatch(
                    None,
                    "",
                    m2.reason,
                    f"no CT series for patient {roi.patient_id!r} and "
                    + m2.detail.replace("patient ''", "no DICOM PatientID"),
                )
        if (
            m.info is not None
            or m.reason != "series-not-found"
            or roi.series_instance_uid
            or not roi.series_key.startswith("nouid-")
        ):
            return m
        hits = self._legacy_keys().get(roi.series_key, [])
        how = "legacy-key"
        if len(hits) != 1:
            how = "legacy-content"
            hits = self._by_content(roi, hits or self.series)
        if len(hits) != 1:
            return m
        s = hits[0]
        note = (
            f"series_key {roi.series_key} is an old path-based key; matched by "
            f"{'the folder' if how == 'legacy-key' else 'patient, study date and extent'} "
            f"to series {s.series_key}"
        )
        if roi.series_key not in self.noted:
            self.noted.add(roi.series_key)
            log.warning("ROI %r: %s (set series_key to it in the ROI file)", roi.roi_id, note)
        return SeriesMatch(s, how, "", note)


def resolve_series(roi: Roi, series: Iterable[SeriesInfo]) -> SeriesMatch:
    """The indexed series an ROI was drawn on (see the module docstring).

    Returns
    -------
    SeriesMatch
        ``info`` None when unmatched (``reason`` and ``detail`` say why); ``how`` in
        :data:`LEGACY_HOWS` when matched through an old key (``detail`` is the note).
    """
    return SeriesResolver(series).resolve(roi)
