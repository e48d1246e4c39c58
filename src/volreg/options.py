"""Checks for string settings, shared by every module that takes one."""

from collections.abc import Iterable


def check_choice(name: str, value: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError listing the choices."""
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise ValueError(f"invalid {name}={value!r}: choose one of {choices}")
    return value
