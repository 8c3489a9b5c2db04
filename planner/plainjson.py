"""Plain JSON values: the one converter every writer of JSON uses (the CLI's --json, the laws
cache, fit results, exported plans).

:func:`plain` turns NaN and ±inf into None (JSON has no such numbers, and readers choke on
``NaN``), numpy scalars and arrays into Python numbers and lists, mapping keys into strings and
tuples into lists; anything else is returned as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def plain(x: Any) -> Any:
    """``x`` as plain JSON values (module docstring)."""
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, int):
        return x
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (bytes, bytearray)):  # numpy arrays and scalars
        try:
            return plain(x.tolist())
        except (TypeError, ValueError):
            return x
    if hasattr(x, "item") and not isinstance(x, (bytes, bytearray)):
        try:
            return plain(x.item())
        except (TypeError, ValueError):
            return x
    return x


def stored_config(raw: Any) -> dict | None:
    """A run's stored ``config_json`` as a dict, or None when it is missing, is not JSON, is
    nested beyond the parser's depth or is not an object: readers that only look a field up
    (seed, corpus, base shape) skip such a run rather than fail. ``planner.db.stored_json`` is
    the strict reader that names the damaged row."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
