"""How a failed AWS call is named in a log line or a report."""

from __future__ import annotations


def error_code(exc: BaseException) -> str:
    """The service's error code (e.g. ``OperationNotPermitted``), or "" for a non-service error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
