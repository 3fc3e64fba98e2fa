"""Launch requests sent to the broker and not yet answered, kept on the scientist's machine.

A launch interrupted after it was sent (Ctrl-C, a lost connection, a timeout) may have gone
through. Its request id is kept here, so that the same command run again sends the same request
and the broker answers from its record of it, never launching twice; it is forgotten once the
broker has answered, or once the annex is terminated. What is kept is no secret: the request's
id, its parameters without the annex's security material, and the broker's plan. One file per command, in the user's state
folder (platformdirs: ``~/.local/state/condor-annex`` on Linux), mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from annex_common.errors import AnnexError

# The broker keeps a request's record a week (annex_cloud.registry.REQUEST_TTL_SECONDS); an
# older request asked again would be a new one.
KEEP_SECONDS = 6 * 24 * 3600


@dataclass(frozen=True)
class PendingLaunch:
    command: str  # the command's key (command_key)
    request_id: str
    params: dict[str, Any]  # the launch request's parameters, without security material
    plan: dict[str, Any]  # the broker's plan the scientist said yes to
    token_id: str | None  # the annex token's id (jti), so a new token keeps it
    sent_at: float  # epoch seconds


def command_key(options: Mapping[str, Any]) -> str:
    """The same command, as the scientist typed it (options, bundle, pool), gives the same key."""
    text = json.dumps(dict(options), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def state_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("condor-annex", appauthor=False)) / "pending-launches"


def remember(pending: PendingLaunch, folder: Path | None = None) -> None:
    """Kept before the request is sent; written whole or not at all."""
    folder = folder or state_folder()
    path = folder / f"{pending.command}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(pending), handle)
        os.replace(tmp, path)
    except OSError as exc:
        raise AnnexError(
            "could not keep the launch request on this machine: nothing was launched",
            f"{path}: {exc.strerror or exc}",
            f"Make {folder} writable (it keeps a launch's id until the broker answers), then run again.",
        ) from exc


def find(command: str, folder: Path | None = None, *, now: float | None = None) -> PendingLaunch | None:
    """The command's unanswered launch, if it has one the broker still remembers."""
    path = (folder or state_folder()) / f"{command}.json"
    try:
        pending = PendingLaunch(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):  # unreadable: it cannot be resumed
        path.unlink(missing_ok=True)
        return None
    if (now or time.time()) - pending.sent_at > KEEP_SECONDS:
        path.unlink(missing_ok=True)
        return None
    return pending


def forget(command: str, folder: Path | None = None) -> None:
    """The broker answered: the same command run again is a new launch."""
    ((folder or state_folder()) / f"{command}.json").unlink(missing_ok=True)


def forget_annex(project_id: str, annex_name: str, folder: Path | None = None) -> None:
    """The annex was terminated: a kept launch of it is over, so the command that sent it,
    run again, is a new launch (never the ended one's answer)."""
    folder = folder or state_folder()
    for path in folder.glob("*.json"):
        try:
            params = json.loads(path.read_text()).get("params", {})
        except (OSError, ValueError, AttributeError):  # unreadable: find() drops it in its turn
            continue
        if params.get("project_id") == project_id and params.get("annex_name") == annex_name:
            path.unlink(missing_ok=True)
