"""The committed R reference outputs of tests/data/r_reference, read by the tests that
compare hu-roi against R (R itself is not needed to run them).

Each JSON file there is written by a make_*.R script of that folder, with the writer of its
_common.R: numbers with 17 significant digits, non-finite numbers as the strings "NaN",
"NA", "Inf" and "-Inf", which :func:`load_reference` turns back into floats.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: The folder of the R scripts, their JSON outputs and the inputs some of them read.
R_REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "r_reference"

_NON_FINITE = {"NaN": math.nan, "NA": math.nan, "Inf": math.inf, "-Inf": -math.inf}


def decode(value: Any) -> Any:
    """``value`` with R's non-finite strings replaced by floats, in nested lists and dicts.

    R's NA (missing) becomes NaN, as hu-roi writes a missing statistic.
    """
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value


def load_reference(name: str) -> Any:
    """The decoded contents of ``tests/data/r_reference/<name>`` (a JSON file)."""
    return decode(json.loads((R_REFERENCE_DIR / name).read_text()))
