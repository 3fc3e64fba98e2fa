"""A project's caps, as the administrator set them: the only caps any check trusts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_MAX_INSTANCES = 32
DEFAULT_MAX_LEASE_HOURS = 168.0
DEFAULT_MAX_SPEND_USD = 500.0
MAX_CAP_LEASE_HOURS = 24 * 366  # the bucket keeps annex configuration 400 days
# Float sums of prices must not refuse or terminate over a rounding error.
SPEND_EPSILON = 1e-6
# A client's clock may run a little ahead of AWS's: a lease of exactly the cap, computed from her
# "now", measures slightly longer here. Both the broker and the enforcer forgive this much.
LEASE_CAP_SLACK_SECONDS = 300
MIN_LEASE_SECONDS = 600  # instances need minutes to boot and join the pool
# No lease may end further ahead than this: far beyond any lease cap (MAX_CAP_LEASE_HOURS), and
# near enough that every time reckoned from a lease end (its token's end, say) is a valid date.
MAX_LEASE_AHEAD_SECONDS = 10 * 366 * 24 * 3600


def lease_end_problem(seconds_ahead: float, running_annex: str | None = None) -> tuple[str, str, str] | None:
    """The one rule (and its words: what, why, next) for how far from now a lease may end, which
    the client and the broker both apply: not absurdly far, nor too near to be of use. For an
    annex already running (``running_annex``, an extension), ending it that soon is terminate's
    work, and the words say so. None when the end is fine."""
    if seconds_ahead > MAX_LEASE_AHEAD_SECONDS:
        return (
            "the lease would end more than ten years from now",
            "no lease may last that long: a project's lease cap is a year at most",
            "Pass a nearer --expiry or fewer --duration hours, within your project's lease cap.",
        )
    if seconds_ahead >= MIN_LEASE_SECONDS:
        return None
    if running_annex:
        return (
            "the lease would end less than 10 minutes from now",
            f"annex {running_annex} is already running: to end it that soon is to terminate it",
            f"Run `condor_annex terminate --annex-name {running_annex}` to end it now, or pass a later end.",
        )
    return (
        "the lease would end less than 10 minutes from now",
        "instances need several minutes to boot and join the pool",
        "Pass a later --expiry or a longer --duration.",
    )


@dataclass(frozen=True)
class Caps:
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_lease_hours: float = DEFAULT_MAX_LEASE_HOURS
    max_spend_usd: float = DEFAULT_MAX_SPEND_USD

    # The three rules, each in one place: the broker admits against them, the enforcer ends what
    # breaks them anyway.

    def allows_instances(self, live: int) -> bool:
        return live <= self.max_instances

    def allows_lease(self, seconds: float) -> bool:
        """A lease (from launch to its end) within the cap, forgiving a client's clock running a
        little ahead of AWS's (LEASE_CAP_SLACK_SECONDS)."""
        return seconds <= self.max_lease_hours * 3600 + LEASE_CAP_SLACK_SECONDS

    def allows_spend(self, committed_usd: float) -> bool:
        return committed_usd <= self.max_spend_usd + SPEND_EPSILON

    def describe(self) -> str:
        """The caps in the user's terms."""
        return (
            f"at most {self.max_instances} instances at once, leases of at most "
            f"{self.max_lease_hours:g} hours, at most ${self.max_spend_usd:,.2f} committed"
        )


def is_amount(value: Any) -> bool:
    """A finite number >= 0 (booleans are not numbers here, and NaN compares false with all)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def caps_problem(caps: Caps) -> str | None:
    """Why these caps cannot be used, or None."""
    if not is_amount(caps.max_instances) or caps.max_instances != int(caps.max_instances) or caps.max_instances < 1:
        return f"the instance cap must be a whole number of at least 1, not {caps.max_instances!r}"
    if not is_amount(caps.max_lease_hours) or caps.max_lease_hours <= 0:
        return f"the lease cap must be a positive number of hours, not {caps.max_lease_hours!r}"
    if caps.max_lease_hours > MAX_CAP_LEASE_HOURS:
        return f"the lease cap of {caps.max_lease_hours:g} hours is over a year"
    if not is_amount(caps.max_spend_usd) or caps.max_spend_usd <= 0:
        return f"the spend cap must be a positive number of dollars, not {caps.max_spend_usd!r}"
    return None


def caps_from_mapping(document: Mapping[str, Any]) -> Caps:
    """Caps from a stored record; raises ValueError when any is missing or malformed."""
    for name in ("max_instances", "max_lease_hours", "max_spend_usd"):
        if isinstance(document.get(name), bool):
            raise ValueError(f"{name} is true or false, not a number")
    try:
        caps = Caps(
            max_instances=int(float(document["max_instances"])),
            max_lease_hours=float(document["max_lease_hours"]),
            max_spend_usd=float(document["max_spend_usd"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the caps record is incomplete or malformed ({exc})") from exc
    if float(document["max_instances"]) != caps.max_instances:
        raise ValueError("the instance cap is not a whole number")
    problem = caps_problem(caps)
    if problem:
        raise ValueError(problem)
    return caps


@dataclass(frozen=True)
class CapBound:
    """The range the administrator may give one cap (issue-credentials). Outside it a cap is a slip
    of the keyboard (a spend of $1e12, a lease no launch fits in). Only what she gives is checked:
    a stored record is judged by caps_problem, so a cap recorded before a bound keeps working."""

    field: str  # the Caps field
    low: float
    high: float
    why: str  # why the range is what it is

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high  # NaN holds nothing

    def range_text(self) -> str:
        if self.field == "max_spend_usd":
            return f"${self.low:,.2f} to ${self.high:,.2f}"
        unit = " hours" if self.field == "max_lease_hours" else ""
        return f"{self.low:,g} to {self.high:,g}{unit}"


CAP_BOUNDS = (
    # The benchmarks launch 10,000 at once and list 40,000; a billion is a typo.
    CapBound("max_instances", 1, 100_000, "a project runs at least one instance, and more than 100,000 at once is a typo"),
    # The broker's shortest lease is MIN_LEASE_SECONDS (10 minutes) and a node takes minutes to boot
    # and join: a cap under an hour leaves no useful lease. The longest is MAX_CAP_LEASE_HOURS.
    CapBound("max_lease_hours", 1, MAX_CAP_LEASE_HOURS,
             "a node needs minutes to boot and join (the shortest lease is 10 minutes), and annex "
             "configuration is kept at most 400 days"),
    # Under a dollar is shown as $0.00 and buys minutes of one instance; over ten million is a typo.
    CapBound("max_spend_usd", 1, 10_000_000, "less buys minutes of one instance, and more is beyond any project's budget"),
)


def out_of_bounds(caps: Caps) -> CapBound | None:
    """The first cap outside the range the administrator may give, or None."""
    for bound in CAP_BOUNDS:
        if not bound.holds(getattr(caps, bound.field)):
            return bound
    return None
