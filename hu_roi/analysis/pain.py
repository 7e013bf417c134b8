"""Pain response: International Bone Metastases Consensus categories (Chow et al.).

Categories at a follow-up timepoint, from the pain score (VAS 0-10 at the treated site) and
the daily oral morphine equivalent dose (OMED, mg/day) at baseline and at follow-up, in the
wording of the trial paper (Chow et al. 2012, "Update of the international consensus on
palliative radiotherapy endpoints", Int J Radiat Oncol Biol Phys 82:1730-1737):

- **CR** complete response: pain score 0 with no concurrent increase in analgesics.
- **PR** partial response: pain reduction of 2 or more without analgesic increase, **or**
  analgesic reduction of 25 % or more from baseline without an increase in pain.
- **PP** pain progression: pain increase of 2 or more with stable analgesics, **or**
  analgesic increase of 25 % or more with the pain score stable or 1 point above baseline.
- **IP** indeterminate ("stable") pain: any response not covered above.

Responders are CR + PR; non-responders PP + IP.  The rules are applied in the order CR,
PR, PP, IP (the first that fits wins).

"Increase" and "stable" of analgesics: with the default ``tolerance_pct=0`` any rise of
OMED is an increase and "stable" means unchanged; ``tolerance_pct=t`` treats changes within
+-t % of baseline as stable.  A baseline OMED of 0 followed by any opioid counts as an
increase of 25 % or more.

OMED conversion
---------------
:data:`OMED_TABLE` holds the conversion factors to oral morphine milligram equivalents of
the CDC 2016 guideline (Dowell D, Haegerich TM, Chou R. CDC Guideline for Prescribing
Opioids for Chronic Pain - United States, 2016. MMWR Recomm Rep 2016;65(RR-1):1-49, table
"MME conversion factors"); tapentadol (0.4) and tramadol (0.1) from CDC's 2016 companion
sheet / MME conversion file; non-opioid analgesics count 0.  The table is printed in
the report (:func:`omed_table_frame`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hu_roi.errors import SchemaError

CHOW_CATEGORIES = ("CR", "PR", "PP", "IP")
"""Category codes in table order."""
RESPONDER_CATEGORIES = ("CR", "PR")

CDC_2016 = (
    "CDC 2016 guideline, MMWR Recomm Rep 2016;65(RR-1), MME conversion factors "
    "(Dowell, Haegerich, Chou)"
)
CDC_2016_SHEET = (
    "CDC 2016 'Calculating total daily dose of opioids for safer dosage' sheet and CDC MME "
    "conversion file (not in the guideline's own table)"
)


@dataclass(frozen=True)
class OmedFactor:
    """Conversion of one analgesic to oral morphine equivalents.

    Parameters
    ----------
    drug : str
        Canonical lower-case name used in ``analgesics_Tk`` cells.
    factor : float
        Oral morphine mg per unit of dose (per mg/day, or per ug/h for transdermal fentanyl).
    dose_unit : str
        Unit of the daily dose written in the cell ("mg/day" or "ug/h").
    source : str
        Where the factor comes from.
    """

    drug: str
    factor: float
    dose_unit: str
    source: str


def _opioid(drug: str, factor: float, unit: str = "mg/day", source: str = CDC_2016) -> OmedFactor:
    return OmedFactor(drug, factor, unit, source)


_NON_OPIOID = "non-opioid analgesic: contributes 0 mg OMED"

OMED_TABLE: dict[str, OmedFactor] = {
    f.drug: f
    for f in (
        _opioid("morphine", 1.0),
        _opioid("codeine", 0.15),
        _opioid("hydrocodone", 1.0),
        _opioid("hydromorphone", 4.0),
        _opioid("oxycodone", 1.5),
        _opioid("oxymorphone", 3.0),
        _opioid("tapentadol", 0.4, source=CDC_2016_SHEET),
        _opioid("tramadol", 0.1, source=CDC_2016_SHEET),
        _opioid("fentanyl_transdermal", 2.4, "ug/h"),
        _opioid(
            "methadone",
            math.nan,
            "mg/day",
            CDC_2016 + "; dose-dependent: 1-20 mg/day x4, 21-40 x8, 41-60 x10, 61-80 x12 "
            "(CDC gives no factor above 80 mg/day; 12 is used)",
        ),
        OmedFactor("ibuprofen", 0.0, "mg/day", _NON_OPIOID),
        OmedFactor("diclofenac", 0.0, "mg/day", _NON_OPIOID),
        OmedFactor("naproxen", 0.0, "mg/day", _NON_OPIOID),
        OmedFactor("etoricoxib", 0.0, "mg/day", _NON_OPIOID),
        OmedFactor("celecoxib", 0.0, "mg/day", _NON_OPIOID),
        OmedFactor("metamizole", 0.0, "mg/day", _NON_OPIOID),
        OmedFactor("paracetamol", 0.0, "mg/day", _NON_OPIOID),
    )
}
"""Analgesic name -> :class:`OmedFactor`.  Pass your own mapping to extend it."""

_ALIASES = {
    "acetaminophen": "paracetamol",
    "dipyrone": "metamizole",
    "novaminsulfon": "metamizole",
    "fentanyl": "fentanyl_transdermal",
    "fentanyl-td": "fentanyl_transdermal",
    "fentanyl td": "fentanyl_transdermal",
}


def _methadone_factor(mg_per_day: float) -> float:
    """CDC 2016 dose-dependent methadone factor."""
    if mg_per_day <= 20:
        return 4.0
    if mg_per_day <= 40:
        return 8.0
    if mg_per_day <= 60:
        return 10.0
    return 12.0


_ENTRY = re.compile(
    r"^\s*([A-Za-z][A-Za-z _\-]*?)\s+([0-9]+(?:\.[0-9]+)?)\s*(?:mg|ug/h|mcg/h|µg/h)?\s*$"
)


def omed_from_analgesics(
    text: str | None, *, table: Mapping[str, OmedFactor] = OMED_TABLE
) -> float:
    """Total daily oral morphine equivalent dose of an analgesics cell.

    Parameters
    ----------
    text : str or None
        ``;``-separated entries ``<drug> <daily dose>``, e.g.
        ``"oxycodone 40; fentanyl_transdermal 25; ibuprofen 1200"``.  Doses are mg/day, for
        transdermal fentanyl ug/h.  ``""``/``"none"`` means no analgesics (0 mg).
    table : mapping, optional
        Drug -> :class:`OmedFactor`; default :data:`OMED_TABLE`.

    Returns
    -------
    float
        OMED in mg/day.

    Raises
    ------
    ValueError
        An entry that cannot be parsed or a drug not in ``table``.  (The clinical reader
        turns it into a :class:`~hu_roi.errors.SchemaError` naming patient and column.)
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return 0.0
    total = 0.0
    for part in str(text).split(";"):
        part = part.strip()
        if not part or part.lower() == "none":
            continue
        m = _ENTRY.match(part)
        if not m:
            raise ValueError(
                f"analgesic entry {part!r} is not '<drug> <daily dose>' (e.g. 'oxycodone 40')"
            )
        name = m.group(1).strip().lower()
        name = _ALIASES.get(name, name).replace(" ", "_")
        dose = float(m.group(2))
        if name not in table:
            raise ValueError(
                f"analgesic {name!r} is not in the OMED conversion table "
                f"(known: {', '.join(sorted(table))}); give omed_Tk directly or extend the table"
            )
        f = table[name]
        factor = (
            _methadone_factor(dose) if name == "methadone" and math.isnan(f.factor) else f.factor
        )
        total += dose * factor
    return total


def omed_table_frame(table: Mapping[str, OmedFactor] = OMED_TABLE) -> pd.DataFrame:
    """The conversion table as a DataFrame (drug, factor, dose_unit, source) for reports."""
    return pd.DataFrame(
        [
            {
                "drug": f.drug,
                "factor": "4 / 8 / 10 / 12 (dose-dependent)"
                if math.isnan(f.factor)
                else f"{f.factor:g}",
                "dose_unit": f.dose_unit,
                "source": f.source,
            }
            for f in table.values()
        ]
    )


def chow_category(
    vas_0: float,
    vas_t: float,
    omed_0: float,
    omed_t: float,
    *,
    tolerance_pct: float = 0.0,
) -> str | None:
    """International Bone Metastases Consensus response category at one follow-up.

    Parameters
    ----------
    vas_0, vas_t : float
        Pain score 0-10 at baseline and at follow-up.
    omed_0, omed_t : float
        Oral morphine equivalent dose (mg/day) at baseline and follow-up.
    tolerance_pct : float
        OMED changes within +-tolerance_pct % of baseline count as "stable" (default 0).

    Returns
    -------
    str or None
        ``"CR"``, ``"PR"``, ``"PP"`` or ``"IP"``; None when any input is missing.
    """
    vals = (vas_0, vas_t, omed_0, omed_t)
    if any(v is None or pd.isna(v) for v in vals):
        return None
    if omed_0 < 0 or omed_t < 0:
        raise ValueError(f"OMED must be >= 0 mg/day, got baseline {omed_0}, follow-up {omed_t}")
    tol = tolerance_pct / 100.0
    if omed_0 > 0:
        rel = (omed_t - omed_0) / omed_0
        increase = rel > tol
        decrease = rel < -tol
        inc25 = rel >= 0.25
        dec25 = rel <= -0.25
    else:
        increase = omed_t > 0
        decrease = False
        inc25 = omed_t > 0
        dec25 = False
    stable = not increase and not decrease
    d = vas_t - vas_0
    if vas_t == 0 and not increase:
        return "CR"
    if (d <= -2 and not increase) or (dec25 and d <= 0):
        return "PR"
    if (d >= 2 and stable) or (inc25 and 0 <= d <= 1):
        return "PP"
    return "IP"


def chow_categories(
    vas_0: pd.Series | np.ndarray,
    vas_t: pd.Series | np.ndarray,
    omed_0: pd.Series | np.ndarray,
    omed_t: pd.Series | np.ndarray,
    *,
    tolerance_pct: float = 0.0,
) -> list[str | None]:
    """Vectorised :func:`chow_category` over equally long arrays (one entry per patient)."""
    a = [np.asarray(x, dtype=float) for x in (vas_0, vas_t, omed_0, omed_t)]
    if len({len(x) for x in a}) != 1:
        raise ValueError("vas_0, vas_t, omed_0 and omed_t must have the same length")
    return [
        chow_category(v0, vt, o0, ot, tolerance_pct=tolerance_pct)
        for v0, vt, o0, ot in zip(*a, strict=True)
    ]


def is_responder(category: str | None) -> bool | None:
    """True for CR/PR, False for PP/IP, None when not evaluable."""
    if category is None:
        return None
    if category not in CHOW_CATEGORIES:
        raise SchemaError(
            f"unknown pain response category {category!r}; expected {CHOW_CATEGORIES}"
        )
    return category in RESPONDER_CATEGORIES
