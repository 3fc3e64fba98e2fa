"""Files the region stack loads from its code bucket, named by their content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """Bytes and the key they are stored under: the same bytes, the same key, so an unchanged
    file is never uploaded twice and a changed one changes the stack (and nothing else does)."""

    body: bytes
    prefix: str  # e.g. "functions/annex_cloud-"
    suffix: str  # e.g. ".zip"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def key(self) -> str:
        return f"{self.prefix}{self.digest[:20]}{self.suffix}"
