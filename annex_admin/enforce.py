"""`annex-admin enforce`: run, now, the sweep the scheduled function runs every few minutes.

The rules live in ``annex_cloud/enforcer.py`` (the deployed function's own source), so the admin's
sweep and the scheduled one cannot drift apart. This module only adds the admin's clients and the
stack's identity, and turns AWS failures into the project's errors. The admin's sweep publishes no
metrics: its heartbeat would hide a scheduled function that has stopped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from annex_common.aws import AwsClients, aws_errors
from annex_common.errors import NotReady
from annex_common.stack import StackInfo
from annex_cloud import enforcer
from annex_cloud.enforcer import SweepReport
from annex_cloud.leftovers import StackScope
from templates import contract
from templates.stack import launch_template_name

__all__ = ["SweepReport", "deployed_prices", "run_enforcer", "scope_from_outputs", "stack_scope"]


def stack_scope(stack: StackInfo) -> StackScope:
    """The stack as the enforcer knows it: its name and launch templates (as the function's
    environment names them)."""
    return scope_from_outputs(stack.name, stack.outputs)


def scope_from_outputs(stack_name: str, outputs: dict[str, str]) -> StackScope:
    pairs = [item.split("=", 1) for item in outputs.get(contract.OUT_LAUNCH_TEMPLATES, "").split(",") if "=" in item]
    return StackScope(
        name=stack_name,
        launch_template_ids=tuple(lt for _, lt in pairs),
        launch_template_names=tuple(launch_template_name(stack_name, itype) for itype, _ in pairs),
    )


def run_enforcer(
    clients: AwsClients,
    *,
    bucket: str,
    prices: dict[str, float],
    dry_run: bool,
    now: datetime | None = None,
    log: Callable[[str], None] = print,
    stack: StackScope | None = None,
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
            stack=stack,
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
