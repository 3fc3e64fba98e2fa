"""``annex-admin pool-config``: what the pool's central manager needs so that annex nodes join it,
and the line that revokes one annex's token before its lease ends. Text only, no AWS call.

Every line is HTCondor configuration that appends to what the pool already has (``$(NAME)``, or
``$(NAME:default)`` where an undefined knob would otherwise narrow it), so adding the file to a
central manager's configuration directory takes nothing away.
"""

from __future__ import annotations

import re
from typing import Sequence

from annex_cloud.pool_tokens import ANNEX_SCOPES, TOKEN_ID_PATTERN, TOKEN_IDENTITY, TOKEN_MARGIN
from annex_common.errors import BadInput

_EXAMPLE_ID = "0123456789abcdef0123456789abcdef"


def validate_token_ids(token_ids: Sequence[str]) -> list[str]:
    for token_id in token_ids:
        if re.fullmatch(TOKEN_ID_PATTERN, token_id or "") is None:
            raise BadInput(
                f"--revoke {token_id!r} is not an annex token id",
                "a token id (jti) is 32 hexadecimal digits, as condor_annex status shows it",
                "Pass the id condor_annex status or the launch plan showed.",
            )
    return list(dict.fromkeys(token_ids))


def revocation_line(token_ids: Sequence[str]) -> str:
    """Revokes these tokens on top of whatever the pool revokes already."""
    alternatives = " || ".join(f'(jti =?= "{token_id}")' for token_id in token_ids)
    return f"SEC_TOKEN_REVOCATION_EXPR = $(SEC_TOKEN_REVOCATION_EXPR:False) || {alternatives}"


def revocation_text(token_ids: Sequence[str]) -> str:
    """Lines to append to the central manager's annex file: each keeps every earlier revocation."""
    token_ids = validate_token_ids(token_ids)
    return (
        f"# condor-annex: revoke {len(token_ids)} annex token(s) before their leases end (then condor_reconfig).\n"
        + revocation_line(token_ids) + "\n"
    )


def pool_config_text() -> str:
    scopes = " ".join(scope.removeprefix("condor:/") for scope in ANNEX_SCOPES)
    margin_hours = int(TOKEN_MARGIN.total_seconds() // 3600)
    lines = [
        "# condor-annex: what this pool's central manager needs so that annex nodes join the pool.",
        "# Put it in a file of the central manager's configuration directory (for example",
        "# config.d/60-condor-annex.conf), then run condor_reconfig there.",
        "#",
        "# Annex nodes open no port: their daemons register through the collector's connection",
        "# broker (CCB), and every connection to them is made in reverse through it.",
        "ENABLE_CCB_SERVER = True",
        f"# A node authenticates as {TOKEN_IDENTITY}@<this pool's TRUST_DOMAIN>: with its annex's own",
        "# IDTOKEN (HS256, signed with this pool's POOL signing key, issuer TRUST_DOMAIN, scopes",
        f"# {scopes}, expiring {margin_hours} h after the lease end, one token id per",
        "# annex), or with the pool password when the scientist could read no signing key. condor_annex",
        "# takes TRUST_DOMAIN from the scientist's CONDOR_CONFIG: it must be this central manager's.",
        "SEC_DEFAULT_AUTHENTICATION_METHODS = $(SEC_DEFAULT_AUTHENTICATION_METHODS), IDTOKENS, PASSWORD",
        "# That identity may advertise the node's startd and master, besides whatever may already.",
        f"ALLOW_ADVERTISE_STARTD = $(ALLOW_ADVERTISE_STARTD:$(ALLOW_DAEMON)), {TOKEN_IDENTITY}@$(TRUST_DOMAIN)",
        f"ALLOW_ADVERTISE_MASTER = $(ALLOW_ADVERTISE_MASTER:$(ALLOW_DAEMON)), {TOKEN_IDENTITY}@$(TRUST_DOMAIN)",
        "#",
        "# To revoke one annex's token before its lease ends, name its token id (jti: condor_annex",
        "# status and the launch plan show it):",
        "#   annex-admin pool-config --revoke <jti> [--revoke <jti> ...] >> config.d/60-condor-annex.conf",
        "# appends a line like the one below (each keeps the revocations before it); then",
        "# condor_reconfig. The collector refuses the token from then on: the annex's nodes can no",
        "# longer advertise or register with CCB. Their instances still end at their idle time or",
        "# lease end, or at once with condor_annex terminate. (extend's new token keeps the id.)",
        f"#   {revocation_line([_EXAMPLE_ID])}",
    ]
    return "\n".join(lines) + "\n"
