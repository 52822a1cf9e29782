"""Compact JSON bytes: the records the service writes (changes, user and group states) and the bodies
it sends. The encoder is built once: `json.dumps(..., separators=...)` builds a new one on every call,
and this runs several times per change."""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"))


def compact_json(doc: Any) -> bytes:
    """The same bytes as `json.dumps(doc, separators=(",", ":")).encode()`."""
    return _ENCODER.encode(doc).encode()
