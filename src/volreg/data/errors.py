"""Exceptions for invalid data settings and input arrays.

They subclass the built-in ValueError and FileNotFoundError, so callers that already catch those
keep working, and each message names the array, file, key and shape involved and the fix.
"""


class DataError(ValueError):
    """Invalid input data or data settings."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A configured input file does not exist."""


class ModelMismatchError(DataError):
    """The data do not fit the input or output shape of a model."""
