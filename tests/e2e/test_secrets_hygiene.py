"""No secret where it must not be: the access key secret, the pool password and the annex token are
searched for in everything a full flow prints, and in everything it leaves in AWS."""

from __future__ import annotations

import base64
import json

from annex_common.aws import make_clients
from templates import contract
from tests.flows import POOL_PASSWORD, PROJECT, USER, scramble
from annex_common.bundle import load_bundle


def everything_in_aws(clients) -> dict[str, str]:
    """Text of every place in the emulator the tools write to, by where it was found."""
    found: dict[str, str] = {}
    stacks = clients.cloudformation.describe_stacks()["Stacks"]
    found["stack outputs"] = json.dumps([s.get("Outputs", []) for s in stacks])
    for lt in clients.ec2.describe_launch_templates()["LaunchTemplates"]:
        versions = clients.ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])
        for version in versions["LaunchTemplateVersions"]:
            data = version["LaunchTemplateData"]
            found[f"user data of {lt['LaunchTemplateName']}"] = base64.b64decode(data.get("UserData", "")).decode()
    found["instance tags"] = json.dumps(
        [i.get("Tags", []) for page in clients.ec2.get_paginator("describe_instances").paginate()
         for r in page["Reservations"] for i in r["Instances"]]
    )
    outputs = {o["OutputKey"]: o["OutputValue"] for s in stacks for o in s.get("Outputs", [])}
    for bucket in (outputs[contract.OUT_BUCKET], outputs[contract.OUT_CODE_BUCKET]):
        for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = clients.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                prefix = "s3://" if bucket == outputs[contract.OUT_BUCKET] else f"s3://{bucket}/"
                found[f"{prefix}{item['Key']}"] = body.decode("latin-1")
    # The administrator's record, and every request the broker remembers (their answers too).
    found["registry"] = json.dumps(clients.client("dynamodb").scan(TableName=outputs[contract.OUT_REGISTRY_TABLE])["Items"])
    for function in clients.awslambda.list_functions()["Functions"]:
        found[f"environment of {function['FunctionName']}"] = json.dumps(function.get("Environment", {}))
    found["IAM user tags"] = json.dumps(clients.iam.list_user_tags(UserName=USER)["Tags"])
    return found


def test_no_secret_in_output_logs_user_data_or_unexpected_objects(shell):
    printed: list[str] = []

    def run(*args, env=None, ok=True):
        result = shell.run(*args, env=env)
        printed.append(result.output)
        if ok:
            assert result.returncode == 0, result.output
        return result

    printed.append(shell.setup_region().output)
    bundle_path = shell.home / "b.toml"
    run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER, "--output", str(bundle_path))
    env = {"CONDOR_ANNEX_CREDENTIALS": str(bundle_path)}
    run("condor_annex", "--project-id", PROJECT, "--duration", "24", "--instances", "3", "--annex-name", "tok",
        "--yes", "--debug", env=env)
    run("condor_annex", "status", "--debug", env=env)
    run("condor_annex", "status", "--output", "json", env=env)
    run("condor_annex", "extend", "--annex-name", "tok", "--duration", "30", "--yes", "--debug", env=env)
    # Error paths with --debug print tracebacks of our own exceptions: still no secret.
    run("condor_annex", "--project-id", PROJECT, "--duration", "24", "--instances", "300", "--yes", "--debug",
        env=env, ok=False)
    run("condor_annex", "extend", "--annex-name", "missing", "--duration", "3", "--debug", env=env, ok=False)
    run("annex-admin", "enforce", "--dry-run")

    clients = make_clients(region="us-east-1")
    bundle = load_bundle(bundle_path)
    places = everything_in_aws(clients)
    token_key = contract.annex_prefix(PROJECT, "tok") + contract.TOKEN_OBJECT
    token = places[f"s3://{token_key}"].strip()
    assert token.count(".") == 2, "the annex should run on a minted IDTOKEN"

    secrets = {
        "AWS secret key": bundle.aws_secret_access_key,
        "pool password": POOL_PASSWORD.decode(),
        "scrambled pool password": scramble(POOL_PASSWORD).decode("latin-1"),
        "annex token": token,
        "token signature": token.rsplit(".", 1)[1],
    }
    allowed = {"annex token": {f"s3://{token_key}"}, "token signature": {f"s3://{token_key}"}}
    everything = dict(places)
    everything["what the tools printed"] = "\n".join(printed)
    for name, secret in secrets.items():
        where = {place for place, text in everything.items() if secret in text}
        assert where <= allowed.get(name, set()), f"{name} found in {sorted(where - allowed.get(name, set()))}"
    # The bundle itself is the one file holding the key, and only its owner can read it.
    assert bundle.aws_secret_access_key in bundle_path.read_text()
    assert (bundle_path.stat().st_mode & 0o077) == 0
