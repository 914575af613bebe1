"""The package version (its own module: the command line reads it without importing the package's
__init__)."""

__version__ = "0.1.0"
