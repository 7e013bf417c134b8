"""Registry of the subcommands that live in feature modules.

Each entry adds one subparser (with ``set_defaults(func=...)``) to the ``hu-roi`` parser.
Modules are imported only when the parser is built.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

AddParser = Callable[[argparse._SubParsersAction], object]


def registered() -> list[AddParser]:
    """The parser builders of ``index``, ``measure``, ``roi``, ``longitudinal``,
    ``reliability``, ``pseudonymize``, ``analyze`` and ``demo``."""
    from hu_roi.analysis.cli import add_analyze_parser
    from hu_roi.batch import add_measure_parser
    from hu_roi.demo import add_demo_parser
    from hu_roi.exportdicom import add_export_dicom_parser
    from hu_roi.indexcli import add_index_parser
    from hu_roi.longitudinal import add_longitudinal_parser
    from hu_roi.pseudonym import add_pseudonymize_parser
    from hu_roi.reliability import add_reliability_parser
    from hu_roi.roicli import add_roi_parser

    return [
        add_index_parser,
        add_measure_parser,
        add_roi_parser,
        add_longitudinal_parser,
        add_reliability_parser,
        add_pseudonymize_parser,
        add_analyze_parser,
        add_demo_parser,
        add_export_dicom_parser,
    ]
