"""Lease ends: parse what the scientist types into an aware UTC datetime, and check it."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone, tzinfo

from annex_common.errors import BadInput
from annex_cloud.caps import lease_end_problem
from annex_common.times import format_local, format_local_short  # noqa: F401  (the one rule, re-exported)
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag

# 'YYYY-MM-DD HH:MM' (or T), seconds allowed only as :00, then a zone: Z, UTC, an offset
# (+01:00, -0500, +03), or the local zone's abbreviation as this tool prints it (CET).
_EXPIRY = re.compile(
    r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?:T|\s+)(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2}(?:\.\d+)?))?"
    r"\s*(?:(?P<utc>[Zz]|[Uu][Tt][Cc])|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?|(?P<abbr>[A-Za-z]{2,6}))?"
)
FORMS = "'YYYY-MM-DD HH:MM' (local time), with UTC or Z, or with an offset, e.g. '2026-12-18 23:59-05:00'"


def parse_expiry(text: str, *, now: datetime, local_tz: tzinfo | None = None,
                 running_annex: str | None = None) -> datetime:
    """'YYYY-MM-DD HH:MM' in local time, or with a zone: Z, UTC, an offset, or the local zone's
    abbreviation (the forms this tool prints). A lease ends on a whole minute: seconds other than
    :00 are refused (every time shown is to the minute). A local time that does not exist
    (clocks go forward) or happens twice (clocks go back) is refused, naming what to write."""
    raw = (text or "").strip()
    if not raw:
        raise BadInput("no expiry given", "--expiry is empty", "Pass --expiry 'YYYY-MM-DD HH:MM'.")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise BadInput(
            f"the expiry {raw!r} has no time of day",
            "a date alone would silently mean midnight at its start",
            f"Pass a time too, e.g. --expiry '{raw} 23:59' (local time), '{raw} 23:59 UTC' or "
            f"'{raw} 23:59-05:00'; or use --duration HOURS.",
        )
    form = _EXPIRY.fullmatch(raw)
    if form is None:
        raise BadInput(
            f"cannot read the expiry {raw!r}",
            f"expected {FORMS}",
            "Pass for example --expiry '2026-12-18 23:59', or use --duration HOURS.",
        )
    wall = _wall_time(raw, form)
    if wall.year > now.year + 10:  # beyond reach, and (near year 9999) beyond what a zone can convert
        raise BadInput(*lease_end_problem(math.inf))
    if form["utc"]:
        moment = wall.replace(tzinfo=timezone.utc)
    elif form["sign"]:
        moment = _with_offset(raw, wall, form)
    else:
        moment = _local_moment(raw, wall, form["abbr"], local_tz)
    try:
        in_utc = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError, OSError) as exc:
        raise _out_of_range(raw) from exc
    return check_future(in_utc, now=now, running_annex=running_annex)


def _wall_time(raw: str, form: re.Match[str]) -> datetime:
    year, month, day = int(form["y"]), int(form["m"]), int(form["d"])
    try:
        date = datetime(year, month, day)
    except ValueError as exc:
        raise BadInput(
            f"the expiry {raw!r} names no such date",
            f"{form['y']}-{form['m']}-{form['d']} is not a day of the calendar",
            "Pass a real date, e.g. --expiry '2026-12-18 23:59'.",
        ) from exc
    hour, minute = int(form["H"]), int(form["M"])
    if hour > 23 or minute > 59 or (form["S"] is not None and float(form["S"]) >= 60):
        raise BadInput(
            f"the expiry {raw!r} names no such time of day",
            "hours go from 00 to 23, minutes from 00 to 59",
            "Pass for example --expiry '2026-12-18 23:59'.",
        )
    if form["S"] is not None and float(form["S"]) != 0:
        raise BadInput(
            f"the expiry {raw!r} has seconds",
            "a lease ends on a whole minute (every time shown is to the minute)",
            f"Pass the minute alone, e.g. --expiry '{form['y']}-{form['m']}-{form['d']} {form['H']}:{form['M']}'.",
        )
    return date.replace(hour=hour, minute=minute)


def _with_offset(raw: str, wall: datetime, form: re.Match[str]) -> datetime:
    hours, minutes = int(form["oh"]), int(form["om"] or 0)
    if hours > 23 or minutes > 59:
        raise BadInput(
            f"the expiry {raw!r} has an offset that is no offset",
            "an offset is at most -23:59 or +23:59 from UTC",
            "Pass for example --expiry '2026-12-18 23:59-05:00'.",
        )
    offset = timedelta(hours=hours, minutes=minutes) * (-1 if form["sign"] == "-" else 1)
    return wall.replace(tzinfo=timezone(offset))


def _local_moment(raw: str, wall: datetime, abbr: str | None, local_tz: tzinfo | None) -> datetime:
    """The one moment a local wall time names, with the zone abbreviation when one was written."""
    try:
        readings = _readings(wall, local_tz)
    except (OverflowError, ValueError, OSError) as exc:
        raise _out_of_range(raw) from exc
    day_time = f"{wall:%Y-%m-%d %H:%M}"
    if abbr is not None:
        named = [moment for moment in readings if moment.tzname() == abbr]
        if not named:
            zones = sorted({moment.tzname() or "" for moment in readings} - {""})
            raise BadInput(
                f"the expiry {raw!r} names the zone {abbr}",
                f"this computer's zone is {' or '.join(zones) or 'another'} at that time; other zones are read "
                "by their offset only (abbreviations are ambiguous)",
                f"Pass local time ('{day_time}'), UTC ('{day_time} UTC') or an offset, e.g. '{day_time}-05:00'.",
            )
        readings = named
    if not readings:
        raise BadInput(
            f"the local time {day_time} does not exist",
            "the clocks skip it (they go forward that night)",
            f"Pass a time outside the skipped hour, or UTC, e.g. --expiry '{day_time} UTC'.",
        )
    if len(readings) > 1:
        first, second = readings
        raise BadInput(
            f"the local time {day_time} happens twice",
            "the clocks go back that night, so it names two moments an hour apart",
            f"Say which: --expiry '{day_time} {first.tzname()}' or '{day_time} {second.tzname()}'."
            if first.tzname() != second.tzname() else
            f"Say which with an offset: --expiry '{day_time}{first:%z}' or '{day_time}{second:%z}'.",
        )
    return readings[0]


def _readings(wall: datetime, local_tz: tzinfo | None) -> list[datetime]:
    """The moments a local wall time names: one; two in a fold (clocks go back); none in a gap
    (clocks go forward). Each one read back gives the same wall time."""
    found: list[datetime] = []
    for fold in (0, 1):
        candidate = wall.replace(fold=fold)
        moment = candidate.replace(tzinfo=local_tz) if local_tz else candidate.astimezone()
        utc = moment.astimezone(timezone.utc)
        back = utc.astimezone(local_tz) if local_tz else utc.astimezone()
        if back.replace(tzinfo=None, fold=0) == wall and all(utc != seen for seen in found):
            found.append(back)
    return found


def _out_of_range(raw: str) -> BadInput:
    return BadInput(
        f"the expiry {raw!r} is out of range",
        "it cannot be expressed as a UTC time",
        "Pass a date in the coming months, e.g. --expiry '2026-12-18 23:59'.",
    )


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
