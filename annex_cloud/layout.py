"""Where things live in the stack's bucket."""

from __future__ import annotations

ANNEX_PREFIX = "annexes"  # annexes/<project>/<annex>/...
NODE_CONFIG_OBJECT = "condor_config"  # HTCondor config fragment for the execute node
NODE_ENV_OBJECT = "annex.env"  # KEY=VALUE lines the bootstrap reads (never sourced)
TOKEN_OBJECT = "security/token"  # IDTOKEN for the annex, when minted
PASSWORD_OBJECT = "security/pool_password"  # pool password file, the fallback


def annex_prefix(project_id: str, annex_name: str) -> str:
    return f"{ANNEX_PREFIX}/{project_id}/{annex_name}/"
