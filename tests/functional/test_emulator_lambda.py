"""The emulator runs Lambda functions (annex_sandbox/server.py), over HTTP through boto3.

Invoke runs the zip's own code in a child process, as the function's role, with the function's
environment, its timeout, and errors in AWS's shape; IAM enforcement judges Invoke as
``lambda:InvokeFunction`` on the function's ARN.
"""

from __future__ import annotations

import base64
import io
import json
import textwrap
import time
import zipfile
from typing import Any

import boto3
import botocore.exceptions
import pytest

from tests import emulator as emu

TRUST_LAMBDA = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}

PROBE = """
    import os

    import boto3


    def handler(event, context):
        print("probe handling", context.aws_request_id)
        return {
            "event": event,
            "env": dict(os.environ),
            "arn": boto3.client("sts").get_caller_identity()["Arn"],
            "function_name": context.function_name,
            "invoked_function_arn": context.invoked_function_arn,
            "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
        }
"""

SHADOW = """
    import templates.contract


    def handler(event, context):
        try:
            import annex_common  # in the repository, not in the zip
            repository_visible = True
        except ImportError:
            repository_visible = False
        return {
            "marker": templates.contract.MARKER,
            "file": templates.contract.__file__,
            "repository_visible": repository_visible,
        }
"""

FAILING = """
    def handler(event, context):
        raise ValueError("the probe failed on purpose")
"""

SLEEPING = """
    import time


    def handler(event, context):
        time.sleep(60)
"""

ROLE_SCOPED = """
    import boto3
    import botocore.exceptions


    def _outcome(call):
        try:
            call()
            return "allowed"
        except botocore.exceptions.ClientError as exc:
            return exc.response["Error"]["Code"]


    def handler(event, context):
        return {
            "describe_instances": _outcome(lambda: boto3.client("ec2").describe_instances()),
            "list_buckets": _outcome(lambda: boto3.client("s3").list_buckets()),
        }
"""

BACKGROUND = """
    import time

    import boto3


    def handler(event, context):
        time.sleep(1)
        boto3.client("s3").put_object(Bucket=event["bucket"], Key="done", Body=b"ran")
"""

CALLER = """
    import json

    import boto3


    def handler(event, context):
        answer = boto3.client("lambda").invoke(FunctionName=event["callee"], Payload=json.dumps({"via": "caller"}))
        return json.loads(answer["Payload"].read())["event"]
"""


def zipped(files: dict[str, str]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, source in files.items():
            bundle.writestr(name, textwrap.dedent(source))
    return archive.getvalue()


def package(source: str) -> bytes:
    """A zip holding a package that exists nowhere but in the zip."""
    return zipped({"probe_pkg/__init__.py": "", "probe_pkg/handler.py": source})


def create_role(clients: Any, name: str, allowed_actions: list[str] | None = None) -> str:
    arn = clients.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_LAMBDA))["Role"]["Arn"]
    if allowed_actions:
        clients.iam.put_role_policy(RoleName=name, PolicyName="scoped", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allowed_actions, "Resource": "*"}]}
        ))
    return arn


def create_function(
    clients: Any, name: str, code: bytes, *, role: str | None = None, timeout: int = 3,
    env: dict[str, str] | None = None, handler: str = "probe_pkg.handler.handler",
) -> str:
    return clients.awslambda.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role or create_role(clients, f"{name}-role"),
        Handler=handler,
        Code={"ZipFile": code},
        Timeout=timeout,
        Environment={"Variables": env or {}},
    )["FunctionArn"]


def invoke(client: Any, name: str, event: Any = None, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}), **kwargs)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def user_lambda_client(clients: Any, aws: emu.Emulator, user: str, policy: dict[str, Any] | None) -> Any:
    clients.iam.create_user(UserName=user)
    if policy:
        clients.iam.put_user_policy(UserName=user, PolicyName="invoke", PolicyDocument=json.dumps(policy))
    key = clients.iam.create_access_key(UserName=user)["AccessKey"]
    session = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=emu.REGION
    )
    return session.client("lambda", endpoint_url=aws.url)


def test_invoke_runs_the_zip_as_the_function_role_with_its_environment(aws, clients):
    role = create_role(clients, "probe-role")
    arn = create_function(clients, "probe", package(PROBE), role=role, env={"PROBE_SETTING": "on"})

    response, payload = invoke(clients.awslambda, "probe", {"hello": ["world", 1]})

    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert payload["event"] == {"hello": ["world", 1]}
    assert ":assumed-role/probe-role/probe" in payload["arn"]
    assert payload["function_name"] == "probe" and payload["invoked_function_arn"] == arn
    assert 0 < payload["remaining_ms"] <= 3000
    env = payload["env"]
    assert env["PROBE_SETTING"] == "on"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "probe" and env["AWS_REGION"] == emu.REGION
    assert env["AWS_ENDPOINT_URL"] == aws.url
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and env["AWS_SESSION_TOKEN"]
    assert env["AWS_ACCESS_KEY_ID"] != emu.FAKE_KEY_ID and "HOME" not in env and "AWS_RETRY_MODE" not in env


def test_the_log_tail_frames_the_function_output(clients):
    create_function(clients, "probe", package(PROBE))

    response, payload = invoke(clients.awslambda, "probe", LogType="Tail")

    log = base64.b64decode(response["LogResult"]).decode()
    assert f"probe handling {payload['request_id']}" in log
    assert log.startswith(f"START RequestId: {payload['request_id']}") and "\nREPORT RequestId: " in log


def test_the_zip_code_is_imported_not_the_repository_copy(clients):
    code = zipped({
        "templates/__init__.py": "",
        "templates/contract.py": 'MARKER = "from the zip"\n',
        "probe_pkg/__init__.py": "",
        "probe_pkg/handler.py": SHADOW,
    })
    create_function(clients, "shadow", code)

    _, payload = invoke(clients.awslambda, "shadow")

    assert payload["marker"] == "from the zip"
    assert "/code/" in payload["file"]
    assert payload["repository_visible"] is False  # only the zip, the standard library and boto3


def test_a_function_calls_back_into_the_emulator_while_its_invoke_waits(clients):
    """Two invocations in flight and their calls to STS: the threaded server serves them all."""
    create_function(clients, "callee", package(PROBE))
    create_function(clients, "caller", package(CALLER), timeout=20)

    response, payload = invoke(clients.awslambda, "caller", {"callee": "callee"})

    assert "FunctionError" not in response, payload
    assert payload == {"via": "caller"}


def test_an_exception_in_the_handler_is_an_unhandled_function_error(clients):
    create_function(clients, "failing", package(FAILING))

    response, payload = invoke(clients.awslambda, "failing")

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "the probe failed on purpose"
    assert any("raise ValueError" in frame for frame in payload["stackTrace"])


def test_a_handler_that_cannot_be_imported_is_a_runtime_error(clients):
    create_function(clients, "missing", package(FAILING), handler="no_such_module.handler")

    response, payload = invoke(clients.awslambda, "missing")

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_module" in payload["errorMessage"]


def test_a_handler_past_its_timeout_is_stopped(clients):
    create_function(clients, "sleeper", package(SLEEPING), timeout=2)

    began = time.monotonic()
    response, payload = invoke(clients.awslambda, "sleeper")

    assert time.monotonic() - began < 15
    assert response["FunctionError"] == "Unhandled"
    assert "Task timed out after 2.00 seconds" in payload["errorMessage"]


def test_an_event_invocation_answers_at_once_and_runs_in_the_background(clients):
    clients.s3.create_bucket(Bucket="background-check")
    create_function(clients, "background", package(BACKGROUND), timeout=10)

    response, payload = invoke(clients.awslambda, "background", {"bucket": "background-check"}, InvocationType="Event")

    assert response["StatusCode"] == 202 and payload is None
    deadline = time.monotonic() + 30
    while not clients.s3.list_objects_v2(Bucket="background-check").get("Contents"):
        assert time.monotonic() < deadline, "the background invocation never wrote its object"
        time.sleep(0.2)


def test_a_dry_run_runs_nothing(clients):
    clients.s3.create_bucket(Bucket="background-check")
    create_function(clients, "background", package(BACKGROUND))

    response = clients.awslambda.invoke(
        FunctionName="background", Payload=json.dumps({"bucket": "background-check"}), InvocationType="DryRun"
    )

    assert response["StatusCode"] == 204
    time.sleep(1.5)
    assert not clients.s3.list_objects_v2(Bucket="background-check").get("Contents")


def test_invoke_needs_lambda_invoke_function_on_the_function(aws, clients):
    arn = create_function(clients, "probe", package(PROBE))
    allowed = user_lambda_client(clients, aws, "invoker", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn}],
    })
    other_function = user_lambda_client(clients, aws, "elsewhere", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn + "-other"}],
    })
    stranger = user_lambda_client(clients, aws, "stranger", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": arn}],
    })
    aws.enforce_iam(True)

    for named in ("probe", arn):  # (moto cannot find a function by partial ARN at all)
        response, payload = invoke(allowed, named, {"from": "invoker"})
        assert response["StatusCode"] == 200 and payload["event"] == {"from": "invoker"}
    for refused in (other_function, stranger):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            invoke(refused, "probe")
        # moto answers this JSON API's refusal in XML, so botocore reports the HTTP status as the code.
        error = caught.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "not authorized to perform: lambda:InvokeFunction" in error["Error"]["Message"]


def test_the_function_is_judged_by_its_role_policies(aws, clients):
    role = create_role(clients, "describe-only", ["ec2:DescribeInstances"])
    arn = create_function(clients, "scoped", package(ROLE_SCOPED), role=role)
    invoker = user_lambda_client(clients, aws, "invoker", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn}],
    })
    aws.enforce_iam(True)

    response, payload = invoke(invoker, "scoped")

    assert "FunctionError" not in response, payload
    assert payload["describe_instances"] == "allowed"
    assert payload["list_buckets"] == "AccessDenied"
