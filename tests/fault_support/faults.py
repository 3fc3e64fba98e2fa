"""`before-send` handlers that make AWS misbehave the way it does in real life.

A handler registered on a boto3 session's event system before its clients are created is copied
into every client made from that session. botocore emits ``before-send.<service>.<Operation>``
just before an HTTP request leaves; a handler that returns a response stands in for the server's,
and one that raises an HTTP-client error looks like a broken connection. Both are then handled by
botocore's retry logic exactly as real ones would be.

Injected faults happen before the request leaves, so the emulator never executes a failed
attempt. ``LoseResponse`` is the other case: it sends the request itself, lets the emulator execute
it, and then drops the answer, as a connection reset on the way back would.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import botocore.awsrequest
import botocore.exceptions
import botocore.httpsession

THROTTLE, SERVER_ERROR, CONNECTION_CLOSED, READ_TIMEOUT, NO_CONNECTION = (
    "throttle", "server-error", "connection-closed", "read-timeout", "no-connection",
)
ALL_FAULTS = (THROTTLE, SERVER_ERROR, CONNECTION_CLOSED, READ_TIMEOUT, NO_CONNECTION)
JSON_SERVICES = {"pricing", "ssm", "dynamodb"}  # the awsJson protocol: the code in the body's __type
REST_JSON_SERVICES = {"lambda"}  # REST-JSON: the code in the x-amzn-ErrorType header, a JSON body
LOST_ANSWER_TIMEOUT = 330  # as long as the tools wait for an Invoke (annex_common.aws.INVOKE_CONFIG)


class _Body:
    """The part of a urllib3 response botocore reads: ``stream()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_kwargs: Any):
        yield self._data


def operation_of(event_name: str) -> str:
    """'before-send.ec2.CreateFleet' -> 'ec2.CreateFleet'."""
    return event_name.split(".", 1)[1]


def error_response(service: str, url: str, status: int, code: str, message: str) -> botocore.awsrequest.AWSResponse:
    """An error answer in the service's own protocol, as AWS would send it."""
    headers = {"x-amzn-RequestId": "fault-injected", "Content-Type": "text/xml"}
    if service == "ec2":
        body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
                "<RequestID>fault-injected</RequestID></Response>")
    elif service == "s3":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-injected</RequestId></Error>"
    elif service in JSON_SERVICES:
        headers["Content-Type"] = "application/x-amz-json-1.1"
        headers["x-amzn-ErrorType"] = code
        body = json.dumps({"__type": code, "message": message})
    elif service in REST_JSON_SERVICES:  # as Lambda answers: {"Type": "User"|"Service", "message": ...}
        headers["Content-Type"] = "application/json"
        headers["x-amzn-ErrorType"] = code
        body = json.dumps({"Type": "User" if status < 500 else "Service", "message": message})
    else:  # query protocol: CloudFormation, IAM, STS
        kind = "Sender" if status < 500 else "Receiver"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                "<RequestId>fault-injected</RequestId></ErrorResponse>")
    return botocore.awsrequest.AWSResponse(url, status, headers, _Body(body.encode()))


def throttle(service: str, url: str) -> botocore.awsrequest.AWSResponse:
    if service == "ec2":
        return error_response(service, url, 503, "RequestLimitExceeded", "Request limit exceeded.")
    if service == "s3":
        return error_response(service, url, 503, "SlowDown", "Please reduce your request rate.")
    if service == "lambda":
        return error_response(service, url, 429, "TooManyRequestsException", "Rate exceeded")
    if service in JSON_SERVICES:
        return error_response(service, url, 400, "ThrottlingException", "Rate exceeded")
    return error_response(service, url, 400, "Throttling", "Rate exceeded")


def server_error(service: str, url: str, status: int) -> botocore.awsrequest.AWSResponse:
    if service == "lambda":  # Lambda names its own failures ServiceException, whatever the 5xx
        return error_response(service, url, status, "ServiceException", "The Lambda service encountered an internal error.")
    if status == 503:
        return error_response(service, url, 503, "ServiceUnavailable", "Service is unavailable.")
    return error_response(service, url, 500, "InternalError", "An internal error has occurred.")


@dataclass
class FaultInjector:
    """Fails ``rate`` of all requests, each with a fault drawn from ``faults``; seeded, so repeatable."""

    rate: float
    seed: int
    faults: tuple[str, ...] = ALL_FAULTS
    limit: int | None = None  # stop injecting after this many faults
    attempts: list[str] = field(default_factory=list)  # every request that tried to leave
    injected: list[tuple[str, str]] = field(default_factory=list)  # (operation, fault)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __call__(self, request: botocore.awsrequest.AWSPreparedRequest, event_name: str, **_: Any) -> Any:
        operation = operation_of(event_name)
        self.attempts.append(operation)
        if self._rng.random() >= self.rate or (self.limit is not None and len(self.injected) >= self.limit):
            return None
        fault = self._rng.choice(self.faults)
        self.injected.append((operation, fault))
        service = operation.split(".", 1)[0]
        if fault == THROTTLE:
            return throttle(service, request.url)
        if fault == SERVER_ERROR:
            return server_error(service, request.url, self._rng.choice((500, 503)))
        if fault == CONNECTION_CLOSED:
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)
        if fault == READ_TIMEOUT:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)
        raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)


@dataclass
class Recorder:
    """Records every request that leaves, changing nothing."""

    attempts: list[str] = field(default_factory=list)

    def __call__(self, event_name: str, **_: Any) -> None:
        self.attempts.append(operation_of(event_name))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised from inside the SDK at a chosen request."""


@dataclass
class InterruptAt:
    """Raises Ctrl-C as the ``nth`` request (1-based) is about to leave: it never reaches the server."""

    nth: int
    seen: int = 0

    def __call__(self, event_name: str, **_: Any) -> None:
        self.seen += 1
        if self.seen == self.nth:
            raise Interrupted(f"interrupted before {operation_of(event_name)}")


@dataclass
class LoseResponse:
    """The ``nth`` ``operation`` request (1-based) reaches the server and is executed; its answer
    is lost. Later requests, the SDK's retry of it among them, pass untouched.

    ``then`` is what the client sees instead: a closed connection (botocore retries the request)
    or Ctrl-C (the program stops with the work done on the server side).
    """

    operation: str
    then: str = CONNECTION_CLOSED
    nth: int = 1
    seen: int = 0
    executed: list[int] = field(default_factory=list)  # HTTP status the server gave the lost answer
    lost: list[bytes] = field(default_factory=list)  # the body of the request whose answer was lost

    def __call__(self, request: botocore.awsrequest.AWSPreparedRequest, event_name: str, **_: Any) -> None:
        if operation_of(event_name) != self.operation or self.executed:
            return None
        self.seen += 1
        if self.seen < self.nth:
            return None
        session = botocore.httpsession.URLLib3Session(timeout=LOST_ANSWER_TIMEOUT)
        try:
            answer = session.send(request)
        finally:
            session.close()
        self.executed.append(answer.status_code)
        self.lost.append(body_bytes(request))
        if self.then == CONNECTION_CLOSED:
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)
        raise Interrupted(f"interrupted after the server executed {self.operation}")



def body_bytes(request: botocore.awsrequest.AWSPreparedRequest) -> bytes:
    body = request.body or b""
    return body.encode() if isinstance(body, str) else bytes(body)


def invoke_op(request: botocore.awsrequest.AWSPreparedRequest) -> tuple[str, str]:
    """(op, request id) of a broker Invoke's payload; ("", "") for any other body."""
    try:
        payload = json.loads(body_bytes(request) or b"null")
    except ValueError:
        return "", ""
    if not isinstance(payload, dict):
        return "", ""
    params = payload.get("params") if isinstance(payload.get("params"), dict) else {}
    return str(payload.get("op", "")), str(params.get("request_id", ""))


@dataclass
class InvokeLog:
    """Records, for every Invoke that tries to leave, the broker op and request id it carries."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, request: botocore.awsrequest.AWSPreparedRequest, event_name: str, **_: Any) -> None:
        if operation_of(event_name) == "lambda.Invoke":
            self.calls.append(invoke_op(request))
