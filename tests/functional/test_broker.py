"""The broker through a real Invoke, with the emulator's IAM enforcement on: the scientist's keys
only ask, the broker proves who asks (the administrator's record of one IAM user: account, ARN,
unique id, not revoked), each proof is bound to one request, the broker reads caps from the
administrator's record, and never acts twice for one request."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from annex_cloud.caps import Caps
from annex_cloud.identity import request_digest, sign_identity_proof, sts_endpoint
from annex_common.aws import AwsClients, make_clients
from annex_common.bundle import load_bundle
from annex_common.errors import BadInput
from annex_user.context import open_context
from annex_user.launch import LaunchRequest, execute_launch, plan_launch
from templates import contract
from tests.flows import PROJECT, USER, deploy_stack, issue_bundle, write_pool

BROKER = contract.broker_function_name(contract.DEFAULT_STACK_NAME)


@pytest.fixture
def world(aws, clients, tmp_path):
    """A stack, a scientist with caps (32 instances), her pool; IAM enforcement on for the test."""
    deploy_stack(clients)
    issue_bundle(clients, tmp_path / "b.toml", caps=Caps(32, 168, 2000.0))
    pool = write_pool(tmp_path / "pool")
    aws.enforce_iam(True)
    return tmp_path / "b.toml", pool


def live(project: str = PROJECT) -> list[str]:
    ec2 = make_clients(region="us-east-1").ec2  # the suite's keys: call with enforcement off
    return [
        i["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{contract.TAG_PROJECT}", "Values": [project]},
                     {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for r in page["Reservations"] for i in r["Instances"]
    ]


def keys_of(bundle_path: Path) -> AwsClients:
    bundle = load_bundle(bundle_path)
    return make_clients(region="us-east-1", access_key_id=bundle.aws_access_key_id,
                        secret_access_key=bundle.aws_secret_access_key)


def invoke_as(invoker: AwsClients, payload: dict) -> dict:
    """The broker's answer to ``payload``, invoked with ``invoker``'s keys: never a function error."""
    answer = invoker.awslambda.invoke(FunctionName=BROKER, Payload=json.dumps(payload).encode())
    assert "FunctionError" not in answer, answer["Payload"].read()
    return json.loads(answer["Payload"].read())


def raw_invoke(bundle_path: Path, payload: dict) -> dict:
    return invoke_as(keys_of(bundle_path), payload)


def signed_by(signer: AwsClients, op: str, params: dict, *, audience: str) -> dict:
    """A whole request: ``op`` and ``params`` with a proof ``signer``'s credentials made for them."""
    credentials = signer.session.get_credentials().get_frozen_credentials()
    proof = sign_identity_proof(credentials, region="us-east-1", sts_url=sts_endpoint(signer.session, "us-east-1"),
                                audience=audience, request=request_digest(op, params))
    return {"op": op, "identity": proof, "params": params}


def proof_for(bundle_path: Path, op: str, params: dict, audience: str | None = None) -> dict:
    return signed_by(keys_of(bundle_path), op, params, audience=audience or load_bundle(bundle_path).broker_arn)["identity"]


def request(name: str, pool, *, count: int, hours: float = 24, spot: bool = False) -> LaunchRequest:
    return LaunchRequest(PROJECT, datetime.now(timezone.utc) + timedelta(hours=hours), count, annex_name=name,
                         spot=spot)


# --- who asks -----------------------------------------------------------------------------------


def test_status_through_the_broker_names_the_proven_user(world):
    bundle_path, pool = world
    ctx = open_context(bundle_path)
    plan = plan_launch(ctx, request("who", pool, count=2))
    assert plan.owner == USER and plan.project_id == PROJECT


@pytest.mark.parametrize("case", ["no-proof", "other-broker", "broker-name", "tampered-body", "unsigned-audience"])
def test_a_request_whose_identity_aws_does_not_prove_is_refused(world, case):
    bundle_path, _pool = world
    audience = {"other-broker": load_bundle(bundle_path).broker_arn.replace(BROKER, "SomeOtherStack-broker"),
                "broker-name": BROKER}.get(case)
    proof = proof_for(bundle_path, "status", {}, audience)
    if case == "no-proof":
        proof = None
    elif case == "tampered-body":
        proof["body"] = "Action=GetCallerIdentity&Version=2011-06-15&X=1"
    elif case == "unsigned-audience":
        auth = proof["headers"]["Authorization"]
        proof["headers"]["Authorization"] = auth.replace(";x-annex-broker", "")
    answer = raw_invoke(bundle_path, {"op": "status", "identity": proof, "params": {}})
    assert answer["ok"] is False
    assert answer["refused"]["what"] == "the broker could not tell who is asking"


def test_a_bundle_that_names_no_broker_arn_learns_the_account_from_sts(world):
    """A bundle issued before bundles named the broker's ARN: the client asks STS for its account."""
    bundle_path, pool = world
    lines = [line for line in bundle_path.read_text().splitlines() if not line.startswith("broker_arn")]
    bundle_path.write_text("\n".join(lines) + "\n")
    ctx = open_context(bundle_path)
    assert ctx.bundle.broker_arn == ""
    assert plan_launch(ctx, request("older", pool, count=1)).owner == USER
    assert ctx.broker.function_arn.endswith(f":function:{BROKER}")


def test_a_proof_signed_with_a_wrong_secret_is_refused_by_sts(world):
    bundle_path, _pool = world
    bundle = load_bundle(bundle_path)
    forged = make_clients(region="us-east-1", access_key_id=bundle.aws_access_key_id, secret_access_key="not-her-secret")
    answer = raw_invoke(bundle_path, signed_by(forged, "status", {}, audience=bundle.broker_arn))
    assert answer["ok"] is False and "STS refused" in answer["refused"]["why"]


def test_asking_for_another_project_is_refused(world):
    bundle_path, _pool = world
    params = {"project_id": "OtherLab"}
    answer = raw_invoke(bundle_path, {"op": "status", "identity": proof_for(bundle_path, "status", params), "params": params})
    assert answer["ok"] is False and "do not cover project" in answer["refused"]["what"]


# --- caps are the administrator's ----------------------------------------------------------------


def test_an_edited_bundle_changes_no_cap(world, aws):
    bundle_path, pool = world
    text = bundle_path.read_text().replace("max_instances = 32", "max_instances = 100")
    assert "max_instances = 100" in text
    bundle_path.write_text(text)
    ctx = open_context(bundle_path)
    assert ctx.bundle.caps.max_instances == 100  # shown, never trusted
    with pytest.raises(BadInput) as caught:
        plan_launch(ctx, request("big", pool, count=40))
    assert "instance cap of 32" in caught.value.what
    aws.enforce_iam(False)
    assert live() == []


def test_three_concurrent_launches_never_break_the_instance_cap(world, aws):
    bundle_path, pool = world
    execute_launch(open_context(bundle_path), plan_launch(open_context(bundle_path), request("first", pool, count=2)))
    outcomes: dict[str, str] = {}

    def launch(name: str) -> None:
        ctx = open_context(bundle_path)
        try:
            plan = plan_launch(ctx, request(name, pool, count=12))
            outcomes[name] = f"launched {len(execute_launch(ctx, plan).instance_ids)}"
        except BadInput as exc:
            outcomes[name] = f"refused: {exc.what}"

    # Every plan is made first (each sees 2 live: all three fit alone), then the launches race.
    threads = [threading.Thread(target=launch, args=(f"race-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    aws.enforce_iam(False)
    assert len(live()) <= 32, outcomes
    launched = [o for o in outcomes.values() if o == "launched 12"]
    refused = [o for o in outcomes.values() if o.startswith("refused")]
    assert len(launched) == 2 and len(refused) == 1, outcomes
    assert "instance cap of 32" in refused[0]
    assert len(live()) == 26


# --- one request, one launch ---------------------------------------------------------------------


def test_a_retried_launch_request_returns_the_first_answer_and_launches_nothing_more(world, aws):
    bundle_path, pool = world
    ctx = open_context(bundle_path)
    plan = plan_launch(ctx, request("once", pool, count=3))
    params = {**plan.params, "request_id": uuid.uuid4().hex}
    first = ctx.broker.ask("launch", params, "first")
    second = ctx.broker.ask("launch", params, "retry")
    assert len(first["instance_ids"]) == 3
    assert second["instance_ids"] == first["instance_ids"] and second.get("replayed") is True
    aws.enforce_iam(False)
    assert sorted(live()) == sorted(first["instance_ids"])


# --- prices: a bound, never a guess ----------------------------------------------------------------


def test_spot_is_capped_at_the_on_demand_price_so_what_is_admitted_the_enforcer_keeps(world, aws, clients):
    bundle_path, pool = world
    ctx = open_context(bundle_path)
    # Cap 2000: 24 h of 32 instances at ≤ $0.1008 = $77; admitted at the on-demand price as a bound.
    plan = plan_launch(ctx, request("spot", pool, count=20, spot=True))
    assert plan.spot is True and plan.most_cost == pytest.approx(20 * 0.1008 * plan.lease_hours)
    result = execute_launch(ctx, plan)
    assert len(result.instance_ids) == 20
    aws.enforce_iam(False)
    from annex_admin.enforce import run_enforcer

    stack = clients.cloudformation.describe_stacks(StackName=contract.DEFAULT_STACK_NAME)["Stacks"][0]
    enforcer = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == contract.OUT_ENFORCER_FUNCTION)
    report = run_enforcer(clients, enforcer, dry_run=True)
    assert report["terminated"] == [] and report["errors"] == []
    assert report["kept"] == 20


def test_with_no_price_for_its_types_a_launch_is_refused(aws, tmp_path):
    """Setup refuses to offer a type no source prices; a stack whose stored prices lack its types
    anyway (stored by an earlier version) launches nothing of them."""
    from annex_admin.stack import read_stack
    from annex_cloud.cost import PriceBook
    from annex_cloud.registry import Registry

    admin = make_clients(region="us-east-1")
    deploy_stack(admin)
    registry = Registry(admin.client("dynamodb"), read_stack(admin, contract.DEFAULT_STACK_NAME).output(contract.OUT_REGISTRY_TABLE))
    registry.put_prices(PriceBook({"c5.large": 0.085}, "an earlier version's table", "2026-12-01T09:00:00Z"))
    issue_bundle(admin, tmp_path / "b.toml")
    ctx = open_context(tmp_path / "b.toml")
    with pytest.raises(BadInput) as caught:
        plan_launch(ctx, request("unpriced", write_pool(tmp_path / "pool"), count=1))
    assert "no price is known" in caught.value.what and "annex-admin setup" in caught.value.next_step


def test_a_region_missing_from_the_shipped_table_gets_fetched_prices(aws, tmp_path):
    from tests.emulator import PRICED_REGION

    admin = make_clients(region=PRICED_REGION)
    deployed = deploy_stack(admin)
    assert deployed.prices.source == "AWS Price List API"
    issue_bundle(admin, tmp_path / "b.toml")
    ctx = open_context(tmp_path / "b.toml")
    plan = plan_launch(ctx, request("sydney", write_pool(tmp_path / "pool"), count=2))
    assert plan.price_source == "AWS Price List API"
    assert set(plan.prices) == set(contract.DEFAULT_INSTANCE_TYPES)


# --- what reaches a node: typed values, each checked ------------------------------------------------

# The node-trust review's attempts, each in a field that becomes a node's configuration value. The
# ten thousand characters are a list of collectors every one of which is well formed.
HOSTILE_VALUES = {
    "newline": ("collector_host", "cm.pool.example:9618\nSTART = True"),
    "trailing-pipe": ("trust_domain", "touch /tmp/owned |"),
    "backslash-continuation": ("job_owner", "alice\\"),
    "include-command": ("annex_name", "include command : /bin/sh -c id"),
    "startd-cron": ("collector_host", "cm\nSTARTD_CRON_JOBLIST = owned\nSTARTD_CRON_OWNED_EXECUTABLE = /bin/sh"),
    "user-job-wrapper": ("job_owner", "alice\nUSER_JOB_WRAPPER = /tmp/owned"),
    "ten-kilobytes": ("collector_host", ", ".join(["cm.pool.example:9618"] * 450)),
}


def test_hostile_values_are_refused_by_the_broker_and_named(world, aws, clients):
    """Through a real Invoke, one launch request per value: each refused with the value named,
    nothing launched, nothing written for a node to read."""
    from annex_cloud.node.config import shown

    bundle_path, pool = world
    for case, (field, value) in HOSTILE_VALUES.items():
        params = {
            "annex_name": "hostile", "count": 1, "idle_minutes": 15, "spot": False, "request_id": uuid.uuid4().hex,
            "expiry": (datetime.now(timezone.utc) + timedelta(hours=5)).strftime(contract.EXPIRY_FORMAT),
            "pool": {"collector_host": pool.collector_host, "trust_domain": pool.trust_domain, "job_owner": "alice",
                     "security": "password", "material": base64.b64encode(b"scrambled").decode()},
        }
        if field == "annex_name":
            params[field] = value
        else:
            params["pool"][field] = value
        answer = raw_invoke(bundle_path, {"op": "launch", "identity": proof_for(bundle_path, "launch", params), "params": params})
        assert answer["ok"] is False, case
        assert shown(value)[:40] in answer["refused"]["what"], (case, answer["refused"])
    aws.enforce_iam(False)
    assert live() == []
    stack = clients.cloudformation.describe_stacks(StackName=contract.DEFAULT_STACK_NAME)["Stacks"][0]
    bucket = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == contract.OUT_BUCKET)
    assert clients.s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_a_lease_end_out_of_reach_is_refused_never_a_function_error(world, aws):
    """The last second a tag can name, and its token's end an hour later (no date): refused in words."""
    bundle_path, _pool = world
    params = {"annex_name": "far", "count": 1, "idle_minutes": 15, "spot": False, "expiry": "9999-12-31T23:59:59Z",
              "job_owner": "alice"}
    for op in ("plan_launch", "launch"):
        asked = {**params, **({"request_id": uuid.uuid4().hex} if op == "launch" else {})}
        answer = raw_invoke(bundle_path, {"op": op, "identity": proof_for(bundle_path, op, asked), "params": asked})
        assert answer["ok"] is False, answer
        assert "more than ten years from now" in answer["refused"]["what"], answer
    aws.enforce_iam(False)
    assert live() == []


# --- the annex's token: its id is recorded and shown, never the token ---------------------------------


def test_the_broker_mints_the_annexs_token_and_mints_it_again_to_outlive_each_new_lease_end_by_an_hour(world, aws, clients):
    """The scientist reads no pool secret: the broker signs with the recorded key (ANNEX), names the
    token's id in its answer and in status, and on extension stores a new token with the same id
    that expires exactly one hour after the new lease end."""
    import jwt

    from annex_cloud.pool_tokens import signing_key
    from annex_cloud.registry import Registry
    from annex_user.manage import annex_status, extend_lease, extend_params, terminate_annex
    from tests.flows import ANNEX_KEY_FILE

    def stored_token() -> dict:
        token = clients.s3.get_object(Bucket=outputs[contract.OUT_BUCKET], Key=key)["Body"].read().decode().strip()
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "ANNEX"}
        return jwt.decode(token, signing_key(ANNEX_KEY_FILE, "ANNEX"), algorithms=["HS256"],
                          options={"verify_exp": False, "verify_iat": False})

    bundle_path, pool = world
    ctx = open_context(bundle_path)
    plan = plan_launch(ctx, request("revocable", pool, count=2, hours=5))
    assert plan.token_id is None and "the broker signs with the key ANNEX" in plan.security_description
    assert plan.collector_host == "cm.pool.example:9618"
    result = execute_launch(ctx, plan)
    token_id = result.answer["token_id"]
    assert len(token_id) == 32 and result.answer["token_minted_by"] == "broker"
    rows = annex_status(ctx, annex_name="revocable", condor_config=None, instances=True).rows
    assert {row.data["token_id"] for row in rows} == {token_id}

    aws.enforce_iam(False)
    stack = clients.cloudformation.describe_stacks(StackName=contract.DEFAULT_STACK_NAME)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    key = contract.annex_prefix(PROJECT, "revocable") + contract.TOKEN_OBJECT
    first = stored_token()
    assert first["jti"] == token_id and first["sub"] == "condor_pool@pool.example" and first["iss"] == "pool.example"
    assert first["exp"] == int(plan.expiry.timestamp()) + 3600
    aws.enforce_iam(True)

    later = ctx.now + timedelta(hours=10)
    extended = extend_lease(ctx, extend_params(ctx, "revocable", later, False))
    assert extended.token_reminted and extended.answer["token_id"] == token_id
    aws.enforce_iam(False)
    claims = stored_token()
    assert claims["jti"] == token_id  # the new token, the annex's id
    assert claims["exp"] == int(later.timestamp()) + 3600  # outlives the new lease end by exactly 1 h
    assert claims["scope"] == "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ"
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    record = registry.annex(PROJECT, "revocable")
    assert record.token_id == token_id and record.expiry == later.strftime(contract.EXPIRY_FORMAT)
    assert record.minted_by == "broker"
    aws.enforce_iam(True)
    terminate_annex(ctx, "revocable")
    aws.enforce_iam(False)
    # Remembered as ended (so terminate knows the name), never as live.
    assert registry.annex(PROJECT, "revocable").ended


def test_a_token_that_is_not_the_annexs_is_refused_by_the_broker(world, aws):
    """The request's token id must be the token's own, and the token no more than an annex's."""
    from annex_user.tokens import mint_idtoken

    bundle_path, pool = world
    expiry = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=5)
    key = pool.password_file.read_bytes()
    cases = {
        "id": (dict(token_id="f" * 32), "0" * 32, "is not the annex's"),
        "life": (dict(token_id="0" * 32, expires_at=expiry + timedelta(hours=3)), "0" * 32, "after the lease end"),
        "scopes": (dict(token_id="0" * 32, scopes=("condor:/ADMINISTRATOR",)), "0" * 32, "are more than"),
    }
    for case, (minted, named, why) in cases.items():
        claims = dict(trust_domain=pool.trust_domain, subject="condor_pool@pool.example", issued_at=expiry - timedelta(hours=6),
                      expires_at=expiry + timedelta(hours=1), scopes=("condor:/ADVERTISE_STARTD",))
        claims.update(minted)
        token = mint_idtoken(key, **claims)
        params = {
            "annex_name": f"forged-{case}", "count": 1, "idle_minutes": 15, "spot": False, "request_id": uuid.uuid4().hex,
            "expiry": expiry.strftime(contract.EXPIRY_FORMAT),
            "pool": {"collector_host": pool.collector_host, "trust_domain": pool.trust_domain, "job_owner": "alice",
                     "security": "idtoken", "material": base64.b64encode(token.encode()).decode(), "token_id": named},
        }
        answer = raw_invoke(bundle_path, {"op": "launch", "identity": proof_for(bundle_path, "launch", params), "params": params})
        assert answer["ok"] is False and why in answer["refused"]["why"], (case, answer)
    aws.enforce_iam(False)
    assert live() == []
