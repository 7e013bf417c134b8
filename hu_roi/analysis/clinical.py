"""Clinical CSV: one row per patient (arm, baseline, pain, analgesics, fractures, survival).

The schema is :data:`CLINICAL_SCHEMA`; ``docs/analysis.md`` documents it as a table.
:func:`read_clinical` reads and validates a file; :func:`validate_clinical` validates a
DataFrame.  Both raise :class:`hu_roi.errors.SchemaError` whose message names the patient
and the column of every bad value.

Beyond per-cell checks, the validation enforces:

- ``patient_id`` unique; ``arm`` is ``IMRT`` or ``3DCRT``;
- ``date_death`` and ``date_last_contact`` not before ``date_rt``, ``date_rt`` not before
  ``date_diagnosis``;
- analgesics: when ``analgesics_Tk`` (text, see :func:`hu_roi.analysis.pain.omed_from_analgesics`)
  is given and ``omed_Tk`` is empty, ``omed_Tk`` is computed from it; when both are given
  they must agree within 1 mg/day.

Timepoints are T0 baseline, T1 end of RT, T2 3 months, T3 6 months after the start of RT.
A patient is *alive at Tk* when there is no ``date_death`` or it is later than
``date_rt + TIMEPOINT_DAYS[Tk]`` (see :func:`alive_at`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hu_roi.analysis.pain import OMED_TABLE, OmedFactor, omed_from_analgesics
from hu_roi.analysis.schemas import TIMEPOINTS, Column, TableSchema
from hu_roi.csvtext import problem_message
from hu_roi.errors import SchemaError
from hu_roi.util import show

logger = logging.getLogger(__name__)

ARMS = ("IMRT", "3DCRT")
"""Trial arms in table order (experimental arm first)."""

TIMEPOINT_DAYS = {"T0": 0, "T1": 14, "T2": 91, "T3": 182}
"""Nominal day of each timepoint after the start of RT (date_rt)."""

FRACTURE_TIMEPOINTS = ("T0", "T2", "T3")
HEIGHT_SITES = ("ant", "mid", "post")
VCF_HEIGHT_LOSS = 0.20
"""A vertebral compression fracture is a height loss of more than 20 % vs baseline."""

PRIMARY_SITES = ("lung", "breast", "prostate", "other")
LOCALISATIONS = ("cervical", "thoracic", "lumbar", "sacrum")

BASELINE_FLAGS: tuple[tuple[str, str, str], ...] = (
    # column, Table 1 label, group
    ("mets_visceral", "Visceral", "Distant metastases at baseline"),
    ("mets_lung", "Lung", "Distant metastases at baseline"),
    ("mets_brain", "Brain", "Distant metastases at baseline"),
    ("mets_soft_tissue", "Tissue", "Distant metastases at baseline"),
    ("therapy_hormone", "Hormone therapy", "Therapies"),
    ("therapy_immuno", "Immunotherapy", "Therapies"),
    ("therapy_chemo", "Chemotherapy", "Therapies"),
    ("surgery", "Surgery", "Therapies"),
    ("neuro_deficit", "Neurological deficit at baseline", "Baseline status"),
    ("bisphosphonates", "Bisphosphonate at baseline", "Baseline status"),
    ("corset", "Orthopedic corset at baseline", "Baseline status"),
    ("med_sleeping", "Sleeping medication", "Medication at baseline"),
    ("med_psychiatric", "Psychiatric medication", "Medication at baseline"),
    ("med_opiate", "Opiate", "Medication at baseline"),
    ("med_nsaid", "NSAID", "Medication at baseline"),
)
"""Yes/no baseline columns shown in Table 1, with their label and group."""


def _clinical_columns() -> tuple[Column, ...]:
    c: list[Column] = [
        Column(
            "patient_id",
            "str",
            "",
            "Pseudonymous patient identifier (as in the measurement CSV).",
            nullable=False,
        ),
        Column(
            "arm",
            "category",
            "",
            "Randomised arm.",
            allowed=ARMS,
            nullable=False,
            aliases={"3d-crt": "3DCRT", "3d": "3DCRT", "3dcrt": "3DCRT", "3d crt": "3DCRT"},
        ),
        Column("age", "float", "years", "Age at randomisation.", min_value=0, max_value=120),
        Column(
            "sex",
            "category",
            "",
            "male / female.",
            allowed=("male", "female"),
            aliases={"m": "male", "f": "female", "w": "female"},
        ),
        Column(
            "kps", "float", "%", "Karnofsky performance status 0-100.", min_value=0, max_value=100
        ),
        Column("weight_kg", "float", "kg", "Body weight.", min_value=1, max_value=400),
        Column("height_cm", "float", "cm", "Body height.", min_value=50, max_value=250),
        Column(
            "primary_site",
            "category",
            "",
            "Primary tumour, grouped as in Table 1.",
            allowed=PRIMARY_SITES,
            aliases={"prostata": "prostate", "breast cancer": "breast", "lung cancer": "lung"},
        ),
        Column(
            "localisation",
            "category",
            "",
            "Region of the irradiated metastasis.",
            allowed=LOCALISATIONS,
            aliases={"sacral": "sacrum", "cervical spine": "cervical"},
        ),
        Column(
            "n_metastases",
            "int",
            "",
            "Number of spinal metastases (Table 1 groups 1, 2, >=3).",
            min_value=1,
        ),
    ]
    for col, label, _group in BASELINE_FLAGS:
        c.append(Column(col, "bool", "", f"{label} (yes/no)."))
    for tp in TIMEPOINTS:
        c.append(
            Column(
                f"vas_{tp}",
                "float",
                "0-10",
                f"Pain score (VAS) at the treated site at {tp}.",
                min_value=0,
                max_value=10,
            )
        )
    for tp in TIMEPOINTS:
        c.append(
            Column(
                f"omed_{tp}",
                "float",
                "mg/day",
                f"Oral morphine equivalent daily dose at {tp}.",
                min_value=0,
            )
        )
    for tp in TIMEPOINTS:
        c.append(
            Column(
                f"analgesics_{tp}",
                "str",
                "",
                f"Optional: analgesics at {tp} as '<drug> <daily dose>; ...' "
                "(converted to omed with the OMED table when omed is empty).",
                required=False,
            )
        )
    for tp in FRACTURE_TIMEPOINTS:
        c.append(
            Column(
                f"fracture_{tp}",
                "bool",
                "",
                f"A pathologic fracture is present at {tp} (pre-existing or new, radiologist).",
            )
        )
    for tp in FRACTURE_TIMEPOINTS:
        for site in HEIGHT_SITES:
            c.append(
                Column(
                    f"height_{site}_{tp}_mm",
                    "float",
                    "mm",
                    f"{site} vertebral body height of the treated level at {tp}.",
                    min_value=0,
                    max_value=100,
                )
            )
    c += [
        Column(
            "date_diagnosis",
            "date",
            "",
            "Date of initial cancer diagnosis (start of OS).",
            nullable=False,
        ),
        Column("date_rt", "date", "", "Start of radiotherapy (origin of T1-T3).", nullable=False),
        Column("date_death", "date", "", "Date of death; empty when alive at last contact."),
        Column(
            "date_last_contact",
            "date",
            "",
            "Date of last contact (censoring date when alive).",
            nullable=False,
        ),
    ]
    return tuple(c)


CLINICAL_SCHEMA = TableSchema(name="clinical CSV", key=("patient_id",), columns=_clinical_columns())
"""One row per patient; see ``docs/analysis.md`` for the table of columns."""


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read and validate a clinical CSV (see :func:`validate_clinical`).

    The file is read strictly (:meth:`hu_roi.analysis.schemas.TableSchema.read_raw`): a
    row with more or fewer fields than the header is an error naming its line.

    Raises
    ------
    SchemaError
        Missing file, a row with a wrong number of fields, missing column or any invalid
        value (message names line, patient and column).
    """
    raw = CLINICAL_SCHEMA.read_raw(path)
    return validate_clinical(raw, source=str(path), lines=raw.index.tolist())


def validate_clinical(
    df: pd.DataFrame,
    *,
    source: str | None = None,
    lines: Sequence[int] | None = None,
    omed_table: Mapping[str, OmedFactor] = OMED_TABLE,
) -> pd.DataFrame:
    """Validate and type a clinical table; fill ``omed_Tk`` from ``analgesics_Tk``.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per patient; cells as strings or typed values.
    source : str, optional
        File name used in messages.
    lines : sequence of int, optional
        The file line of each row, to name rows in messages (see
        :meth:`hu_roi.analysis.schemas.TableSchema.validate`).
    omed_table : mapping, optional
        OMED conversion table for the ``analgesics_Tk`` columns.

    Returns
    -------
    pandas.DataFrame
        Typed columns of :data:`CLINICAL_SCHEMA` (then extra columns).

    Raises
    ------
    SchemaError
        With one line per problem: ``line 8 (patient_id=P07), column 'vas_T2': got 'x',
        expected ...`` (up to :data:`hu_roi.csvtext.MAX_PROBLEMS_SHOWN` lines, then the
        count of the others).
    """
    t = CLINICAL_SCHEMA.validate(df, source=source, lines=lines)
    where = "clinical CSV" + (f" ({source})" if source else "")
    errors: list[str] = []
    for pos, (i, row) in enumerate(t.iterrows()):
        pid = row["patient_id"]
        who = f"patient_id={pid}" if lines is None else f"line {lines[pos]} (patient_id={pid})"
        for tp in TIMEPOINTS:
            text = row.get(f"analgesics_{tp}")
            if (
                text is None
                or (isinstance(text, float) and np.isnan(text))
                or str(text).strip() == ""
            ):
                continue
            try:
                omed = omed_from_analgesics(str(text), table=omed_table)
            except ValueError as exc:
                errors.append(f"{who}, column 'analgesics_{tp}': {exc}.")
                continue
            given = row[f"omed_{tp}"]
            if pd.isna(given):
                t.at[i, f"omed_{tp}"] = omed
            elif abs(float(given) - omed) > 1.0:
                errors.append(
                    f"{who}, column 'omed_{tp}': {given:g} mg/day disagrees with "
                    f"analgesics_{tp} ({show(text)} = {omed:g} mg/day); give only one of them or correct it."
                )
        d_dx, d_rt, d_death, d_last = (
            row[c] for c in ("date_diagnosis", "date_rt", "date_death", "date_last_contact")
        )
        if pd.notna(d_dx) and pd.notna(d_rt) and d_rt < d_dx:
            errors.append(
                f"{who}, column 'date_rt': {d_rt:%Y-%m-%d} is before date_diagnosis "
                f"{d_dx:%Y-%m-%d}."
            )
        if pd.notna(d_death) and pd.notna(d_rt) and d_death < d_rt:
            errors.append(
                f"{who}, column 'date_death': {d_death:%Y-%m-%d} is before date_rt {d_rt:%Y-%m-%d}."
            )
        if pd.notna(d_last) and pd.notna(d_rt) and d_last < d_rt:
            errors.append(
                f"{who}, column 'date_last_contact': {d_last:%Y-%m-%d} is before date_rt "
                f"{d_rt:%Y-%m-%d}."
            )
        if pd.notna(d_last) and pd.notna(d_death) and d_last > d_death:
            errors.append(
                f"{who}, column 'date_last_contact': {d_last:%Y-%m-%d} is after date_death "
                f"{d_death:%Y-%m-%d}."
            )
    if errors:
        raise SchemaError(problem_message(f"{where}: {len(errors)} inconsistent value(s):", errors))
    for tp in TIMEPOINTS[1:]:
        odd = t[f"vas_{tp}"].notna() & ~alive_at(t, tp)
        for pid in t.loc[odd, "patient_id"]:
            logger.warning(
                "patient %s has vas_%s but died before the nominal %s date (day %d after RT)",
                pid,
                tp,
                tp,
                TIMEPOINT_DAYS[tp],
            )
    return t


def alive_at(clinical: pd.DataFrame, timepoint: str) -> pd.Series:
    """Whether each patient is alive at the nominal date of ``timepoint``.

    Alive = no ``date_death`` or ``date_death > date_rt + TIMEPOINT_DAYS[timepoint]`` days.

    Returns
    -------
    pandas.Series of bool, index as ``clinical``.
    """
    if timepoint not in TIMEPOINT_DAYS:
        raise ValueError(f"timepoint must be one of {tuple(TIMEPOINT_DAYS)}, got {timepoint!r}")
    nominal = clinical["date_rt"] + pd.to_timedelta(TIMEPOINT_DAYS[timepoint], unit="D")
    death = clinical["date_death"]
    return (death.isna() | (death > nominal)).astype(bool)


def vertebral_compression_fracture(clinical: pd.DataFrame, timepoint: str) -> pd.Series:
    """VCF at ``timepoint``: any of anterior/middle/posterior height lost > 20 % vs baseline.

    Returns
    -------
    pandas.Series of ``boolean`` (pandas nullable); NA when no height pair is available.
    """
    if timepoint not in FRACTURE_TIMEPOINTS[1:]:
        raise ValueError(f"VCF needs a follow-up timepoint T2 or T3, got {timepoint!r}")
    loss = []
    for site in HEIGHT_SITES:
        h0 = clinical[f"height_{site}_T0_mm"].astype(float)
        ht = clinical[f"height_{site}_{timepoint}_mm"].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            loss.append(((h0 - ht) / h0).where(h0 > 0))
    frac = pd.concat(loss, axis=1)
    any_known = frac.notna().any(axis=1)
    vcf = (frac > VCF_HEIGHT_LOSS).any(axis=1)
    return pd.Series(np.where(any_known, vcf, pd.NA), index=clinical.index, dtype="boolean")


def fracture_status(clinical: pd.DataFrame, timepoint: str) -> pd.Series:
    """Pathologic fracture present at ``timepoint``: ``fracture_Tk`` or a VCF from heights.

    At T0 only ``fracture_T0`` counts.  True when either source says so; False when the
    known source(s) say no; NA when neither is known.
    """
    flag = clinical[f"fracture_{timepoint}"].astype("boolean")
    if timepoint == "T0":
        return flag
    vcf = vertebral_compression_fracture(clinical, timepoint)
    # a known flag counts even when heights are missing, and vice versa; NA only if both unknown
    yes = flag.fillna(False).astype(bool) | vcf.fillna(False).astype(bool)
    known = flag.notna() | vcf.notna()
    return pd.Series(np.where(known, yes, pd.NA), index=clinical.index, dtype="boolean")


def survival_months(clinical: pd.DataFrame) -> pd.DataFrame:
    """Overall survival from diagnosis: time (months) and event per patient.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient_id``, ``arm``, ``os_months`` (days / 30.4375), ``death`` (bool).
    """
    end = clinical["date_death"].fillna(clinical["date_last_contact"])
    days = (end - clinical["date_diagnosis"]).dt.days.astype(float)
    return pd.DataFrame(
        {
            "patient_id": clinical["patient_id"],
            "arm": clinical["arm"],
            "os_months": days / 30.4375,
            "death": clinical["date_death"].notna().to_numpy(),
        }
    )
