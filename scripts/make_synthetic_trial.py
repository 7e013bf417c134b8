#!/usr/bin/env python3
"""Write the deterministic synthetic 60-patient trial (see hu_roi/analysis/synthetic.py).

python scripts/make_synthetic_trial.py --out DIR [--seed N]
"""

import sys

from hu_roi.analysis.synthetic import DEFAULT_SEED, main, make_trial, write_trial  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
