"""`annex-admin enforce`: run, now, the sweep the scheduled function runs every few minutes.

The rules live in ``templates/enforcer.py`` (the deployed function's own source), so the admin's
sweep and the scheduled one cannot drift apart. This module only adds the admin's clients and turns
AWS failures into the project's errors.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from annex_common.aws import AwsClients, aws_errors
from annex_common.errors import NotReady
from annex_cloud import enforcer
from annex_cloud.enforcer import SweepReport

__all__ = ["SweepReport", "deployed_prices", "run_enforcer"]


def run_enforcer(
    clients: AwsClients,
    *,
    bucket: str,
    prices: dict[str, float],
    dry_run: bool,
    now: datetime | None = None,
    log: Callable[[str], None] = print,
) -> SweepReport:
    """One sweep with the admin's credentials; ``log`` receives one line per action and a summary.

    Failures on single batches are in the report's ``errors``; a failure that stops the whole sweep
    (instances cannot be listed) raises ``AwsFailure``.
    """
    with aws_errors(
        "the enforcer sweep failed",
        "Check that these credentials may describe and terminate instances and read the bucket.",
    ):
        return enforcer.sweep(
            clients.ec2,
            clients.s3,
            bucket=bucket,
            prices=prices,
            now=now or datetime.now(timezone.utc),
            dry_run=dry_run,
            log=log,
        )


def deployed_prices(clients: AwsClients, function_name: str) -> dict[str, float]:
    """The hourly prices the scheduled function was deployed with (its ANNEX_PRICES).

    Using these, rather than a fresh price list, makes the admin's sweep decide exactly as the
    scheduled one does.
    """
    with aws_errors(f"could not read the enforcer function {function_name!r}"):
        configuration = clients.awslambda.get_function_configuration(FunctionName=function_name)
    variables = (configuration.get("Environment") or {}).get("Variables") or {}
    try:
        return enforcer.read_prices(variables.get("ANNEX_PRICES"))
    except ValueError as exc:
        raise NotReady(
            f"the enforcer function {function_name!r} has no usable price list",
            str(exc),
            "Run `annex-admin setup` again to redeploy the region stack.",
        ) from exc
