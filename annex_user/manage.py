"""Watch, extend and end annexes of the scientist's project, through the broker."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from annex_common.errors import BadInput
from annex_user import expiry as lease
from annex_user import pending
from annex_user.broker_client import first_broken, instance_rows, sent_then_interrupted
from annex_user.context import AnnexContext
from annex_cloud.pool_tokens import TOKEN_IDENTITY, TOKEN_MARGIN
from annex_cloud.tags import LIVE_STATES
from annex_user.launch import validate_annex_name



@dataclass
class StatusRow:
    data: dict[str, Any]  # the broker's row: instance_id, annex_name, state, costs, ...
    in_pool: bool | None

    def to_json(self, now: datetime) -> dict[str, Any]:
        expiry = lease.from_tag(self.data.get("expiry"))
        remaining = max(int((expiry - now).total_seconds()), 0) if expiry else None
        return {**self.data, "lease_remaining_seconds": remaining, "in_pool": self.in_pool}


@dataclass
class AnnexSummary:
    """One annex in one line, as the broker sums it up, and how many of its instances joined the pool."""

    data: dict[str, Any]  # the broker's summary: annex_name, states, expiry, costs, token_id
    joined: int | None  # None: unknown (no pool view)

    @property
    def annex_name(self) -> str:
        return str(self.data["annex_name"])

    @property
    def live(self) -> int:
        return sum(n for state, n in self.data["states"].items() if state in LIVE_STATES)

    def to_json(self, now: datetime) -> dict[str, Any]:
        lease_end = lease.from_tag(self.data.get("expiry"))
        return {
            "annex_name": self.annex_name,
            "instances": sum(self.data["states"].values()),
            "states": dict(sorted(self.data["states"].items())),
            "joined_pool": self.joined,
            "expiry": self.data.get("expiry"),
            "lease_remaining_seconds": max(int((lease_end - now).total_seconds()), 0) if lease_end else None,
            "cost_so_far_usd": round(self.data["cost_so_far"], 4),
            "can_still_cost_usd": round(self.data["can_still_cost"], 4),
        }


@dataclass
class StatusReport:
    summaries: list[dict[str, Any]]  # the broker's, one per annex shown
    rows: list[StatusRow]  # every instance shown, when they were asked for (or the pool answered)
    collector_note: str
    caps: dict[str, float]
    price_source: str
    project_id: str  # the project the broker answered for (the administrator's record)
    project: dict[str, Any] = field(default_factory=dict)  # the broker's totals of the whole project

    def annexes(self) -> list[AnnexSummary]:
        joined: dict[str, int | None] = {}
        for row in self.rows:
            name, counted = row.data["annex_name"], joined.get(row.data["annex_name"], 0)
            joined[name] = None if row.in_pool is None or counted is None else counted + int(row.in_pool)
        return [AnnexSummary(s, joined.get(s["annex_name"]) if self.rows else None) for s in self.summaries]

    def totals(self) -> dict[str, float]:
        """The whole project's figures against its caps, whichever annex the report shows."""
        return {
            "live_instances": self.project.get("live_instances", 0),
            "cost_so_far_usd": round(self.project.get("cost_so_far", 0.0), 4),
            "can_still_cost_usd": round(self.project.get("can_still_cost", 0.0), 4),
            **{f"cap_{k}": v for k, v in self.caps.items()},
        }


def annex_status(
    ctx: AnnexContext, *, annex_name: str | None, condor_config: str | None, instances: bool = False
) -> StatusReport:
    """The broker's summary of the project's annexes (or one's); every instance too when asked, or
    when the pool's collector answers (to count which joined), in the broker's pages."""
    params: dict[str, Any] = {}
    if annex_name:
        params["annex_name"] = validate_annex_name(annex_name)
    answer = ctx.broker.ask("status", params, "could not read the project's annexes")
    joined, note = _ask_collector(condor_config)
    rows = [
        StatusRow(row, None if joined is None else bool(joined.get(row["instance_id"])))
        for row in (instance_rows(ctx.broker, params, "could not read the project's instances")
                    if instances or joined is not None else [])
    ]
    return StatusReport(answer.get("annexes", []), rows, note, answer.get("caps", {}),
                        answer.get("price_source", ""), str(answer.get("project_id", "")), answer.get("totals", {}))


def _ask_collector(condor_config: str | None) -> tuple[dict[str, bool] | None, str]:
    """The pool's view, when its collector answers within seconds; EC2's view alone otherwise."""
    if not condor_config:
        return None, "CONDOR_CONFIG is not set: showing EC2's view only"
    from annex_user.pool import ask_collector, read_pool

    try:
        pool = read_pool(condor_config, timeout=10)
    except BadInput as exc:
        return None, f"the pool configuration could not be read ({exc.what}): showing EC2's view only"
    answer = ask_collector(pool, timeout=5)
    if answer.joined is None:
        return None, f"{answer.note}: showing EC2's view only"
    return answer.joined, answer.note


@dataclass
class ExtendResult:
    annex_name: str
    instance_ids: list[str]
    old_expiries: list[str]
    new_expiry: datetime
    token_reminted: bool
    answer: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": False,
            "annex_name": self.annex_name,
            "instance_ids": self.instance_ids,
            "old_expiries": self.old_expiries,
            "expiry": lease.to_tag(self.new_expiry),
            "lease_hours": round(self.answer.get("lease_hours", 0.0), 4),
            "most_cost_usd": round(self.answer.get("most_cost", 0.0), 4),
            "adds_usd": round(self.answer.get("adds", 0.0), 4),
            "token_replaced": self.token_reminted,
        }


def extension_summary(plan: dict[str, Any]) -> dict[str, Any]:
    """The broker's plan of an extension as a script reads it."""
    return {
        "annex_name": plan["annex_name"],
        "instance_ids": plan["instance_ids"],
        "old_expiries": plan["old_expiries"],
        "expiry": plan["expiry"],
        "shortens": bool(plan.get("shortens")),
        "lease_hours": round(plan["lease_hours"], 4),
        "most_cost_usd": round(plan["most_cost"], 4),
        "adds_usd": round(plan["adds"], 4),
        "committed_spend_usd": round(committed_after_extension(plan), 4),
        "caps": plan["caps"],
        "token_id": plan.get("token_id"),
        "breaks": list(plan.get("breaks") or []),
    }


def committed_after_extension(plan: dict[str, Any]) -> float:
    """What the project's live annexes could still cost once the lease moves (the others', and
    this annex's to its new end): the figure its spend cap is checked against."""
    return float(plan["committed_spend"]) + float(plan["most_cost"])


def extend_params(ctx: AnnexContext, annex_name: str, new_expiry: datetime, shorten: bool) -> dict[str, Any]:
    validate_annex_name(annex_name)
    new_expiry = lease.check_future(new_expiry, now=ctx.now, running_annex=annex_name)
    return {"annex_name": annex_name, "expiry": lease.to_tag(new_expiry), "shorten": shorten}


def plan_extension(ctx: AnnexContext, params: dict[str, Any], *, show_broken: bool = False) -> dict[str, Any]:
    """The broker's plan of the extension; one that breaks a cap is refused (BadInput), or with
    ``show_broken`` returned to be shown (its ``breaks`` name the caps)."""
    what = f"could not plan the extension of {params['annex_name']}"
    plan = ctx.broker.ask("plan_extend", params, what)
    broken = first_broken(plan, what)
    if broken is not None and not show_broken:
        raise broken
    return plan


def extension_refusal(plan: dict[str, Any]) -> BadInput | None:
    return first_broken(plan, f"could not plan the extension of {plan['annex_name']}")


def extend_lease(
    ctx: AnnexContext, params: dict[str, Any], *, condor_config: str | None = None, plan: dict[str, Any] | None = None
) -> ExtendResult:
    """Move the lease end; an IDTOKEN annex gets a new token, with its own id, to the new end
    (the broker mints it; only an annex on her own pool's key has it minted here).

    ``plan`` is the broker's plan of this extension when the caller already asked for it."""
    new_expiry = lease.from_tag(params["expiry"])
    assert new_expiry is not None
    plan = plan if plan is not None else plan_extension(ctx, params)
    # The broker mints the new token itself unless the annex runs on her own pool's key.
    own_key = plan.get("token_from") == "scientist"
    token = _fresh_token(ctx, params["annex_name"], plan.get("token_id") if own_key else None, new_expiry, condor_config)
    # The request id makes it safe to send twice: the broker answers a retry from its record.
    params = {**params, "request_id": uuid.uuid4().hex}
    if token is not None:
        params = {**params, "token": base64.b64encode(token).decode()}
    try:
        answer = ctx.broker.ask("extend", params, f"could not extend annex {params['annex_name']}")
    except KeyboardInterrupt:
        raise sent_then_interrupted(
            "moving the lease of", params["annex_name"], "Extend it again if its lease end is not the one you asked for."
        ) from None
    return ExtendResult(
        params["annex_name"], answer["instance_ids"], answer.get("old_expiries", []), new_expiry,
        bool(answer.get("token_replaced")), answer,
    )


def _fresh_token(
    ctx: AnnexContext, annex_name: str, token_id: str | None, new_expiry: datetime, condor_config: str | None
) -> bytes | None:
    """A token to the new lease end with the annex's own id, for an annex that runs on one (the
    broker's plan names its id). A password annex needs nothing new, and its pool is not read."""
    if not token_id:
        return None
    from annex_user.pool import pool_material, read_pool, security_source

    pool = read_pool(condor_config)
    source = security_source(pool, annex_name=annex_name)
    if source.kind != "idtoken":
        return None
    security = pool_material(
        pool, source, annex_name=annex_name, subject=TOKEN_IDENTITY,
        issued_at=ctx.now, expires_at=new_expiry + TOKEN_MARGIN, token_id=token_id,
    )
    return security.payload


@dataclass
class TerminateResult:
    annex_name: str
    instance_ids: list[str]
    objects_removed: int
    already_gone: bool

    def summary(self) -> dict[str, Any]:
        return {"annex_name": self.annex_name, "instance_ids": self.instance_ids,
                "objects_removed": self.objects_removed, "already_gone": self.already_gone}


def terminate_annex(ctx: AnnexContext, annex_name: str) -> TerminateResult:
    validate_annex_name(annex_name)
    params = {"annex_name": annex_name, "request_id": uuid.uuid4().hex}  # safe to send twice
    try:
        answer = ctx.broker.ask("terminate", params, f"could not terminate annex {annex_name}")
    except KeyboardInterrupt:
        raise sent_then_interrupted(
            "terminating", annex_name, "Terminate it again if it still has live instances (one already gone is said so)."
        ) from None
    pending.forget_annex(ctx.bundle.project_id, annex_name)
    return TerminateResult(annex_name, answer["instance_ids"], answer["objects_removed"], bool(answer["already_gone"]))
