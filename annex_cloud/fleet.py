"""One instant EC2 Fleet request at a time over the stack's launch templates, with fallback.

The broker is the only caller. Only the instance type, the subnet, the priority and (for spot)
the maximum price vary per pool; image, user data, key, profile, metadata options, volumes,
tenancy, termination protection and shutdown behaviour all come from the stack's launch
templates, which the request names by id and version (the project's own version, which adds the
project's node profile: annex_cloud.nodes) and never overrides.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import ClientError

from annex_cloud.errors import Refused
from annex_cloud.tags import tag_list

FLEET_CHUNK = 1000  # instances asked for in one CreateFleet call
# Rounds beyond those the count needs: one per pool that may run dry, bounded.
FALLBACK_ROUNDS = 5
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "Unsupported",
    "UnfulfillableCapacity",
    "InsufficientFreeAddressesInSubnet",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
})

# A new instance profile (issue-credentials makes one per project) is usable by EC2 only once IAM
# has propagated it, typically seconds later; until then EC2 refuses the launch as an invalid
# profile. Such a round is asked again after these pauses (about 30 s in all), then refused.
PROFILE_WAITS = (2.0, 4.0, 8.0, 16.0)

Pool = tuple[str, str]  # (instance type, subnet id)


def profile_not_ready(code: str, message: str) -> bool:
    """EC2's answer for an instance profile IAM has not yet made usable (or that does not exist)."""
    text = message.lower()
    return code == "InvalidParameterValue" and ("iam instance profile" in text or "iaminstanceprofile" in text)


@dataclass(frozen=True)
class FleetError:
    instance_type: str
    subnet: str
    code: str
    message: str

    @property
    def capacity(self) -> bool:
        return self.code in CAPACITY_CODES

    def to_dict(self) -> dict[str, str]:
        return {"instance_type": self.instance_type, "subnet": self.subnet, "code": self.code, "message": self.message}


@dataclass
class FleetResult:
    instances: dict[str, Pool] = field(default_factory=dict)  # id -> pool it landed in
    errors: list[FleetError] = field(default_factory=list)
    rounds: int = 0
    stopped_by: str = ""  # why rounds ended early, when they did

    def by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for itype, _ in self.instances.values():
            counts[itype] = counts.get(itype, 0) + 1
        return counts


@dataclass(frozen=True)
class FleetSpec:
    count: int
    launch_templates: dict[str, str]  # instance type -> launch template id
    pools: list[Pool]  # in order of preference
    tags: dict[str, str]
    spot: bool
    max_price: dict[str, float]  # instance type -> USD/h, the spot ceiling
    versions: dict[str, str] = field(default_factory=dict)  # instance type -> template version
    # Tags of the fleet itself: the broker's role may create only a fleet tagged with its stack,
    # and the enforcer may delete only such fleets.
    fleet_tags: dict[str, str] = field(default_factory=dict)


def fleet_request(spec: FleetSpec, count: int, pools: list[Pool], token: str) -> dict[str, Any]:
    configs = []
    for itype, template_id in spec.launch_templates.items():
        overrides = []
        for rank, (pool_type, subnet) in enumerate(pools):
            if pool_type != itype:
                continue
            override: dict[str, Any] = {"InstanceType": itype, "SubnetId": subnet, "Priority": float(rank)}
            if spec.spot:
                override["MaxPrice"] = f"{spec.max_price[itype]:.5f}"
            overrides.append(override)
        if overrides:
            configs.append({
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": template_id, "Version": spec.versions.get(itype, "$Default"),
                },
                "Overrides": overrides,
            })
    capacity = "spot" if spec.spot else "on-demand"
    request: dict[str, Any] = {
        "Type": "instant",
        "ClientToken": token,
        "LaunchTemplateConfigs": configs,
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": count,
            "DefaultTargetCapacityType": capacity,
            ("SpotTargetCapacity" if spec.spot else "OnDemandTargetCapacity"): count,
        },
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(spec.tags)}],
    }
    if spec.fleet_tags:
        request["TagSpecifications"].append({"ResourceType": "fleet", "Tags": tag_list(spec.fleet_tags)})
    if spec.spot:
        request["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
    else:
        request["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
    return request


def read_answer(response: dict[str, Any], result: FleetResult) -> tuple[list[str], list[FleetError]]:
    """The instances and errors of one answer (both may be present: a partial fleet)."""
    launched: list[str] = []
    for group in response.get("Instances", []):
        chosen = group.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
        pool = (chosen.get("InstanceType", group.get("InstanceType", "")), chosen.get("SubnetId", ""))
        for instance_id in group.get("InstanceIds", []):
            if instance_id not in result.instances:
                result.instances[instance_id] = pool
                launched.append(instance_id)
    errors = []
    for error in response.get("Errors", []):
        chosen = error.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
        errors.append(FleetError(
            chosen.get("InstanceType", ""), chosen.get("SubnetId", ""),
            error.get("ErrorCode", ""), error.get("ErrorMessage", ""),
        ))
    result.errors.extend(errors)
    return launched, errors


def _round_answer(
    create_fleet: Callable[..., dict[str, Any]], request: dict[str, Any], sleep: Callable[[float], None],
) -> dict[str, Any] | None:
    """One round's answer, asked again while EC2 says the node profile is not usable yet; None when
    it still says so after the last pause.

    Each new ask has its own client token: EC2 would answer the first token with its first answer.
    """
    token = request["ClientToken"]
    for attempt, pause in enumerate((0.0, *PROFILE_WAITS)):
        if pause:
            sleep(pause)
        asked = {**request, "ClientToken": token if attempt == 0 else f"{token}-p{attempt}"[:64]}
        try:
            response = create_fleet(**asked)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if not profile_not_ready(str(error.get("Code", "")), str(error.get("Message", ""))):
                raise
            continue
        errors = response.get("Errors") or []
        waiting = errors and all(profile_not_ready(e.get("ErrorCode", ""), e.get("ErrorMessage", "")) for e in errors)
        if response.get("Instances") or not waiting:
            return response
    return None


def profile_refusal() -> Refused:
    return Refused(
        "EC2 does not accept the project's node profile yet",
        f"a new instance profile takes seconds to reach EC2, and it was still refused after {sum(PROFILE_WAITS):.0f} s",
        "Try again in a minute; if it persists, ask your pool administrator to run `annex-admin check-setup`.",
    )


def max_fleet_rounds(count: int) -> int:
    """Enough rounds for the count at FLEET_CHUNK a round, plus room for capacity fallback."""
    return -(-count // FLEET_CHUNK) + FALLBACK_ROUNDS


def run_fleet(
    create_fleet: Callable[..., dict[str, Any]],
    spec: FleetSpec,
    *,
    token_prefix: str,
    on_launched: Callable[[list[str]], None] = lambda ids: None,
    result: FleetResult | None = None,
    sleep: Callable[[float], None] = time.sleep,
    before_round: Callable[[], str | None] = lambda: None,
) -> FleetResult:
    """Fleet until the count is met, every pool has run dry, or AWS refuses for another reason.

    Each round's client token is derived from the request id, so a retried round is the same
    request to EC2. ``on_launched`` hears of instances as soon as an answer names them, and
    ``result`` (when given) holds them even if a later round raises. ``before_round`` is asked
    before each round after the first, and stops the rounds when it gives a reason (the launch
    lost its project's lock).
    """
    result = result if result is not None else FleetResult()
    pools = list(spec.pools)
    max_rounds = max_fleet_rounds(spec.count)
    while len(result.instances) < spec.count and pools and result.rounds < max_rounds:
        if result.rounds and (reason := before_round()):
            result.stopped_by = reason
            break
        result.rounds += 1
        asked = min(spec.count - len(result.instances), FLEET_CHUNK)
        token = f"{token_prefix}-{result.rounds}"[:64] if token_prefix else uuid.uuid4().hex
        response = _round_answer(create_fleet, fleet_request(spec, asked, pools, token), sleep)
        if response is None:
            if not result.instances:
                raise profile_refusal()
            result.stopped_by = profile_refusal().why
            break
        launched, errors = read_answer(response, result)
        if launched:
            on_launched(launched)
        if any(not e.capacity for e in errors):
            result.stopped_by = "; ".join(f"{e.code}: {e.message}" for e in errors if not e.capacity)[:500]
            break
        dry = {(e.instance_type, e.subnet) for e in errors}
        remaining = [p for p in pools if p not in dry]
        if remaining == pools and (errors or not launched):
            # Nothing to exclude: another round would ask the same pools the same question.
            result.stopped_by = (
                "the fleet's errors named no pool to avoid" if errors else "the fleet launched nothing"
            )
            break
        pools = remaining
    if len(result.instances) < spec.count and not result.stopped_by:
        result.stopped_by = (
            "every pool ran out of capacity" if not pools else f"stopped after {result.rounds} fleet rounds"
        )
    return result
