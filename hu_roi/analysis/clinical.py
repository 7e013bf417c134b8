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
            "Date of initial cancer diagnosis (default origin of OS); may be empty when "
            "os_months and os_event are given.",
        ),
        Column("date_rt", "date", "", "Start of radiotherapy (origin of T1-T3).", nullable=False),
        Column("date_death", "date", "", "Date of death; empty when alive at last contact."),
        Column(
            "date_last_contact",
            "date",
            "",
            "Date of last contact (censoring date when alive); may be empty when os_months "
            "and os_event are given.",
        ),
        Column(
            "os_months",
            "float",
            "months",
            "Optional: overall survival time entered directly (used with "
            "`analyze --os-origin columns`).",
            required=False,
            min_value=0,
        ),
        Column(
            "os_event",
            "bool",
            "",
            "Optional: 1 = died at os_months, 0 = censored (with os_months).",
            required=False,
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
        os_given = pd.notna(row.get("os_months")) and pd.notna(row.get("os_event"))
        for col in ("date_diagnosis", "date_last_contact"):
            if (
                pd.isna(row[col])
                and not os_given
                and not (col == "date_last_contact" and pd.notna(d_death))
            ):
                errors.append(
                    f"{who}, column '{col}': value is missing; give it, or os_months and os_event."
                )
        if pd.notna(row.get("os_months")) != pd.notna(row.get("os_event")):
            errors.append(f"{who}, columns 'os_months'/'os_event': give both or neither.")
        if pd.notna(d_death) and pd.notna(row.get("os_event")) and not bool(row["os_event"]):
            errors.append(
                f"{who}, column 'os_event': 0 (censored) but date_death is {d_death:%Y-%m-%d}."
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


def height_loss(clinical: pd.DataFrame, timepoint: str) -> pd.DataFrame:
    """Vertebral body height loss of the treated level at ``timepoint`` vs baseline.

    Loss (%) = 100 × (h_T0 − h_Tk) / h_T0 for each of the anterior, middle and posterior
    heights (``height_<site>_<Tk>_mm``); a gain is a negative loss.

    Returns
    -------
    pandas.DataFrame
        Index as ``clinical``; columns ``loss_ant_pct``, ``loss_mid_pct``,
        ``loss_post_pct`` and ``max_loss_pct`` (the largest of the known sites, NaN when
        no site has both heights).
    """
    if timepoint not in FRACTURE_TIMEPOINTS[1:]:
        raise ValueError(f"height loss needs a follow-up timepoint T2 or T3, got {timepoint!r}")
    out = pd.DataFrame(index=clinical.index)
    for site in HEIGHT_SITES:
        h0 = clinical[f"height_{site}_T0_mm"].astype(float)
        ht = clinical[f"height_{site}_{timepoint}_mm"].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"loss_{site}_pct"] = (100.0 * (h0 - ht) / h0).where(h0 > 0)
    out["max_loss_pct"] = out[[f"loss_{s}_pct" for s in HEIGHT_SITES]].max(axis=1, skipna=True)
    return out


def vertebral_compression_fracture(clinical: pd.DataFrame, timepoint: str) -> pd.Series:
    """VCF at ``timepoint``: any of anterior/middle/posterior height lost > 20 % vs baseline.

    Returns
    -------
    pandas.Series of ``boolean`` (pandas nullable); NA when no height pair is available.
    """
    if timepoint not in FRACTURE_TIMEPOINTS[1:]:
        raise ValueError(f"VCF needs a follow-up timepoint T2 or T3, got {timepoint!r}")
    frac = height_loss(clinical, timepoint)[[f"loss_{s}_pct" for s in HEIGHT_SITES]] / 100.0
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


OS_ORIGINS = ("diagnosis", "rt", "columns")
"""Origins of overall survival: initial diagnosis (the trial's definition), start of RT,
or ``os_months``/``os_event`` entered in the clinical CSV."""

OS_ORIGIN_TEXT = {
    "diagnosis": "from initial diagnosis (date_diagnosis) to death, censored at last contact",
    "rt": "from the start of radiotherapy (date_rt) to death, censored at last contact",
    "columns": "as entered in the clinical CSV (os_months, os_event)",
}


def survival_months(clinical: pd.DataFrame, origin: str = "diagnosis") -> pd.DataFrame:
    """Overall survival time (months) and event per patient.

    Parameters
    ----------
    clinical : pandas.DataFrame
        Validated clinical table.
    origin : {"diagnosis", "rt", "columns"}
        Start of OS: ``date_diagnosis`` (default, the trial's definition) or ``date_rt``
        (end: ``date_death``, else ``date_last_contact``; months = days / 30.4375), or
        the ``os_months``/``os_event`` columns as entered.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient_id``, ``arm``, ``os_months``, ``death`` (bool).

    Raises
    ------
    SchemaError
        A patient lacks what ``origin`` needs (the message names the patients).
    """
    if origin not in OS_ORIGINS:
        raise ValueError(f"origin must be one of {OS_ORIGINS}; received {origin!r}")
    if origin == "columns":
        cols = [c for c in ("os_months", "os_event") if c in clinical.columns]
        if len(cols) < 2:
            raise SchemaError(
                "OS origin 'columns' needs the columns os_months and os_event in the clinical CSV"
            )
        months = clinical["os_months"].astype(float)
        death = clinical["os_event"].astype("boolean")
        bad = clinical.loc[months.isna() | death.isna(), "patient_id"].astype(str).tolist()
        what = "os_months/os_event"
    else:
        end = clinical["date_death"].fillna(clinical["date_last_contact"])
        start = clinical["date_diagnosis" if origin == "diagnosis" else "date_rt"]
        months = (end - start).dt.days.astype(float) / 30.4375
        death = clinical["date_death"].notna()
        bad = clinical.loc[months.isna(), "patient_id"].astype(str).tolist()
        what = ("date_diagnosis" if origin == "diagnosis" else "date_rt") + (
            " or date_last_contact"
        )
    if bad and len(bad) == len(clinical) and origin == "columns":
        raise SchemaError(
            "OS origin 'columns' needs the columns os_months and os_event filled in the "
            "clinical CSV; no patient has them (use --os-origin diagnosis or rt for the dates)"
        )
    if bad:
        shown = ", ".join(bad[:10]) + (f", ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise SchemaError(
            f"clinical CSV: overall survival (origin {origin!r}) cannot be computed for "
            f"{len(bad)} patient(s) without {what}: {shown}"
        )
    return pd.DataFrame(
        {
            "patient_id": clinical["patient_id"],
            "arm": clinical["arm"],
            "os_months": months.to_numpy(),
            "death": np.asarray(death, dtype=bool),
        }
    )


def accepted_values_markdown() -> str:
    """Every accepted value and alias of the clinical CSV's coded columns, as markdown.

    Generated from :data:`CLINICAL_SCHEMA` (category columns: canonical values, matched
    without regard to case, and their aliases), the yes/no spellings of every bool column,
    the date formats and the analgesic names of the OMED table.  ``docs/csv_schemas.md``
    holds this text between ``<!-- accepted:clinical -->`` markers (a test keeps it equal).
    """
    from hu_roi.analysis.pain import _ALIASES
    from hu_roi.analysis.schemas import _FALSE, _TRUE, DATE_MAX, DATE_MIN

    lines = [
        "| column(s) | accepted values (any upper/lower case) | also accepted (alias → value) |",
        "|---|---|---|",
    ]
    bools: list[str] = []
    dates: list[str] = []
    for c in CLINICAL_SCHEMA.columns:
        if c.dtype == "category":
            alias = ", ".join(f"`{a}` → `{v}`" for a, v in sorted(c.aliases.items())) or "—"
            allowed = ", ".join(f"`{v}`" for v in c.allowed or ())
            lines.append(f"| `{c.name}` | {allowed} | {alias} |")
        elif c.dtype == "bool":
            bools.append(c.name)
        elif c.dtype == "date":
            dates.append(c.name)
    yes = ", ".join(f"`{v}`" for v in sorted(_TRUE))
    no = ", ".join(f"`{v}`" for v in sorted(_FALSE))
    lines.append("| " + ", ".join(f"`{b}`" for b in bools) + f" | yes: {yes}; no: {no} | — |")
    lines.append(
        "| " + ", ".join(f"`{d}`" for d in dates)
        + f" | `YYYY-MM-DD` (a time after it is dropped) or `YYYYMMDD`, from {DATE_MIN} to "
        f"{DATE_MAX} | — |"
    )  # fmt: skip
    drugs = ", ".join(f"`{d}`" for d in OMED_TABLE)
    alias = ", ".join(f"`{a}` → `{v}`" for a, v in sorted(_ALIASES.items()))
    lines.append(
        "| `analgesics_T0` … `analgesics_T3` | entries `<drug> <daily dose>` separated by `;` "
        f"(`none` = no analgesic); drugs: {drugs} | {alias or '—'} |"
    )
    lines.append(
        "| numbers | decimal point `.`; the ranges of the column table above; an empty cell "
        "is a missing value | — |"
    )
    return "\n".join(lines)
