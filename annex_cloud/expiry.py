"""The lease end's one format on the wire: ISO 8601 UTC with Z, to the second.

The broker writes it, the enforcer and the client read it with ``parse_expiry_tag``, and the
node's watchdog checks ``EXPIRY_PATTERN`` (copied into the bootstrap and kept equal by a test)
before it converts. Anything else (no seconds, fractions, offsets, padding missing) is no lease.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# POSIX ERE, so that bash's [[ =~ ]] reads it the same way Python's re does.
EXPIRY_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
_EXPIRY_RE = re.compile(EXPIRY_PATTERN)


def parse_expiry_tag(value: object) -> datetime | None:
    """The tag as an aware UTC datetime, or None when absent or not exactly the one format."""
    if not isinstance(value, str) or not _EXPIRY_RE.match(value):
        return None
    try:
        return datetime.strptime(value, EXPIRY_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:  # right shape, impossible date such as 2026-02-30
        return None


def format_expiry_tag(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a lease end must be an aware datetime")
    return moment.astimezone(timezone.utc).strftime(EXPIRY_FORMAT)
