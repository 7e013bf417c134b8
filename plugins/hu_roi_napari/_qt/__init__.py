"""All Qt code of the hu-roi napari plugin."""

from ._widget import HuRoiWidget

__all__ = ["HuRoiWidget"]
