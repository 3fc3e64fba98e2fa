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


def function_clients(region: str, attempts: int) -> "FunctionClients":
    """The function's AWS clients, made once per warm Lambda environment and reused.

    Making a session and its clients costs a third of a second; a warm function pays it once.
    """
    key = (region, attempts)
    if key not in _CLIENTS:
        _CLIENTS[key] = FunctionClients(region, attempts)
    return _CLIENTS[key]


class FunctionClients:
    """Clients of one boto3 session, each made on first use."""

    def __init__(self, region: str, attempts: int) -> None:
        import boto3
        import botocore.config

        self._session = boto3.session.Session(region_name=region or None)
        self._config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": attempts})
        self._made: dict[str, object] = {}

    @property
    def session(self) -> object:
        return self._session

    def __getitem__(self, service: str) -> object:
        if service not in self._made:
            self._made[service] = self._session.client(service, config=self._config)
        return self._made[service]


_CLIENTS: dict[tuple[str, int], FunctionClients] = {}
