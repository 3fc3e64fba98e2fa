"""Time bounds of the guardrails, shared by everything that enforces or checks them.

The node's bootstrap (``node/bootstrap.sh``) holds the same numbers as shell constants; a unit test
keeps the two equal. The broker validates a requested dead-man time with ``deadman_problem``, the
node clamps whatever it is given into the same range, so neither side alone can be talked into
keeping an instance that never joined the pool for longer than ``DEADMAN_MAX_SECONDS``.
"""

from __future__ import annotations

# The broker's and the enforcer's Lambda timeout (templates/stack.py): no invocation outlives it.
FUNCTION_TIMEOUT_SECONDS = 300

# Dead-man: an instance that has not joined the pool this long after boot powers off.
DEADMAN_DEFAULT_SECONDS = 30 * 60
DEADMAN_MIN_SECONDS = 5 * 60  # installing HTCondor and starting it takes minutes
DEADMAN_MAX_SECONDS = 4 * 3600

# Lease watchdog: this long without being able to read the lease tag, the instance powers off.
LEASE_UNREADABLE_LIMIT_SECONDS = 15 * 60

# The scheduled sweep runs every 5 minutes; three missed in a row is an outage.
SWEEP_STALE_AFTER_SECONDS = 15 * 60

# Volumes, fleets and spot requests of the stack are left alone this long after they were made:
# a launch may be attaching or reading them right now.
LEFTOVER_GRACE_SECONDS = 10 * 60


def deadman_problem(seconds: object) -> str | None:
    """Why ``seconds`` cannot be a dead-man time, or None."""
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        return f"the dead-man time must be a whole number of seconds, not {seconds!r}"
    if not DEADMAN_MIN_SECONDS <= seconds <= DEADMAN_MAX_SECONDS:
        return (
            f"the dead-man time must be between {DEADMAN_MIN_SECONDS} and {DEADMAN_MAX_SECONDS} "
            f"seconds, not {seconds}"
        )
    return None
