"""Registry of the ``hu-roi`` subcommands, imported only when one runs.

Each entry of :func:`registered` is ``(name, module, help)``: the subcommand's name, the
module that holds ``add_<name>_parser(sub)`` (``-`` in the name becomes ``_``; write
``"module:function"`` for another function name) and the one-line help shown by
``hu-roi --help``.  :mod:`hu_roi.cli` imports a module only for the subcommand being run
(``hu-roi --help`` imports none), so a new subcommand costs nothing at start-up; the help
given here must be the one its ``add_*_parser`` gives (tests/test_startup.py checks).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

AddParser = Callable[[argparse._SubParsersAction], object]


class Command:
    """One subcommand: ``name``, the ``module`` that builds its parser, its ``help``.

    A plain class rather than a ``typing.NamedTuple``: importing ``typing`` would cost
    ``hu-roi --help`` a few milliseconds.
    """

    __slots__ = ("name", "module", "help")

    def __init__(self, name: str, module: str, help: str) -> None:  # noqa: A002
        self.name = name
        self.module = module
        self.help = help

    def __repr__(self) -> str:
        return f"Command({self.name!r}, {self.module!r}, {self.help!r})"


def registered() -> list[Command]:
    """The subcommands, in the order ``hu-roi --help`` lists them.  One line each."""
    return [
        Command("index", "hu_roi.indexcli", "list the series of a DICOM folder (header only) with their problems"),
        Command("measure", "hu_roi.batch", "measure stored ROIs on a DICOM folder (batch) into a CSV"),
        Command("roi", "hu_roi.roicli", "check ROI files, or add an ROI at a voxel, without a viewer"),
        Command("longitudinal", "hu_roi.longitudinal", "patient × level table of HU per timepoint with change vs T0"),
        Command("propagate", "hu_roi.propagate", "propose baseline ROIs on a follow-up series (rigid registration)"),
        Command("reliability", "hu_roi.reliability", "reader reliability (ICC, Bland-Altman, precision SD, LSC) of 2+ measurement CSVs"),
        Command("pseudonymize", "hu_roi.pseudonym", "replace patient IDs in output CSVs by study codes (pseudonym map)"),
        Command("analyze", "hu_roi.analysis.cli", "trial endpoints (Tables 1-5, figures, HTML report) from measurement + clinical CSVs"),
        Command("demo", "hu_roi.demo", "run the whole pipeline on the bundled sample data"),
        Command("export-dicom", "hu_roi.exportdicom", "DICOM SR (TID 1500) and SEG of the measured ROIs, per series"),
        Command("rois-from-labels", "hu_roi.roisfromlabels", "proposed target ROIs from a vertebra label map (NIfTI or DICOM SEG)"),
    ]  # fmt: skip


def parser_builder(cmd: Command) -> AddParser:
    """Import ``cmd``'s module and return its ``add_<name>_parser`` function."""
    module, _, func = cmd.module.partition(":")
    return getattr(  # type: ignore[no-any-return]
        importlib.import_module(module), func or f"add_{cmd.name.replace('-', '_')}_parser"
    )
