"""moto's server with one emulator-side speed fix, for the benchmark only.

moto 5.2 looks up the tags of one EC2 resource by scanning every tag of every resource
(``TaggedEC2Resource.get_tags`` calls ``describe_tags`` with a resource-id filter). A tag filter
in DescribeInstances, and the response itself, ask for each instance's tags, so describing N
tagged instances costs O(N^2) in the emulator: 5,000 instances take minutes, which measures
moto and not the tools. Here the lookup reads the resource's own entry of the same tag store.
The result is the same list, in the same order, for every resource id (ids hold no wildcard
characters, so the original's anchored pattern matches exactly one id).

Both the tools and the `aws` CLI baselines talk to this same server, so ratios stay fair.
Run as ``python -m bench.moto_server -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import sys
from typing import Any


def install_fast_tag_lookup() -> None:
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

    install_fast_tag_lookup()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
