"""Checks of config values that every parser shares (the spec, filter and distill configs)."""
from __future__ import annotations

import math


def is_number(value) -> bool:
    """A finite int or float (not a bool: YAML's true is no threshold)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
