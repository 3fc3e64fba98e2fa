"""The broker: the region stack's function through which scientists' keys ask, and it acts.

A request is ``{"op": ..., "identity": <signed GetCallerIdentity>, "params": {...}}``. The broker
learns the caller from STS, her project and caps from the administrator's record, and acts with
its own role and the stack's fixed launch parameters. Answers:
  {"ok": true, "result": {...}}                       done (or planned)
  {"ok": false, "refused": {"what", "why", "next"}}   will not: nothing was changed
  {"ok": false, "busy": "..."}                        another request of the project holds its lock
Anything else (a bug, AWS failing) raises, which Lambda reports as a function error.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Mapping

from annex_cloud.broker.ops import OPERATIONS, Call
from annex_cloud.broker.settings import BrokerSettings
from annex_cloud.calls import function_clients
from annex_cloud.errors import Busy, Refused
from annex_cloud.identity import NotProven, prove_caller, sts_endpoint
from annex_cloud.registry import Registry


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    settings = BrokerSettings.from_environ(os.environ)
    clients = function_clients(settings.region, attempts=5)
    return handle(event, settings, clients, sts_url=sts_endpoint(clients.session, settings.region))


def handle(
    event: Any, settings: BrokerSettings, clients: Mapping[str, Any], *, sts_url: str, now: datetime | None = None
) -> dict[str, Any]:
    try:
        call = _call(event, settings, clients, sts_url, now or datetime.now(timezone.utc))
        return {"ok": True, "result": OPERATIONS[event["op"]](call)}
    except Refused as refusal:
        return {"ok": False, "refused": refusal.to_dict()}
    except Busy as busy:
        return {"ok": False, "busy": str(busy)}


def _call(event: Any, settings: BrokerSettings, clients: Mapping[str, Any], sts_url: str, now: datetime) -> Call:
    if not isinstance(event, dict) or event.get("op") not in OPERATIONS:
        raise Refused(
            "the broker does not know this request",
            f"known operations: {', '.join(sorted(OPERATIONS))}",
            "Use condor_annex.",
        )
    params = event.get("params") or {}
    if not isinstance(params, dict):
        raise Refused("the request's parameters are not an object", "", "Use condor_annex.")
    try:
        caller = prove_caller(event.get("identity"), sts_url=sts_url, audience=settings.function_name)
    except NotProven as exc:
        raise Refused("the broker could not tell who is asking", str(exc), "Check your credentials bundle; ask your pool administrator for a new one if it was revoked.") from exc
    registry = Registry(clients["dynamodb"], settings.table)
    user = registry.user(caller.user_name)
    if user is None:
        raise Refused(
            f"IAM user {caller.user_name} has no condor-annex project",
            "the administrator's record names no project for this user",
            "Ask your pool administrator to run `annex-admin issue-credentials` for you.",
        )
    try:
        caps = registry.caps(user.project_id)
    except ValueError as exc:
        raise Refused(f"project {user.project_id}'s caps are unreadable", str(exc), "Ask your pool administrator to issue your credentials again.") from exc
    if caps is None:
        raise Refused(f"project {user.project_id} has no caps", "the administrator's record is incomplete", "Ask your pool administrator to issue your credentials again.")
    if params.get("project_id") not in (None, user.project_id):
        raise Refused(
            f"these credentials do not cover project {str(params['project_id'])[:64]!r}",
            f"user {caller.user_name} belongs to project {user.project_id}",
            "Use the bundle issued for that project, or the right --project-id.",
        )
    return Call(
        settings=settings, user=caller.user_name, project_id=user.project_id, caps=caps,
        ec2=clients["ec2"], s3=clients["s3"], registry=registry, now=now.replace(microsecond=0), params=params,
    )
