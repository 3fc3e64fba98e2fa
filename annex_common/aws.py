"""The one place that builds boto3 sessions and clients, and turns botocore errors into ours.

Nothing here writes global AWS state: callers pass a profile, region or explicit keys (a session
with keys reads no profile at all), and boto3 itself honours ``AWS_ENDPOINT_URL`` so every command
works against a local emulator.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import botocore.session

from annex_common.errors import AwsFailure, BadInput

# Standard retry mode backs off on throttling, 5xx and connection errors; attempts are bounded so
# a dead endpoint fails in seconds, not minutes.
RETRY_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 8},
    connect_timeout=5,
    read_timeout=30,
)

# Query-protocol services (EC2, IAM, STS) and JSON-protocol ones (Lambda, DynamoDB) name these differently.
UNKNOWN_KEY_CODES = {
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidSignatureException",
}
ACCESS_DENIED_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidSignatureException",
}

T = TypeVar("T")


@dataclass
class AwsClients:
    """A session plus lazily created, cached clients; pass this object, never a global."""

    session: boto3.session.Session
    config: botocore.config.Config = field(default=RETRY_CONFIG)
    _cache: dict[str, Any] = field(default_factory=dict)
    # The region was named on the command line (not taken from the AWS configuration): a command
    # the tools suggest must name it too, or it would act in another region.
    region_given: bool = False

    @property
    def region(self) -> str:
        return self.session.region_name or ""

    def client(self, service: str, region: str | None = None, config: botocore.config.Config | None = None) -> Any:
        key = f"{service}:{region or ''}:{id(config) if config else ''}"
        if key not in self._cache:
            self._cache[key] = self.session.client(
                service, region_name=region or self.session.region_name, config=config or self.config
            )
        return self._cache[key]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def cloudformation(self) -> Any:
        return self.client("cloudformation")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def awslambda(self) -> Any:
        return self.client("lambda")

    @property
    def events(self) -> Any:
        return self.client("events")


def make_clients(
    *,
    region: str | None = None,
    profile: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    config: botocore.config.Config | None = None,
) -> AwsClients:
    """Build the session for one program run.

    Explicit keys (from a scientist's bundle) win over the shell's credential chain, so the
    scientist's tool acts with her scoped keys and nothing else.
    """
    if access_key_id:
        # The bundle's keys alone: the shell's AWS_PROFILE / AWS_DEFAULT_PROFILE name the
        # administrator's (or nobody's) profile and must neither break nor change her session.
        # AWS_ENDPOINT_URL still applies.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            botocore_session=profile_free_session(),
        )
    else:
        core = botocore.session.Session(profile=profile)
        # Checked here: botocore would find out only at the first request, as a failed request.
        if core.profile is not None and core.profile not in core.available_profiles:
            shell = next((f"${name}" for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE") if os.environ.get(name) == core.profile), "")
            raise _unknown_profile(core.profile, "--profile" if profile else shell or "the AWS configuration")
        session = boto3.session.Session(botocore_session=core, region_name=region)
    if not session.region_name:
        raise BadInput(
            "no AWS region is set",
            "neither --region nor the AWS configuration names one",
            "Pass --region (for example --region us-east-1).",
        )
    return AwsClients(session=session, config=config or RETRY_CONFIG, region_given=region is not None)


def profile_free_session() -> botocore.session.Session:
    """A botocore session that reads no profile: neither AWS_PROFILE nor AWS_DEFAULT_PROFILE."""
    return botocore.session.Session(session_vars={"profile": (None, None, None, None)})


def _unknown_profile(name: str, named_by: str) -> BadInput:
    return BadInput(
        f"AWS profile {name!r} was not found",
        f"{named_by} names it, and neither ~/.aws/config nor ~/.aws/credentials has it",
        "Check the profile name in ~/.aws/config, or omit --profile." if named_by == "--profile" else
        f"Check the profile name in ~/.aws/config, or unset {named_by.lstrip('$')} (or pass --profile)."
        if named_by.startswith("$") else "Check the profile name in ~/.aws/config, or pass --profile.",
    )


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def unless_missing(call: Callable[[], T]) -> T | None:
    """IAM's answer to ``call``, or None when the entity it names does not exist (NoSuchEntity)."""
    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


@contextlib.contextmanager
def aws_errors(what: str, next_step: str = "") -> Iterator[None]:
    """Turn any botocore failure inside the block into an ``AwsFailure`` that says ``what``."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError as exc:
        # Found before any request is sent: nothing was changed.
        raise BadInput(
            what,
            "no AWS credentials were found",
            "Configure credentials (aws configure, AWS_PROFILE, or --profile).",
        ) from exc
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in UNKNOWN_KEY_CODES:
            raise AwsFailure(
                what,
                f"AWS does not accept these credentials ({code})",
                "The keys are wrong, expired or revoked: a scientist asks her pool administrator "
                "for a new bundle; an administrator checks the AWS profile.",
            ) from exc
        if code in ACCESS_DENIED_CODES:
            raise AwsFailure(
                what,
                f"AWS refused the request ({code}: {_redact(message)})",
                next_step or "Check that these credentials are allowed to do this.",
            ) from exc
        raise AwsFailure(what, f"{code}: {_redact(message)}", next_step) from exc
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectTimeoutError,
    ) as exc:
        raise AwsFailure(
            what,
            f"could not reach AWS ({exc.__class__.__name__})",
            "Check the network (and AWS_ENDPOINT_URL if set), then retry.",
        ) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise AwsFailure(what, _redact(str(exc)), next_step) from exc
    except botocore.parsers.ResponseParserError as exc:
        raise AwsFailure(
            what,
            "AWS answered with an error page instead of a response (a server-side failure)",
            next_step or "Retry in a minute; if it persists, run again with --debug.",
        ) from exc


def _redact(text: str) -> str:
    """AWS error messages can echo request parameters; never let a secret through."""
    import re

    return re.sub(r"(?i)(secret[^\s=:]*[=:]\s*)\S+", r"\1<redacted>", text)


# A function may run up to its timeout (the stack's are 300 s); the answer must be waited for.
INVOKE_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=5,
    read_timeout=330,
)


def invoke_function(clients: AwsClients, function_name: str, payload: dict[str, Any], what: str) -> dict[str, Any]:
    """Invoke a stack function and return its JSON answer; its own failure is an ``AwsFailure``.

    Callers make their payloads safe to send twice (the broker remembers request ids), because
    the SDK retries an Invoke whose answer was lost.
    """
    import json

    with aws_errors(what, "Retry in a minute; if it keeps failing, ask your pool administrator to check the function's logs."):
        response = clients.client("lambda", config=INVOKE_CONFIG).invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(payload).encode()
        )
    body = response["Payload"].read()
    try:
        answer = json.loads(body or b"null")
    except ValueError:
        answer = None
    if response.get("FunctionError") or not isinstance(answer, dict):
        message = answer.get("errorMessage", "") if isinstance(answer, dict) else body[:200].decode(errors="replace")
        raise AwsFailure(
            what,
            f"the function {function_name} failed: {_redact(str(message))[:300]}",
            "Retry in a minute (a retried request never acts twice); if it keeps failing, ask your "
            "pool administrator to check the function's logs.",
        )
    return answer
