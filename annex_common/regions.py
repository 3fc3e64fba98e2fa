"""AWS region names, checked against the list botocore ships before any request is made.

A mistyped region would otherwise reach an endpoint that does not exist (or, with a local emulator,
a server that answers with an error page) and read as a network or server failure.
"""

from __future__ import annotations

import difflib
from functools import lru_cache

from annex_common.errors import BadInput


@lru_cache(maxsize=1)
def known_regions() -> tuple[str, ...]:
    """Every region EC2 is offered in, in every partition botocore knows (no network call)."""
    from annex_common.aws import profile_free_session

    # botocore's own data: a profile named by the shell (even one that does not exist) has no say.
    session = profile_free_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return tuple(sorted(regions))


def closest_region(region: str) -> str | None:
    """The known region nearest to a mistyped one, if any is near."""
    close = difflib.get_close_matches(region, known_regions(), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_region_reason() -> str:
    return "it is not one of the regions EC2 is offered in: " + ", ".join(known_regions())


def validate_region(region: str, *, source: str = "--region") -> str:
    """The region itself when AWS knows it; otherwise bad input naming the known regions.

    ``source`` says where the value came from (an option, a file), so the message points there.
    """
    if region in known_regions():
        return region
    nearest = closest_region(region)
    raise BadInput(
        f"unknown AWS region {region!r} (from {source})",
        unknown_region_reason(),
        (f"Did you mean {nearest}? " if nearest else "") + "Give a region from that list.",
    )
