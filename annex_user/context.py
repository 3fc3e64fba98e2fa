"""Everything one condor_annex command works with: the bundle, AWS clients with its keys, the broker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from annex_common.aws import make_clients
from annex_common.bundle import Bundle, load_bundle
from annex_common.errors import BadInput
from annex_user.broker_client import Broker
from templates.contract import broker_function_name


@dataclass
class AnnexContext:
    bundle: Bundle
    broker: Broker
    now: datetime


def open_context(bundle_path: Path, *, now: datetime | None = None) -> AnnexContext:
    """The bundle's keys and the broker its stack names; no AWS call is made here."""
    bundle = load_bundle(bundle_path)
    clients = make_clients(
        region=bundle.region,
        access_key_id=bundle.aws_access_key_id,
        secret_access_key=bundle.aws_secret_access_key,
    )
    broker = Broker(clients, broker_function_name(bundle.stack_name), bundle.region, bundle.broker_arn)
    return AnnexContext(bundle, broker, (now or datetime.now(timezone.utc)).replace(microsecond=0))


def require_project(bundle: Bundle, project_id: str | None) -> str:
    if project_id is None:
        return bundle.project_id
    if project_id != bundle.project_id:
        raise BadInput(
            f"these credentials do not cover project {project_id!r}",
            f"the bundle is for project {bundle.project_id!r} (user {bundle.user})",
            "Use the bundle issued for that project (--credentials FILE), or the right --project-id.",
        )
    return project_id
