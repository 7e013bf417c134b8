"""Chow / International Bone Metastases Consensus categories and the OMED conversion.

Reference: the category definitions as printed in the trial paper (Methods, "Assessment of
endpoints") and Chow et al. 2012; conversion factors of the CDC 2016 guideline (MMWR
Recomm Rep 2016;65(RR-1), MME conversion factor table), worked by hand below.
"""

from __future__ import annotations

import pytest

from hu_roi.analysis.pain import (
    CHOW_CATEGORIES,
    OMED_TABLE,
    chow_categories,
    chow_category,
    is_responder,
    omed_from_analgesics,
    omed_table_frame,
)


@pytest.mark.parametrize(
    ("vas0", "vast", "omed0", "omedt", "expected"),
    [
        (6, 0, 60, 60, "CR"),  # pain 0, analgesics stable
        (6, 0, 60, 30, "CR"),  # pain 0, analgesics reduced
        (6, 0, 60, 90, "IP"),  # pain 0 but analgesics increased: neither CR nor PR nor PP
        (6, 4, 60, 60, "PR"),  # -2 without analgesic increase
        (6, 4, 60, 61, "IP"),  # -2 but a (small) analgesic increase
        (6, 6, 60, 45, "PR"),  # analgesics -25 % without pain increase
        (6, 7, 60, 45, "IP"),  # analgesics -25 % but pain +1
        (6, 6, 60, 46, "IP"),  # analgesics -23 %: not enough
        (6, 8, 60, 60, "PP"),  # +2 with stable analgesics
        (6, 8, 60, 30, "IP"),  # +2 but analgesics reduced (not "stable")
        (6, 6, 60, 75, "PP"),  # analgesics +25 %, pain stable
        (6, 7, 60, 75, "PP"),  # analgesics +25 %, pain +1
        (6, 8, 60, 75, "IP"),  # analgesics +25 %, pain +2: not "stable or +1", not stable OMED
        (6, 6, 60, 70, "IP"),  # analgesics +17 %, pain stable
        (6, 5, 60, 60, "IP"),  # -1 only
        (6, 7, 0, 0, "IP"),  # +1 only
        (5, 7, 0, 0, "PP"),  # +2, no analgesics at either time
        (5, 5, 0, 10, "PP"),  # start of any opioid = increase of 25 % or more
        (5, 3, 0, 10, "IP"),  # pain -2 but new opioid
        (0, 0, 0, 0, "CR"),  # painless stays painless without analgesics
    ],
)
def test_chow_category(vas0: float, vast: float, omed0: float, omedt: float, expected: str) -> None:
    assert chow_category(vas0, vast, omed0, omedt) == expected


def test_tolerance_makes_small_changes_stable() -> None:
    # 60 -> 61 mg/day (+1.7 %) is an increase by default, stable with a 5 % tolerance
    assert chow_category(6, 4, 60, 61) == "IP"
    assert chow_category(6, 4, 60, 61, tolerance_pct=5) == "PR"
    assert chow_category(6, 8, 60, 58, tolerance_pct=5) == "PP"


def test_missing_is_not_evaluable_and_vectorised() -> None:
    assert chow_category(6, float("nan"), 0, 0) is None
    assert chow_categories([6, 6, 6], [0, 8, float("nan")], [0, 0, 0], [0, 0, 0]) == [
        "CR",
        "PP",
        None,
    ]
    with pytest.raises(ValueError, match="same length"):
        chow_categories([1, 2], [1], [0, 0], [0, 0])
    assert [is_responder(c) for c in CHOW_CATEGORIES] == [True, True, False, False]
    assert is_responder(None) is None


def test_omed_conversion_cdc_2016() -> None:
    # oxycodone 40 mg x 1.5 + tramadol 200 mg x 0.1 + ibuprofen (0) = 80
    assert omed_from_analgesics("oxycodone 40; tramadol 200; ibuprofen 1200") == pytest.approx(80.0)
    # transdermal fentanyl 25 ug/h x 2.4 = 60
    assert omed_from_analgesics("fentanyl_transdermal 25 ug/h") == pytest.approx(60.0)
    assert omed_from_analgesics("Fentanyl 12") == pytest.approx(28.8)
    assert omed_from_analgesics("hydromorphone 8 mg") == pytest.approx(32.0)
    # methadone is dose dependent (CDC 2016): 20 x 4, 30 x 8, 50 x 10, 80 x 12
    assert omed_from_analgesics("methadone 20") == pytest.approx(80.0)
    assert omed_from_analgesics("methadone 30") == pytest.approx(240.0)
    assert omed_from_analgesics("methadone 50") == pytest.approx(500.0)
    assert omed_from_analgesics("methadone 80") == pytest.approx(960.0)
    assert omed_from_analgesics("") == 0.0
    assert omed_from_analgesics("none") == 0.0
    assert omed_from_analgesics(None) == 0.0


def test_omed_conversion_errors_name_the_entry() -> None:
    with pytest.raises(ValueError, match="'unobtainium' is not in the OMED conversion table"):
        omed_from_analgesics("unobtainium 10")
    with pytest.raises(ValueError, match="is not '<drug> <daily dose>'"):
        omed_from_analgesics("morphine lots")


def test_omed_table_is_sourced() -> None:
    frame = omed_table_frame()
    assert set(frame["drug"]) == set(OMED_TABLE)
    opioids = frame.loc[frame["drug"].isin(["morphine", "oxycodone", "tramadol", "methadone"])]
    assert opioids["source"].str.contains("CDC 2016").all()
    assert frame.loc[frame["drug"] == "oxycodone", "factor"].item() == "1.5"
