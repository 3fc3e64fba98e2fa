"""Where things live in the stack's bucket."""

from __future__ import annotations

ANNEX_PREFIX = "annexes"  # annexes/<project>/<annex>/...
NODE_ENV_OBJECT = "annex.env"  # the node's typed values, KEY=VALUE (annex_cloud.node.config)
TOKEN_OBJECT = "security/token"  # IDTOKEN for the annex, when minted
PASSWORD_OBJECT = "security/pool_password"  # pool password file, the fallback


def annex_prefix(project_id: str, annex_name: str) -> str:
    return f"{ANNEX_PREFIX}/{project_id}/{annex_name}/"
