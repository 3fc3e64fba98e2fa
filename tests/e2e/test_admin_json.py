"""--output json on annex-admin's reporting commands: JSON alone on stdout, messages on stderr."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from annex_common.aws import make_clients
from templates import contract
from tests.e2e.test_scientist_flow import setup_region_and_bundle
from tests.flows import PROJECT, USER


def test_check_setup_json(shell):
    missing = shell.run("annex-admin", "check-setup", "--output", "json")
    assert missing.returncode == 1, missing.output
    document = json.loads(missing.stdout)
    assert document["complete"] is False and document["stack_name"] == "HTCondorAnnex"
    assert document["checks"][0]["name"] == "stack" and "annex-admin setup" in document["checks"][0]["detail"]

    assert shell.setup_region().returncode == 0
    present = shell.run("annex-admin", "check-setup", "--output", "json")
    assert present.returncode == 0, present.output
    document = json.loads(present.stdout)
    assert document["complete"] is True and document["region"] == "us-east-1"
    assert {c["name"] for c in document["checks"]} >= {"stack", "outputs", "bucket", "enforcer function"}
    assert all(c["ok"] for c in document["checks"])


def test_enforce_json(shell):
    setup_region_and_bundle(shell)
    clients = make_clients(region="us-east-1")
    outputs = clients.cloudformation.describe_stacks(StackName="HTCondorAnnex")["Stacks"][0]["Outputs"]
    subnet = next(o["OutputValue"] for o in outputs if o["OutputKey"] == contract.OUT_SUBNETS).split(",")[0]
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime(contract.EXPIRY_FORMAT)
    tags = {contract.TAG_ANNEX_NAME: "late", contract.TAG_PROJECT: PROJECT, contract.TAG_IDLE: "900",
            contract.TAG_OWNER: USER, contract.TAG_EXPIRY: past}
    expired = clients.ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )["Instances"][0]["InstanceId"]

    dry = shell.run("annex-admin", "enforce", "--dry-run", "--output", "json")
    assert dry.returncode == 0, dry.output
    document = json.loads(dry.stdout)
    assert document["dry_run"] is True
    assert [t["instance_id"] for t in document["terminated"]] == [expired]
    assert "would terminate" in dry.stderr and "enforcer (dry run)" in dry.stderr

    real = shell.run("annex-admin", "enforce", "--output", "json")
    assert json.loads(real.stdout)["terminated"][0]["annex_name"] == "late"


def test_an_unknown_output_format_is_bad_input(shell):
    result = shell.run("annex-admin", "check-setup", "--output", "xml")
    assert result.returncode == 2 and "--output" in result.output
