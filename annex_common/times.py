"""Times as people read them: local, with the zone. Machines get ISO 8601 UTC (``annex_cloud.expiry``).

The one place both tools format a moment for a person; JSON and tags never come through here.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

# A moment as the broker and AWS write it: ISO 8601 UTC with Z, to the second.
_UTC_STAMP = re.compile(r"\b(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})Z\b")


def format_local(moment: datetime) -> str:
    """Local time with its zone, and UTC beside it unless local time is UTC:
    '2026-12-18 23:59 CET (2026-12-18 22:59 UTC)'. For plans and messages."""
    local = moment.astimezone()
    utc = moment.astimezone(timezone.utc)
    if local.utcoffset() == utc.utcoffset():
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    return f"{local:%Y-%m-%d %H:%M %Z} ({utc:%Y-%m-%d %H:%M} UTC)"


def format_local_short(moment: datetime) -> str:
    """Local time with its zone alone, for a table cell: '2026-12-18 23:59 CET'."""
    local = moment.astimezone()
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or 'UTC'}"


def local_times_in(text: str) -> str:
    """Words written with ISO UTC stamps (the broker's, AWS's), with each stamp as people read it."""

    def local(match: re.Match[str]) -> str:
        try:
            moment = datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}+00:00")
        except ValueError:
            return match.group(0)
        return format_local(moment)

    return _UTC_STAMP.sub(local, text)


def parse_utc_stamp(text: object) -> datetime | None:
    """An ISO 8601 UTC stamp with Z (as the registry records times), or None."""
    if not isinstance(text, str):
        return None
    match = _UTC_STAMP.fullmatch(text.strip())
    return datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}+00:00") if match else None
