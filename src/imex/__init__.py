"""imex: an open image exchange hub for hospitals."""

__version__ = "0.1.0"
