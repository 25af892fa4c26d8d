"""Which paths need the API key, and whether a request carries one: decided from headers alone.

RequestGuard (middleware.py) asks these before the app reads or parses a byte of the body, so an
unauthenticated caller gets 401 whatever it sent (invalid JSON, a huge or never-ending body).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

KEY_PREFIX = "/v1/"  # every API route; /healthz and /readyz stay open for probes


def needs_key(path: str, keys: Sequence[str], also_protected: Iterable[str] = ()) -> bool:
    """With keys configured: /v1/* always, and the extra paths (docs, metrics) when asked to."""
    return bool(keys) and (path.startswith(KEY_PREFIX) or path in also_protected)


def has_valid_key(authorization: bytes, keys: Sequence[str]) -> bool:
    """`Authorization: Bearer <key>` names one of `keys`, compared in constant time against every key,
    so timing tells nothing about which matched or how much of a key was right."""
    scheme, _, token = authorization.partition(b" ")
    supplied = token.strip() if scheme.lower() == b"bearer" else b""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied, key.encode())
    return matched


UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <key>'"
