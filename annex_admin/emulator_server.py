"""The project's local AWS emulator: moto's server, patched in its own process where moto falls short.

The sandbox (`annex-admin sandbox`), the test suite and the benchmarks all start this one module,
``python -m annex_admin.emulator_server -H 127.0.0.1 -p PORT``, so they all see the same emulator.
It changes moto 5.2 in two places and leaves everything else as moto does it:

1. IAM enforcement names Lambda's Invoke operation ``lambda:InvokeFunction`` (AWS's action) and
   checks it against the function's ARN, so an AWS-correct policy is judged as AWS would judge it.
2. EC2 tag lookups are fast. moto 5.2 looks up the tags of one EC2 resource by scanning every tag
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

# AWS's action names where they differ from the operation's name (Lambda's Invoke is the one).
IAM_ACTION_NAMES = {"lambda:Invoke": "lambda:InvokeFunction"}


def install_invoke_action_name() -> None:
    """Judge Lambda's Invoke as AWS does: action ``lambda:InvokeFunction``, resource the function.

    moto names the action after the API operation (``lambda:Invoke``) and checks every Lambda
    request against resource ``*``, so an AWS-correct policy (InvokeFunction on the function's
    ARN) would be refused.
    """
    from moto.awslambda.responses import LambdaResponse
    from moto.iam.access_control import IAMRequestBase

    moto_init = IAMRequestBase.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        moto_init(self, *args, **kwargs)
        self._action = IAM_ACTION_NAMES.get(self._action, self._action)

    def _determine_resource(self: Any) -> str:
        if self._get_action() != "Invoke":
            return "*"
        return invoked_function_arn(self)

    IAMRequestBase.__init__ = __init__  # type: ignore[method-assign]
    LambdaResponse._determine_resource = _determine_resource  # type: ignore[attr-defined]


def invoked_function_arn(response: Any) -> str:
    """The ARN an Invoke request names: a name, a partial or a full ARN, with or without qualifier."""
    from urllib.parse import unquote

    from moto.utilities.utils import get_partition

    named = unquote(response.path.rsplit("/", 2)[-2])
    if named.startswith("arn:"):
        return named
    account_id, name = response.current_account, named
    if ":function:" in named:
        account_id, _, name = named.split(":", 2)
    qualifier = response.querystring.get("Qualifier", [None])[0]
    if qualifier and ":" not in name:
        name = f"{name}:{qualifier}"
    region = response.region
    return f"arn:{get_partition(region)}:lambda:{region}:{account_id}:function:{name}"


def install_fast_tag_lookup() -> None:
    """Read one resource's tags from its own entry of moto's tag store (see the module's 2.)."""
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
    install_invoke_action_name()
    moto_main(args)


if __name__ == "__main__":
    main()
