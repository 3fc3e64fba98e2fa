"""``annex-admin pool-config``: what the pool's central manager needs so that annex nodes join it,
and the line that revokes one annex's token before its lease ends. Text only, no AWS call.

Every line is HTCondor configuration that appends to what the pool already has (``$(NAME)``, or
``$(NAME:default)`` where an undefined knob would otherwise narrow it), so adding the file to a
central manager's configuration directory takes nothing away.
"""

from __future__ import annotations

import re
from typing import Sequence

from annex_cloud.pool_tokens import ANNEX_SCOPES, KEY_NAME_PATTERN, POOL_KEY_NAME, TOKEN_ID_PATTERN, TOKEN_IDENTITY, TOKEN_MARGIN
from annex_cloud.pools import DEFAULT_KEY_NAME
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


def validate_key_name(key_name: str) -> str:
    if re.fullmatch(KEY_NAME_PATTERN, key_name or "") is None:
        raise BadInput(
            f"--key-name {key_name!r} is not a key name HTCondor reads",
            "a signing key is a file of SEC_PASSWORD_DIRECTORY: letters, digits, '.', '_' or '-'",
            "Pass the name given to annex-admin pool set (ANNEX by default).",
        )
    return key_name


def _key_lines(key_name: str) -> list[str]:
    if key_name == POOL_KEY_NAME:
        return [
            "# The broker signs annex tokens with this pool's own POOL key (annex-admin pool set",
            "# --key-name POOL): nothing more to install, and revoking them all means replacing POOL.",
        ]
    return [
        f"# The stack signs every annex's IDTOKEN with the signing key {key_name}, a key of its own",
        "# beside POOL. Install the file you gave annex-admin pool set --signing-key-file here, owned",
        "# by root, mode 0600 (for example: install -m 0600 ANNEX-key-file $(SEC_PASSWORD_DIRECTORY)/" + key_name + "):",
        f"CONDOR_ANNEX_SIGNING_KEY = {key_name}",
        "CONDOR_ANNEX_SIGNING_KEY_FILE = $(SEC_PASSWORD_DIRECTORY)/$(CONDOR_ANNEX_SIGNING_KEY)",
        "# To make one: umask 077; head -c 64 /dev/urandom > $(CONDOR_ANNEX_SIGNING_KEY_FILE), then give",
        "# a copy to annex-admin pool set --signing-key-file. To revoke every annex token at once,",
        "# delete that file and run condor_reconfig: the pool's own POOL key is untouched.",
    ]


def pool_config_text(key_name: str = DEFAULT_KEY_NAME) -> str:
    key_name = validate_key_name(key_name)
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
        f"# IDTOKEN, which the stack's broker mints (HS256, key {key_name}, issuer the trust domain",
        f"# recorded with annex-admin pool set, scopes {scopes},",
        f"# expiring {margin_hours} h after the lease end and minted again on every extension, one token",
        "# id per annex), or with the pool password for a pool recorded without a signing key. The",
        "# recorded trust domain must be this central manager's TRUST_DOMAIN.",
        *_key_lines(key_name),
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
