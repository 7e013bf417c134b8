"""napari plugin of hu-roi (thin: translates napari layers to core types, calls the core)."""

__version__ = "0.1.0"
