"""The project's local AWS emulator: moto's server, patched in its own process where moto falls short.

The sandbox (`annex-admin sandbox`), the test suite and the benchmarks all start this one module,
``python -m annex_admin.emulator_server -H 127.0.0.1 -p PORT``, so they all see the same emulator.
It changes moto 5.2 in one place and leaves everything else as moto does it:

1. EC2 tag lookups are fast. moto 5.2 looks up the tags of one EC2 resource by scanning every tag
   of every resource (``TaggedEC2Resource.get_tags`` calls ``describe_tags`` with a resource-id
   filter). A tag filter in DescribeInstances, and the response itself, ask for each instance's
   tags, so describing N tagged instances costs O(N^2) in the emulator: 5,000 instances take
   minutes, which measures moto and not the tools. Here the lookup reads the resource's own entry
   of the same tag store. The result is the same list, in the same order, for every resource id
   (ids hold no wildcard characters, so the original's anchored pattern matches exactly one id).
   In the benchmarks both the tools and the `aws` CLI baselines talk to this same server, so
   ratios stay fair.
"""

from __future__ import annotations

import sys
from typing import Any


def install_fast_tag_lookup() -> None:
    """Read one resource's tags from its own entry of moto's tag store (see the module's 1.)."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        # .get, not [...]: the store is a defaultdict and a lookup must not add an entry.
        tags = self.ec2_backend.tags.get(resource_id, {})
        resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
            for key, value in list(tags.items())
        ]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    args = sys.argv[1:] if argv is None else argv
    install_fast_tag_lookup()
    moto_main(args)


if __name__ == "__main__":
    main()
