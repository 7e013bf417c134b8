"""Endpoint helpers on small hand-made tables.

References: R 4.2.2 (calls quoted), counts worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hu_roi.analysis.endpoints import (
    _join_arm,
    compare_counts,
    hu_table,
    patient_hu,
    student_t_test,
)
from hu_roi.analysis.schemas import LONGITUDINAL_SCHEMA
from hu_roi.errors import SchemaError


def test_student_t_test_matches_r() -> None:
    # R: t.test(c(66,70,58,81,62), c(55,61,72,49,60,58), var.equal=TRUE)
    #    t = 1.662459098244, p-value = 0.130784205532
    t, p = student_t_test(np.array([66, 70, 58, 81, 62.0]), np.array([55, 61, 72, 49, 60, 58.0]))
    assert t == pytest.approx(1.662459098244, abs=1e-10)
    assert p == pytest.approx(0.130784205532, abs=1e-10)
    assert np.isnan(student_t_test(np.array([1.0]), np.array([2.0]))[1])


def test_compare_counts_drops_empty_categories() -> None:
    # Localisation of Table 1 with the empty sacrum cell of IMRT kept, and an all-empty column
    # R: chisq.test(matrix(c(4,15,11,0, 5,15,7,3), nrow=2, byrow=TRUE))  X-squared = 4, p = 0.2615
    with_empty = compare_counts([[4, 15, 11, 0, 0], [5, 15, 7, 3, 0]])
    assert with_empty.dof == 3
    assert with_empty.statistic == pytest.approx(4.0, abs=1e-9)
    assert round(with_empty.p_value, 3) == 0.261
    assert np.isnan(compare_counts([[3, 0], [4, 0]]).p_value)


def _long(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {c: None for c in LONGITUDINAL_SCHEMA.names}
    return LONGITUDINAL_SCHEMA.validate(pd.DataFrame([{**base, **r} for r in rows]))


def test_patient_hu_picks_one_index_vertebra_per_patient() -> None:
    lg = _long(
        [
            {"patient_id": "P1", "level": "L2", "kind": "target", "reader": "R1", "irradiated": True,
             "lesion_type": "mixed", "hu_T0": 100.0},
            {"patient_id": "P1", "level": "L1", "kind": "target", "reader": "R1", "irradiated": True,
             "lesion_type": "none", "hu_T0": 150.0},
            {"patient_id": "P1", "level": "T12", "kind": "target", "reader": "R1", "irradiated": True,
             "lesion_type": "osteolytic", "hu_T0": 90.0},
            {"patient_id": "P1", "level": "T6", "kind": "target", "reader": "R1", "irradiated": False,
             "lesion_type": "none", "hu_T0": 180.0},
            {"patient_id": "P2", "level": "C5", "kind": "target", "reader": "R1", "irradiated": None,
             "lesion_type": "mixed", "hu_T0": 300.0},
        ]
    )  # fmt: skip
    irr = patient_hu(lg, irradiated=True)
    # spinal order T12 before L1/L2; the lesion-free L1 is not the index; P2 unknown irradiation
    assert irr[["patient_id", "level"]].values.tolist() == [["P1", "T12"]]
    un = patient_hu(lg, irradiated=False)
    assert un[["patient_id", "level"]].values.tolist() == [["P1", "T6"]]
    with pytest.raises(SchemaError, match="not in the clinical CSV: P1"):
        _join_arm(irr, pd.DataFrame({"patient_id": ["P9"], "arm": ["IMRT"]}))


def test_hu_table_numbers() -> None:
    # IMRT changes 10, 20, 30, 40 (all positive), 3DCRT changes -5, 0, 5
    # R: wilcox.test(c(10,20,30,40)) p = 0.125 (exact)
    # R: wilcox.test(c(10,20,30,40), c(-5,0,5), exact=FALSE, correct=TRUE) p = 0.05182992722
    hu = pd.DataFrame(
        {
            "arm": ["IMRT"] * 4 + ["3DCRT"] * 3,
            "hu_T0": [100.0, 100, 100, 100, 200, 200, 200],
            "hu_T2": [110.0, 120, 130, 140, 195, 200, 205],
            "hu_T3": np.nan,
            "delta_hu_T2": [10.0, 20, 30, 40, -5, 0, 5],
            "pct_delta_T2": [10.0, 20, 30, 40, -2.5, 0, 2.5],
            "delta_hu_T3": np.nan,
            "pct_delta_T3": np.nan,
        }
    )
    t = hu_table(hu).set_index("quantity")
    r = t.loc["HU T0-T2"]
    assert (r["imrt_n"], r["imrt_median"], r["crt_n"], r["crt_median"]) == (4, 25.0, 3, 0.0)
    assert r["imrt_sd"] == pytest.approx(np.std([10, 20, 30, 40], ddof=1))
    assert r["imrt_p_within"] == pytest.approx(0.125)
    # 3DCRT: one zero difference dropped, +-5 -> R: wilcox.test(c(-5,0,5)) p = 1
    assert r["crt_p_within"] == pytest.approx(1.0)
    assert r["p_between"] == pytest.approx(0.05182992722, abs=1e-10)
    # SAS: 3DCRT is the smaller group -> the shift is 3DCRT - IMRT, median of pairwise diffs
    assert r["hl_of"] == "3DCRT - IMRT"
    assert r["hl"] == pytest.approx(np.median(np.subtract.outer([-5, 0, 5], [10, 20, 30, 40])))
    assert t.loc["HU T3", "imrt_n"] == 0 and np.isnan(t.loc["HU T3", "p_between"])
