"""The seed's story through the installed console scripts, against the emulator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from annex_common.aws import make_clients
from templates import contract
from tests.flows import PROJECT, USER


def setup_region_and_bundle(shell) -> str:
    assert shell.setup_region().returncode == 0
    bundle = shell.home / "b.toml"
    issued = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER, "--output", str(bundle))
    assert issued.returncode == 0, issued.output
    assert (bundle.stat().st_mode & 0o777) == 0o600
    return str(bundle)


def live_instances(project: str = PROJECT) -> list[dict]:
    ec2 = make_clients(region="us-east-1").ec2
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    ):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return [i for i in found if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(contract.TAG_PROJECT) == project]


@pytest.mark.parametrize("enforce_iam", [False, True], ids=["plain", "iam-enforced"])
def test_launch_status_extend_terminate(shell, aws, enforce_iam):
    bundle = setup_region_and_bundle(shell)
    if enforce_iam:
        # From here on only keys the emulator knows work: the suite's fake admin keys are
        # refused, so every call below is made with the bundle's keys.
        aws.enforce_iam(True)
    env = {"CONDOR_ANNEX_CREDENTIALS": bundle}
    expiry = (datetime.now().astimezone() + timedelta(days=3)).replace(second=0, microsecond=0)
    launched = shell.run(
        "condor_annex", "--project-id", PROJECT, "--expiry", expiry.strftime("%Y-%m-%d %H:%M"),
        "--instances", "16", "--yes", env=env,
    )
    assert launched.returncode == 0, launched.output
    assert "Launched 16 of 16" in launched.stdout
    assert "most it costs" in launched.stdout

    status = shell.run("condor_annex", "status", "--output", "json", env=env)
    assert status.returncode == 0, status.output
    rows = json.loads(status.stdout)
    assert len(rows) == 16
    annex_name = rows[0]["annex_name"]
    expected_expiry = expiry.astimezone(timezone.utc).strftime(contract.EXPIRY_FORMAT)
    for row in rows:
        assert row["project_id"] == PROJECT and row["annex_name"] == annex_name
        assert row["expiry"] == expected_expiry
        assert row["in_pool"] is None  # no collector can run here
        assert {"instance_id", "state", "instance_type"} <= set(row)

    if enforce_iam:
        aws.enforce_iam(False)
    instances = live_instances()
    assert len(instances) == 16
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[contract.TAG_ANNEX_NAME] == annex_name
        assert tags[contract.TAG_PROJECT] == PROJECT
        assert tags[contract.TAG_EXPIRY] == expected_expiry
        assert tags[contract.TAG_IDLE] == "900"
        assert tags[contract.TAG_OWNER] == USER
    if enforce_iam:
        aws.enforce_iam(True)

    extended = shell.run("condor_annex", "extend", "--annex-name", annex_name, "--duration", "96", "--yes", env=env)
    assert extended.returncode == 0, extended.output
    rows = json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout)
    new_expiries = {row["expiry"] for row in rows}
    assert len(new_expiries) == 1 and new_expiries != {expected_expiry}
    moved = datetime.strptime(new_expiries.pop(), contract.EXPIRY_FORMAT).replace(tzinfo=timezone.utc)
    assert abs((moved - datetime.now(timezone.utc)) - timedelta(hours=96)) < timedelta(minutes=5)

    ended = shell.run("condor_annex", "terminate", "--annex-name", annex_name, "--yes", env=env)
    assert ended.returncode == 0, ended.output
    assert json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout) == []
    if enforce_iam:
        aws.enforce_iam(False)
    assert live_instances() == []


def test_import_credentials_installs_the_bundle_privately(shell):
    bundle = setup_region_and_bundle(shell)
    result = shell.run("condor_annex", "import-credentials", bundle)
    assert result.returncode == 0, result.output
    installed = shell.home / ".condor" / "annex-credentials.toml"
    assert installed.exists() and (installed.stat().st_mode & 0o777) == 0o600
    # Found in the default place with no --credentials and no environment variable.
    status = shell.run("condor_annex", "status", "--output", "json")
    assert status.returncode == 0 and json.loads(status.stdout) == []


def test_dry_run_launches_nothing(shell):
    bundle = setup_region_and_bundle(shell)
    result = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "5", "--instances", "4", "--dry-run",
                       env={"CONDOR_ANNEX_CREDENTIALS": bundle})
    assert result.returncode == 0, result.output
    assert "Nothing was launched" in result.stdout
    assert live_instances() == []


def test_the_bundle_is_enough_no_condor_config_and_no_pool_key_on_her_machine(shell, aws):
    """The README's headline command, then status, extend and terminate, through the console
    scripts, with IAM enforcement on: no CONDOR_CONFIG, and no pool key or password anywhere on
    the scientist's machine. The broker mints the annex's token, and again on extension: the
    stored token outlives the new lease end by exactly one hour."""
    import jwt

    from annex_cloud.pool_tokens import signing_key
    from tests.flows import ANNEX_KEY_FILE, POOL_PASSWORD, scramble

    bundle = setup_region_and_bundle(shell)  # the administrator's key copy is gone once recorded
    secrets = (ANNEX_KEY_FILE, POOL_PASSWORD, scramble(POOL_PASSWORD))
    for path in shell.home.rglob("*"):
        if path.is_file():
            assert not any(secret in path.read_bytes() for secret in secrets), f"a pool secret in {path}"
    env = {"CONDOR_ANNEX_CREDENTIALS": bundle, "CONDOR_CONFIG": None}
    aws.enforce_iam(True)
    expiry = (datetime.now().astimezone() + timedelta(days=3)).replace(second=0, microsecond=0)
    launched = shell.run("condor_annex", "--project-id", PROJECT, "--expiry", expiry.strftime("%Y-%m-%d %H:%M"),
                         "--instances", "16", "--yes", env=env)
    assert launched.returncode == 0, launched.output
    assert "Launched 16 of 16" in launched.stdout
    assert "cm.pool.example:9618" in launched.stdout and "the broker signs with the key ANNEX" in launched.stdout

    status = shell.run("condor_annex", "status", "--output", "json", env=env)
    assert status.returncode == 0, status.output
    rows = json.loads(status.stdout)
    assert len(rows) == 16 and {r["in_pool"] for r in rows} == {None}  # no CONDOR_CONFIG: EC2's view
    annex_name, token_id = rows[0]["annex_name"], rows[0]["token_id"]
    assert len(token_id) == 32

    later = expiry + timedelta(days=1)
    extended = shell.run("condor_annex", "extend", "--annex-name", annex_name, "--expiry",
                         later.strftime("%Y-%m-%d %H:%M"), "--yes", env=env)
    assert extended.returncode == 0, extended.output
    assert "new pool token" in extended.stdout

    aws.enforce_iam(False)
    clients = make_clients(region="us-east-1")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in
               clients.cloudformation.describe_stacks(StackName=contract.DEFAULT_STACK_NAME)["Stacks"][0]["Outputs"]}
    key = contract.annex_prefix(PROJECT, annex_name) + contract.TOKEN_OBJECT
    token = clients.s3.get_object(Bucket=outputs[contract.OUT_BUCKET], Key=key)["Body"].read().decode().strip()
    claims = jwt.decode(token, signing_key(ANNEX_KEY_FILE, "ANNEX"), algorithms=["HS256"],
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["jti"] == token_id
    assert claims["exp"] == int(later.timestamp()) + 3600
    aws.enforce_iam(True)

    ended = shell.run("condor_annex", "terminate", "--annex-name", annex_name, "--yes", env=env)
    assert ended.returncode == 0, ended.output
    aws.enforce_iam(False)
    assert live_instances() == []
