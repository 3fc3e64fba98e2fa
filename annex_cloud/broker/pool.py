"""The pool an annex joins and the material its nodes receive, decided by the broker.

By default the scientist holds no pool secret: the broker reads the pool the administrator
recorded (the project's own, else the stack's: ``annex_cloud.pools``), mints the annex's IDTOKEN
with its signing key (or, for a pool without tokens, ships its pool password), and mints it again
on every extension, with the same id and the new lease end plus ``TOKEN_MARGIN``. Only where the
administrator allows it for the project may a scientist bring her own pool and key (her personal
pool): she then sends the contact and a token she minted, which the broker checks but cannot
verify (``annex_cloud.pool_tokens.token_problem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from annex_cloud.broker import requests as asks
from annex_cloud.errors import Refused
from annex_cloud.expiry import format_expiry_tag
from annex_cloud.pool_tokens import (
    ANNEX_SCOPES,
    TOKEN_MARGIN,
    TokenClaimsToMint,
    annex_identity,
    mint_token,
    new_token_id,
)
from annex_cloud.pools import PoolSecret, pool_parameter, read_pool_parameter
from annex_cloud.registry import AnnexRecord, ProjectPool, Registry

MINTED_BY_BROKER = "broker"
_ASK_ADMIN = "Ask your pool administrator to record the pool: annex-admin pool set (or issue-credentials --pool-*)."


class PoolCall(Protocol):
    """What of a broker call this module reads."""

    project_id: str
    registry: Registry
    ssm: Any
    now: datetime
    settings: Any


@dataclass(frozen=True)
class AnnexPool:
    """What the annex's nodes get: the pool's contact, and their material (never shown)."""

    contact: asks.PoolContact
    minted_by: str  # "broker", or "" for her own key
    parameter: str  # the pool parameter the broker minted with; "" for her own pool

    def record(self, annex_name: str, expiry: str) -> AnnexRecord:
        return AnnexRecord(annex_name, self.contact.security, self.contact.token_id, expiry,
                           minted_by=self.minted_by, pool=self.parameter)


def project_pool(call: PoolCall) -> ProjectPool:
    return call.registry.project_pool(call.project_id)


def _parameter(call: PoolCall, choice: ProjectPool) -> str:
    return pool_parameter(call.settings.stack_name, call.project_id if choice.own_pool else None)


def _recorded(call: PoolCall, parameter: str) -> PoolSecret:
    try:
        pool = read_pool_parameter(call.ssm, parameter)
    except ValueError as exc:
        raise Refused(f"the pool recorded for project {call.project_id} is unreadable", str(exc), _ASK_ADMIN) from exc
    if pool is None:
        whose = "project " + call.project_id if parameter.endswith("/projects/" + call.project_id) else "this stack"
        raise Refused(f"no pool is recorded for {whose}", "the broker joins annexes to the pool the administrator "
                      "recorded, and mints their tokens with its key", _ASK_ADMIN)
    return pool


def _check_own_allowed(call: PoolCall, choice: ProjectPool) -> None:
    if not choice.own_key:
        raise Refused(
            f"project {call.project_id} may not bring its own pool key",
            "the administrator keeps the pool's key in the stack, and the broker mints every annex's token",
            "Launch without --own-pool (condor_annex then needs no pool key), or ask your pool administrator "
            "to allow your own key (issue-credentials --allow-own-pool-key).",
        )


def plan(call: PoolCall, ask: asks.LaunchAsk) -> dict[str, Any]:
    """The pool the annex would join, in the plan's words; Refused when there is none."""
    choice = project_pool(call)
    if ask.own_pool:
        _check_own_allowed(call, choice)
        return {"source": "own", "description": "your own pool, with a token you mint with your own key"}
    pool = _recorded(call, _parameter(call, choice))
    expires = format_expiry_tag(ask.expiry + TOKEN_MARGIN)
    description = pool.describe() + (
        f", for {annex_identity(pool.trust_domain)} (scopes "
        f"{' '.join(s.removeprefix('condor:/') for s in ANNEX_SCOPES)}), expiring {expires}"
        if pool.security == "idtoken" else "")
    return {"source": "project" if choice.own_pool else "stack", **pool.public(), "description": description,
            "token_expires": expires if pool.security == "idtoken" else None}


def for_launch(call: PoolCall, ask: asks.LaunchAsk) -> AnnexPool:
    """The annex's pool and material: the recorded pool's, minted now, or her own where allowed."""
    choice = project_pool(call)
    if ask.own_pool:
        _check_own_allowed(call, choice)
        if ask.pool is None:
            raise Refused("the launch names no pool of your own", "--own-pool sends your pool's contact and token",
                          "Use condor_annex --own-pool.")
        return AnnexPool(ask.pool, "", "")
    parameter = _parameter(call, choice)
    pool = _recorded(call, parameter)
    if pool.security == "password":
        contact = asks.PoolContact(pool.collector_host, pool.trust_domain, ask.job_owner, "password", pool.secret)
        return AnnexPool(contact, MINTED_BY_BROKER, parameter)
    token_id = new_token_id()
    token = _mint(call, pool, token_id, ask.expiry)
    contact = asks.PoolContact(pool.collector_host, pool.trust_domain, ask.job_owner, "idtoken", token, token_id)
    return AnnexPool(contact, MINTED_BY_BROKER, parameter)


def remint(call: PoolCall, record: AnnexRecord, lease_end: datetime) -> bytes:
    """The annex's token again, to the new lease end, with its id, from the pool it was minted for."""
    return _mint(call, _recorded(call, record.pool), record.token_id, lease_end)


def _mint(call: PoolCall, pool: PoolSecret, token_id: str, lease_end: datetime) -> bytes:
    what = TokenClaimsToMint(pool.trust_domain, annex_identity(pool.trust_domain), call.now,
                             lease_end + TOKEN_MARGIN, token_id)
    try:
        return (mint_token(pool.secret, pool.key_name, what) + "\n").encode("ascii")
    except ValueError as exc:
        raise Refused("the annex's pool token cannot be minted", str(exc), _ASK_ADMIN) from exc
