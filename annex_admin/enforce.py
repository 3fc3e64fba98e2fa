"""`annex-admin enforce`: run, now, the sweep the scheduled function runs every few minutes.

It invokes the stack's own enforcer function, so the administrator's sweep is the deployed one,
with the deployed code, role, prices and caps; this module renders its report.
"""

from __future__ import annotations

from typing import Any

from annex_cloud.leftovers import StackScope
from annex_common.aws import AwsClients, invoke_function
from annex_admin.stack import StackInfo
from templates import contract
from templates.stack import launch_template_name


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


def run_enforcer(clients: AwsClients, function_name: str, *, dry_run: bool) -> dict[str, Any]:
    return invoke_function(clients, function_name, {"dry_run": dry_run}, "the enforcer sweep failed")


def report_lines(report: dict[str, Any]) -> list[str]:
    """One line per action, then the summary."""
    dry = bool(report.get("dry_run"))
    verb = "would terminate" if dry else "terminated"
    lines = [
        f"{verb} {t['instance_id']} (annex {t['annex_name']!r}, project {t['project_id']!r}): {t['reason']}"
        for t in report.get("terminated", [])
    ]
    lines += [
        f"{'would remove' if dry else 'removed'} {item['kind']} {item['id']}: {item['reason']}"
        for item in report.get("leftovers", [])
    ]
    lines += [
        f"could not end {t['instance_id']} (annex {t['annex_name']!r}, project {t['project_id']!r}): {t['error']}"
        for t in report.get("could_not_end", [])
    ]
    lines += [
        f"{'would delete' if dry else 'deleted'} orphan configuration {key}" for key in report.get("deleted_objects", [])
    ]
    lines += [f"error: {error}" for error in report.get("errors", [])]
    lines.append(
        f"enforcer{' (dry run)' if dry else ''}: {len(report.get('terminated', []))} instances "
        f"{'to terminate' if dry else 'terminated'}, {len(report.get('could_not_end', []))} could not be ended, "
        f"{len(report.get('leftovers', []))} leftovers {'to remove' if dry else 'removed'}, {report.get('kept', 0)} kept, "
        f"{len(report.get('deleted_objects', []))} configuration objects {'to delete' if dry else 'deleted'}, "
        f"{len(report.get('errors', []))} errors"
    )
    return lines
