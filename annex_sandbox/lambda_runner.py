"""Runs one Lambda invocation in a child process of the local emulator, as AWS's Python runtime would.

The emulator server (annex_sandbox/server.py) starts this file by its path with
``python -I -S -u``, so the child sees neither the repository, nor the server's site-packages,
nor any PYTHON* variable: only the standard library until ``main`` puts the function's code
directory first on ``sys.path`` and the runtime directory (boto3 and its dependencies, as the AWS
Python runtime provides them) after it. A package in the function's zip is therefore the one
imported, even when the repository or the virtual environment has one of the same name, and an
import the zip forgot fails here as it would on AWS.

This file must import nothing but the standard library at module level, and it is not imported
as ``annex_sandbox.lambda_runner`` in the child, so the zip may hold a package called
``annex_sandbox`` too.

Protocol: the event is JSON on stdin; stdout and stderr are the function's log; the outcome is
written as JSON ``{"errored": bool, "payload": <value>}`` to the file named by ``--result``.
The payload of an error has the shape AWS returns: errorMessage, errorType, requestId and, for an
exception raised by the handler, stackTrace.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class LambdaContext:
    """The context object handed to the handler: the attributes AWS's Python runtime provides."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(self.deadline_ms - int(time.time() * 1000), 0)


class InvocationError(Exception):
    """A runtime-level failure (import, handler lookup, marshalling), named as AWS names it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one Lambda invocation.")
    parser.add_argument("--code-dir", required=True, help="the unpacked zip (AWS: /var/task), also the cwd")
    parser.add_argument("--runtime-dir", required=True, help="boto3 and its dependencies")
    parser.add_argument("--handler", required=True, help="module.function, as in the function's Handler")
    parser.add_argument("--result", required=True, help="file to write the outcome to")
    parser.add_argument("--request-id", required=True)
    parser.add_argument("--function-arn", required=True)
    parser.add_argument("--deadline-ms", type=int, required=True, help="epoch milliseconds")
    return parser.parse_args(argv)


def load_handler(handler: str) -> Callable[[Any, LambdaContext], Any]:
    """Resolve ``path/to/module.function`` (slashes or dots) as AWS's Python runtime does."""
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as exc:
        raise InvocationError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {exc}") from exc
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvocationError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvocationError(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return function


def make_context(args: argparse.Namespace) -> LambdaContext:
    env = os.environ
    return LambdaContext(
        function_name=env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
        function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        invoked_function_arn=args.function_arn,
        memory_limit_in_mb=env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        aws_request_id=args.request_id,
        log_group_name=env.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
        log_stream_name=env.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        deadline_ms=args.deadline_ms,
    )


def error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    if isinstance(exc, InvocationError):
        return {"errorMessage": str(exc), "errorType": exc.error_type, "requestId": request_id, "stackTrace": []}
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # the first frame is this runner's call
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def invoke(args: argparse.Namespace, event: Any) -> tuple[bool, Any]:
    """Call the handler; (errored, payload). The payload must survive JSON, as on AWS."""
    try:
        result = load_handler(args.handler)(event, make_context(args))
    except Exception as exc:  # the handler's own failure is the invocation's result
        print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return True, error_payload(exc, args.request_id)
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        marshal = InvocationError("Runtime.MarshalError", f"Unable to marshal response: {exc}")
        return True, error_payload(marshal, args.request_id)
    return False, result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path[0:0] = [args.code_dir, args.runtime_dir]
    event = json.loads(sys.stdin.read() or "{}")
    errored, payload = invoke(args, event)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(args.result, "w", encoding="utf-8") as result_file:
        json.dump({"errored": errored, "payload": payload}, result_file)


if __name__ == "__main__":
    main()
