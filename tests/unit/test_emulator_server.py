"""The emulator server's pure parts: its own URL, the ARN an Invoke names, a function's environment."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from annex_sandbox.lambda_host import Credentials, FunctionSpec, LambdaHost
from annex_sandbox.patches import fill_in_order, invoked_function_arn
from annex_sandbox.server import own_endpoint

ARN = "arn:aws:lambda:us-east-1:123456789012:function:probe"


@pytest.mark.parametrize("argv, url", [
    (["-H", "127.0.0.1", "-p", "5123"], "http://127.0.0.1:5123"),
    (["--host", "0.0.0.0", "--port", "6000", "--reload"], "http://127.0.0.1:6000"),
    (["-p", "7000", "-s"], "https://127.0.0.1:7000"),
])
def test_the_server_knows_its_own_url_from_moto_arguments(argv, url):
    assert own_endpoint(argv) == url


@pytest.mark.parametrize("named, qualifier, arn", [
    ("probe", None, ARN),
    ("probe", "live", ARN + ":live"),
    ("probe:3", None, ARN + ":3"),
    ("123456789012:function:probe", None, ARN),
    ("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aprobe", None, ARN),
])
def test_invoke_is_judged_against_the_function_arn_it_names(named, qualifier, arn):
    request = SimpleNamespace(
        path=f"/2015-03-31/functions/{named}/invocations",
        querystring={"Qualifier": [qualifier]} if qualifier else {},
        current_account="123456789012",
        region="us-east-1",
    )
    assert invoked_function_arn(request) == arn


def test_the_function_environment_holds_its_variables_and_lambda_s_own_and_nothing_else(tmp_path: Path):
    spec = FunctionSpec(
        name="probe", arn=ARN, account_id="123456789012", region="eu-west-1", partition="aws",
        handler="pkg.mod.handler", runtime="python3.12", timeout=2.0, memory_size="256", version="$LATEST",
        role_arn="arn:aws:iam::123456789012:role/probe", environment={"SETTING": "x", "AWS_REGION": "elsewhere"},
        code=b"", log_group="/aws/lambda/probe",
    )
    host = LambdaHost("http://127.0.0.1:5123", tmp_path, lambda _: Credentials("ASIAROLE", "secret", "token"))

    env = host.environment(spec)

    assert env["SETTING"] == "x"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"  # Lambda's own values win
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"]) == (
        "ASIAROLE", "secret", "token")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5123"
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "2" and env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert not Path(env["AWS_CONFIG_FILE"]).exists() and not Path(env["AWS_SHARED_CREDENTIALS_FILE"]).exists()
    assert set(env) - {"SETTING", "PATH", "_HANDLER"} <= {name for name in env if name.startswith("AWS_")}
    assert "AWS_RETRY_MODE" not in env  # set in this process (the suite's), not passed on


@pytest.mark.parametrize(
    ("free", "wanted", "counts"),
    [
        ([4091, 4091], 1000, [1000, 0]),  # the first pool has room: all of it there, as moto did
        ([500, 4091, 4091], 1000, [500, 500, 0]),  # a nearly full subnet spills over to the next
        ([0, 0], 1000, [0, 0]),  # no room anywhere: nothing, not an HTTP 500
        ([300, 200], 1000, [300, 200]),  # partial: what fits
    ],
)
def test_a_fleet_fills_its_subnets_in_turn(free: list[int], wanted: int, counts: list[int]):
    assert fill_in_order(free, wanted) == counts
