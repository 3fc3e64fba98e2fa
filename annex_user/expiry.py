"""Lease ends: parse what the scientist types into an aware UTC datetime, and check it."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone, tzinfo

from annex_common.errors import BadInput
from annex_cloud.caps import MIN_LEASE_SECONDS, lease_end_problem
from annex_common.times import format_local, format_local_short  # noqa: F401  (the one rule, re-exported)
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag

ACCEPTED = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
MIN_LEASE = timedelta(seconds=MIN_LEASE_SECONDS)


def parse_expiry(text: str, *, now: datetime, local_tz: tzinfo | None = None,
                 running_annex: str | None = None) -> datetime:
    """'YYYY-MM-DD HH:MM' in local time, or with an explicit offset / Z."""
    raw = (text or "").strip()
    if not raw:
        raise BadInput("no expiry given", "--expiry is empty", "Pass --expiry 'YYYY-MM-DD HH:MM'.")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise BadInput(
            f"the expiry {raw!r} has no time of day",
            "a date alone would silently mean midnight at its start",
            f"Pass a time too, e.g. --expiry '{raw} 23:59' (local time), '{raw} 23:59Z' (UTC) or "
            f"'{raw} 23:59-05:00'; or use --duration HOURS.",
        )
    parsed: datetime | None = None
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        for fmt in ACCEPTED:
            try:
                parsed = datetime.strptime(raw, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        raise BadInput(
            f"cannot read the expiry {raw!r}",
            "expected 'YYYY-MM-DD HH:MM' (local time) or with an offset, e.g. '2026-12-18 23:59-05:00'",
            "Pass for example --expiry '2026-12-18 23:59', or use --duration HOURS.",
        )
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=local_tz) if local_tz else parsed.astimezone()
        in_utc = parsed.astimezone(timezone.utc).replace(microsecond=0)
    except (OverflowError, ValueError, OSError) as exc:
        raise BadInput(
            f"the expiry {raw!r} is out of range",
            "it cannot be expressed as a UTC time",
            "Pass a date in the coming months, e.g. --expiry '2026-12-18 23:59'.",
        ) from exc
    return check_future(in_utc, now=now, running_annex=running_annex)


def parse_duration(hours: float, *, now: datetime, running_annex: str | None = None) -> datetime:
    if hours is None or not math.isfinite(hours) or hours <= 0:
        raise BadInput(
            f"--duration {hours} is not a positive number of hours",
            "a lease must last some time",
            "Pass for example --duration 48.",
        )
    # Checked before the end is reckoned: an absurd length has no date.
    problem = lease_end_problem(hours * 3600, running_annex)
    if problem:
        raise BadInput(*problem)
    return (now + timedelta(hours=hours)).replace(microsecond=0)


def check_future(expiry: datetime, *, now: datetime, running_annex: str | None = None) -> datetime:
    """A lease end in the future, neither too near nor too far (``running_annex``: the annex an
    extension moves, which changes the words for too near)."""
    if expiry <= now:
        raise BadInput(
            f"the expiry {format_local(expiry)} is in the past",
            f"it is now {format_local(now)}",
            "Pass a future time with --expiry, or use --duration HOURS.",
        )
    problem = lease_end_problem((expiry - now).total_seconds(), running_annex)
    if problem:
        raise BadInput(*problem)
    return expiry


def to_tag(expiry: datetime) -> str:
    return format_expiry_tag(expiry)


def from_tag(value: str | None) -> datetime | None:
    return parse_expiry_tag(value)
