"""Everything one condor_annex command works with: the bundle, AWS clients with its keys, the stack."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from annex_common.aws import AwsClients, make_clients
from annex_common.errors import BadInput
from annex_common.stack import StackInfo, StackMissing, read_stack
from annex_common.bundle import Bundle, load_bundle


@dataclass
class AnnexContext:
    bundle: Bundle
    clients: AwsClients
    stack: StackInfo
    now: datetime


def open_context(bundle_path: Path, *, now: datetime | None = None) -> AnnexContext:
    bundle = load_bundle(bundle_path)
    clients = make_clients(
        region=bundle.region,
        access_key_id=bundle.aws_access_key_id,
        secret_access_key=bundle.aws_secret_access_key,
    )
    try:
        stack = read_stack(clients, bundle.stack_name)
    except StackMissing as exc:
        # For the scientist a missing stack means the bundle names the wrong region or stack.
        raise BadInput(exc.what, exc.why, exc.next_step) from exc
    return AnnexContext(bundle, clients, stack, (now or datetime.now(timezone.utc)).replace(microsecond=0))


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
