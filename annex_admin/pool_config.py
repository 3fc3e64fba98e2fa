"""``annex-admin pool-config``: what the pool's central manager needs so that annex nodes join it,
and the line that revokes one annex's token before its lease ends. Text only, no AWS call (the
command reads the recorded pool's key name first: ``annex_admin.pool.config_key_name``).

Every line is HTCondor configuration that appends to what the pool already has (``$(NAME)``, or
``$(NAME:default)`` where an undefined knob would otherwise narrow it), so adding the file to a
central manager's configuration directory takes nothing away. Shell commands appear only in
comments, each alone on its line (``shell_commands``), and use the shell's own ``$(...)``
(``condor_config_val``), never a macro of HTCondor's, so that each can be pasted as it is.
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


def install_key_command(key_name: str) -> str:
    """The shell command that installs the signing key file on the central manager (as root, from
    the folder holding the copy given to pool set). Shell, so a real command substitution where
    the configuration lines use HTCondor's $(...) macros; ./ so a name starting with '-' is a file."""
    return f'install -o root -m 0600 ./{key_name} "$(condor_config_val SEC_PASSWORD_DIRECTORY)/{key_name}"'


def make_key_command(key_name: str) -> str:
    """The shell command that makes a new signing key in place on the central manager (as root)."""
    return f'(umask 077 && head -c 64 /dev/urandom > "$(condor_config_val SEC_PASSWORD_DIRECTORY)/{key_name}")'


REVOKE_COMMAND = "annex-admin pool-config --revoke JTI >> config.d/60-condor-annex.conf"


def shell_commands(key_name: str = DEFAULT_KEY_NAME) -> list[str]:
    """Every shell command the snippet shows, each on its own comment line to copy as it is."""
    own_key = [] if key_name == POOL_KEY_NAME else [install_key_command(key_name), make_key_command(key_name)]
    return [*own_key, REVOKE_COMMAND]


def _key_lines(key_name: str) -> list[str]:
    if key_name == POOL_KEY_NAME:
        return [
            "# The broker signs annex tokens with this pool's own POOL key (annex-admin pool set",
            "# --key-name POOL): nothing more to install, and revoking them all means replacing POOL.",
        ]
    return [
        f"# The stack signs every annex's IDTOKEN with the signing key {key_name}, a key of its own",
        "# beside POOL. Install the file you gave annex-admin pool set --signing-key-file here, owned",
        f"# by root, mode 0600: as root, in the folder holding that file (named {key_name}), run",
        f"#   {install_key_command(key_name)}",
        f"CONDOR_ANNEX_SIGNING_KEY = {key_name}",
        "CONDOR_ANNEX_SIGNING_KEY_FILE = $(SEC_PASSWORD_DIRECTORY)/$(CONDOR_ANNEX_SIGNING_KEY)",
        "# Or make a new one there (as root), then give a copy to annex-admin pool set --signing-key-file:",
        f"#   {make_key_command(key_name)}",
        "# To revoke every annex token at once, delete that file and run condor_reconfig: the",
        "# pool's own POOL key is untouched.",
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
        "# To revoke one annex's token before its lease ends, name its token id JTI (condor_annex",
        "# status and the launch plan show it; --revoke may be given again for more):",
        f"#   {REVOKE_COMMAND}",
        "# appends a line like the one below (each keeps the revocations before it); then",
        "# condor_reconfig. The collector refuses the token from then on: the annex's nodes can no",
        "# longer advertise or register with CCB. Their instances still end at their idle time or",
        "# lease end, or at once with condor_annex terminate. (extend's new token keeps the id.)",
        f"#   {revocation_line([_EXAMPLE_ID])}",
    ]
    return "\n".join(lines) + "\n"
