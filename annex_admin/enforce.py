"""`annex-admin enforce`: run, now, the sweep the scheduled function runs every few minutes.

It invokes the stack's own enforcer function, so the administrator's sweep is the deployed one,
with the deployed code, role, prices and caps; this module renders its report.
"""

from __future__ import annotations

from typing import Any

from annex_common.aws import AwsClients, invoke_function


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
        f"{'would delete' if dry else 'deleted'} orphan configuration {key}" for key in report.get("deleted_objects", [])
    ]
    lines += [f"error: {error}" for error in report.get("errors", [])]
    lines.append(
        f"enforcer{' (dry run)' if dry else ''}: {len(report.get('terminated', []))} instances "
        f"{'to terminate' if dry else 'terminated'}, {report.get('kept', 0)} kept, "
        f"{len(report.get('deleted_objects', []))} configuration objects {'to delete' if dry else 'deleted'}, "
        f"{len(report.get('errors', []))} errors"
    )
    return lines
