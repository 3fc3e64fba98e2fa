"""The broker: the region stack's function through which scientists' keys ask, and it acts.

A request is ``{"op": ..., "identity": <signed GetCallerIdentity>, "params": {...}}``; the proof
signs the broker's ARN and the request's SHA-256 (annex_cloud.identity). The broker learns the
caller from STS, acts only for the administrator's record of that exact IAM user (account, ARN,
unique id; not revoked: annex_cloud.broker.who), takes her project and caps from that record, and
acts with its own role and the stack's fixed launch parameters. Answers:
  {"ok": true, "result": {...}}                       done (or planned)
  {"ok": false, "refused": {"what", "why", "next"}}   will not: nothing was changed
  {"ok": false, "busy": "..."}                        another request of the project holds its lock
Anything else (a bug, AWS failing) raises, which Lambda reports as a function error.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Mapping

from annex_cloud.broker import requests as asks
from annex_cloud.broker.ops import OPERATIONS, Call
from annex_cloud.broker.settings import BrokerSettings
from annex_cloud.broker.who import bound_user, require_user
from annex_cloud.calls import function_clients
from annex_cloud.errors import Busy, Refused
from annex_cloud.identity import NotProven, prove_caller, request_digest, sts_endpoint, unqualified_function_arn
from annex_cloud.registry import Registry


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda entry point. A proof must name this function's own ARN, as Lambda gives it."""
    settings = BrokerSettings.from_environ(os.environ)
    clients = function_clients(settings.region, attempts=5)
    audience = unqualified_function_arn(context.invoked_function_arn)
    return handle(event, settings, clients, sts_url=sts_endpoint(clients.session, settings.region), audience=audience)


def handle(
    event: Any, settings: BrokerSettings, clients: Mapping[str, Any], *, sts_url: str, audience: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    try:
        op, call = _call(event, settings, clients, sts_url, audience, now or datetime.now(timezone.utc))
        return {"ok": True, "result": OPERATIONS[op](call)}
    except Refused as refusal:
        return {"ok": False, "refused": refusal.to_dict()}
    except Busy as busy:
        return {"ok": False, "busy": str(busy)}


def operation(event: Any) -> tuple[str, dict[str, Any], str]:
    """The request's operation, its parameters and their SHA-256; Refused when malformed."""
    op = event.get("op") if isinstance(event, dict) else None
    if not isinstance(op, str) or op not in OPERATIONS:
        raise Refused(
            "the broker does not know this request",
            f"known operations: {', '.join(sorted(OPERATIONS))}",
            "Use condor_annex.",
        )
    params = event.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise Refused("the request's parameters are not an object", "", "Use condor_annex.")
    try:
        digest = request_digest(op, params)
    except (TypeError, ValueError) as exc:
        raise Refused("the request's parameters are not plain JSON", str(exc)[:200], "Use condor_annex.") from exc
    return op, params, digest


def _call(
    event: Any, settings: BrokerSettings, clients: Mapping[str, Any], sts_url: str, audience: str, now: datetime
) -> tuple[str, Call]:
    op, params, digest = operation(event)
    try:
        caller = prove_caller(event.get("identity"), sts_url=sts_url, audience=audience, request=digest, now=now)
    except NotProven as exc:
        raise Refused(
            "the broker could not tell who is asking", str(exc),
            "Use condor_annex with your credentials bundle; ask your pool administrator for a new one if it was revoked.",
        ) from exc
    registry = Registry(clients["dynamodb"], settings.table)
    user = bound_user(caller, registry.user(require_user(caller)))
    try:
        caps = registry.caps(user.project_id)
    except ValueError as exc:
        raise Refused(f"project {user.project_id}'s caps are unreadable", str(exc), "Ask your pool administrator to issue your credentials again.") from exc
    if caps is None:
        raise Refused(f"project {user.project_id} has no caps", "the administrator's record is incomplete", "Ask your pool administrator to issue your credentials again.")
    if params.get("project_id") not in (None, user.project_id):
        raise Refused(
            f"these credentials do not cover project {str(params['project_id'])[:64]!r}",
            f"user {user.user} belongs to project {user.project_id}",
            "Use the bundle issued for that project, or the right --project-id.",
        )
    return op, Call(
        settings=settings, user=user.user, project_id=user.project_id, caps=caps,
        ec2=clients["ec2"], s3=clients["s3"], registry=registry, now=now.replace(microsecond=0), params=params,
        fingerprint=asks.fingerprint(op, params), ssm=clients["ssm"],
    )
