"""The package version, at the bottom of the import graph (everything may read it)."""

__version__ = "0.1.0"
