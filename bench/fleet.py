"""The benchmark's bookkeeping in the emulator: a fresh region, bulk instances, clean-up.

None of this is measured; it prepares each case so that the timed commands meet the state they
would meet in a real region.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from annex_admin.stack import StackInfo, read_stack
from annex_cloud.tags import LIVE_STATES
from annex_common.bundle import Bundle, load_bundle
from bench.emulator import BenchEmulator, PinnedClients
from templates import contract

PROJECT = "TheNeeds-MooreLab"
USER = "needs-moore"
FLEET_CHUNK = 1000


# Caps with room for every case: the broker and the enforcer read them from the administrator's
# record (the bundle's copy is only shown). The lease cap stays at its default, 168 hours.
MAX_INSTANCES = "10000"
MAX_SPEND_USD = "1000000"


@dataclass
class Region:
    stack: StackInfo
    bundle: Path

    @property
    def scientist(self) -> Bundle:
        return load_bundle(self.bundle)


def script(name: str) -> str:
    import sys

    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(f"{name} is not installed next to {sys.executable}")
    return str(path)


def fresh_region(emu: BenchEmulator, clients: PinnedClients, env: dict[str, str], workdir: Path, *,
                 max_instances: str = MAX_INSTANCES) -> Region:
    """Reset the emulator, then set the region up and issue a bundle with the real console scripts.

    The emulator has no Price List API, so setup stores no fetched prices and the broker and the
    enforcer price from the table shipped for us-east-1 (a region without any price would refuse
    every launch)."""
    emu.reset()
    clients._cache.clear()
    run([script("annex-admin"), "setup", "--yes"], env)
    record_pool(env, workdir)
    return Region(read_stack(clients, contract.DEFAULT_STACK_NAME),
                  issue_bundle(env, workdir, PROJECT, USER, max_instances=max_instances))


def record_pool(env: dict[str, str], workdir: Path) -> None:
    """The pool annexes join, recorded as the administrator does (`annex-admin pool set`), with a
    signing key of its own name in the administrator's folder (mode 0600)."""
    key = workdir / "admin-ANNEX"
    key.unlink(missing_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(64))
    os.close(fd)
    run([script("annex-admin"), "pool", "set", "--collector", "cm.bench.example:9618", "--trust-domain",
         "bench.example", "--signing-key-file", str(key), "--key-name", "ANNEX", "--yes"], env)


def issue_bundle(env: dict[str, str], workdir: Path, project: str, user: str, *,
                 max_instances: str = MAX_INSTANCES, max_spend: str = MAX_SPEND_USD) -> Path:
    """A scientist of ``project`` (a new IAM user and the administrator's record) and her bundle."""
    bundle = workdir / f"bundle-{user}.toml"
    bundle.unlink(missing_ok=True)
    run(
        [script("annex-admin"), "issue-credentials", "--project-id", project, "--user", user, "--output", str(bundle),
         "--max-instances", max_instances, "--max-spend", max_spend, "--yes"],
        env,
    )
    return bundle


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} … failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done


def annex_tags(annex_name: str, expiry: datetime) -> dict[str, str]:
    """The five tags condor_annex puts on an instance."""
    return {
        contract.TAG_ANNEX_NAME: annex_name,
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: expiry.astimezone(timezone.utc).strftime(contract.EXPIRY_FORMAT),
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
    }


def lease_end(hours: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).replace(microsecond=0)


def _roomiest_subnet(clients: PinnedClients, subnets: list[str], wanted: int) -> str:
    found = clients.ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    roomiest = max(found, key=lambda s: s["AvailableIpAddressCount"])
    if roomiest["AvailableIpAddressCount"] < wanted:
        # moto keeps a terminated instance's address taken until the region is reset, and answers
        # a full subnet with an HTTP 500: say so here rather than fail inside a measured command.
        raise RuntimeError(f"the emulator's subnets have no room for {wanted} more instances "
                           "(moto keeps terminated instances' addresses): use fewer runs or smaller sizes")
    return roomiest["SubnetId"]


def add_subnets(clients: PinnedClients, stack: StackInfo, wanted: int) -> list[str]:
    """The stack's subnets and, when ``wanted`` instances need more addresses than they have, more
    /20 subnets in the stack's VPC (the benchmark's own, for instances it creates directly)."""
    found = clients.ec2.describe_subnets(SubnetIds=stack.subnets)["Subnets"]
    free = sum(s["AvailableIpAddressCount"] for s in found)
    vpc = clients.ec2.describe_vpcs(VpcIds=[found[0]["VpcId"]])["Vpcs"][0]
    taken = {s["CidrBlock"] for s in clients.ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]}
    subnets = list(stack.subnets)
    for cidr in ipaddress.ip_network(vpc["CidrBlock"]).subnets(new_prefix=20):
        if free >= wanted:
            break
        if str(cidr) not in taken:
            made = clients.ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=str(cidr),
                                             AvailabilityZone=found[0]["AvailabilityZone"])["Subnet"]
            subnets.append(made["SubnetId"])
            free += made["AvailableIpAddressCount"]
    return subnets


def create_instances(clients: PinnedClients, stack: StackInfo, count: int, tags: dict[str, str],
                     subnets: list[str] | None = None) -> list[str]:
    """Instant fleets of up to 1,000, each in the subnet with the most free addresses."""
    template = stack.launch_templates[stack.instance_types[0]]
    ids: list[str] = []
    while len(ids) < count:
        asked = min(FLEET_CHUNK, count - len(ids))
        subnet = _roomiest_subnet(clients, subnets or stack.subnets, asked)
        response = clients.ec2.create_fleet(
            Type="instant",
            LaunchTemplateConfigs=[{
                "LaunchTemplateSpecification": {"LaunchTemplateId": template, "Version": "$Default"},
                "Overrides": [{"InstanceType": stack.instance_types[0], "SubnetId": subnet}],
            }],
            TargetCapacitySpecification={
                "TotalTargetCapacity": asked, "DefaultTargetCapacityType": "on-demand",
                "OnDemandTargetCapacity": asked,
            },
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )
        got = [i for group in response.get("Instances", []) for i in group.get("InstanceIds", [])]
        if not got:
            raise RuntimeError(f"the emulator launched nothing: {response.get('Errors')}")
        ids += got
    return ids


def live_ids(clients: PinnedClients, filters: list[dict] | None = None) -> list[str]:
    ids: list[str] = []
    paginator = clients.ec2.get_paginator("describe_instances")
    for page in paginator.paginate(
        Filters=[{"Name": "instance-state-name", "Values": list(LIVE_STATES)}, *(filters or [])],
        PaginationConfig={"PageSize": 1000},
    ):
        ids += [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
    return ids


def terminate(clients: PinnedClients, ids: list[str]) -> None:
    for start in range(0, len(ids), 1000):
        clients.ec2.terminate_instances(InstanceIds=ids[start : start + 1000])
