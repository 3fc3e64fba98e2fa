"""What the scientist is told: extend never shortens by surprise, terminate twice, JSON for every
report, status per annex with what it cost and can still cost, and the README's own example."""

from __future__ import annotations

import json
import re
import shlex
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.flows import PROJECT, USER

README = Path(__file__).resolve().parents[2] / "README.md"


def region_and_bundle(shell, *caps: str) -> dict[str, str]:
    assert shell.setup_region().returncode == 0
    bundle = shell.home / "b.toml"
    issued = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                       "--output", str(bundle), *caps)
    assert issued.returncode == 0, issued.output
    return {"CONDOR_ANNEX_CREDENTIALS": str(bundle)}


def launch(shell, env, name: str, count: int, hours: float, *extra: str):
    return shell.run("condor_annex", "--project-id", PROJECT, "--duration", str(hours), "--instances", str(count),
                     "--annex-name", name, "--yes", *extra, env=env)


def test_extend_never_shortens_without_shorten(shell):
    env = region_and_bundle(shell)
    assert launch(shell, env, "long", 2, 72).returncode == 0
    refused = shell.run("condor_annex", "extend", "--annex-name", "long", "--duration", "48", env=env)
    assert refused.returncode == 2 and "earlier than today's" in refused.output and "--shorten" in refused.output
    rows = json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout)
    ends = {row["expiry"] for row in rows}
    shortened = shell.run("condor_annex", "extend", "--annex-name", "long", "--duration", "48", "--shorten", "--yes",
                          env=env)
    assert shortened.returncode == 0, shortened.output
    after = {row["expiry"] for row in json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout)}
    assert len(after) == 1 and after != ends and min(after) < min(ends)


def test_terminate_twice_says_the_annex_is_already_gone(shell):
    env = region_and_bundle(shell)
    assert launch(shell, env, "brief", 2, 5).returncode == 0
    first = shell.run("condor_annex", "terminate", "--annex-name", "brief", "--yes", env=env)
    assert first.returncode == 0 and "Terminated 2 instance(s)" in first.stdout
    second = shell.run("condor_annex", "terminate", "--annex-name", "brief", "--yes", env=env)
    assert second.returncode == 0 and "already gone" in second.stdout


def test_every_report_can_be_json_alone_on_stdout(shell):
    env = region_and_bundle(shell)
    planned = json.loads(launch(shell, env, "plan-only", 2, 5, "--dry-run", "--output", "json").stdout)
    assert planned["dry_run"] is True and planned["count"] == 2 and planned["most_cost_usd"] > 0
    launched = launch(shell, env, "scripted", 3, 5, "--output", "json")
    assert launched.returncode == 0, launched.output
    document = json.loads(launched.stdout)
    assert len(document["instance_ids"]) == 3 and document["annex_name"] == "scripted"
    assert document["expiry"].endswith("Z") and document["most_cost_usd"] > 0
    assert document["hourly_price_usd"]["high"] >= document["hourly_price_usd"]["low"] > 0
    assert "Annex scripted" in launched.stderr  # the plan is a message: stderr
    extended = json.loads(shell.run("condor_annex", "extend", "--annex-name", "scripted", "--duration", "8",
                                    "--output", "json", "--yes", env=env).stdout)
    assert sorted(extended["instance_ids"]) == sorted(document["instance_ids"]) and extended["most_cost_usd"] > 0
    status = json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout)
    assert {row["instance_id"] for row in status} == set(document["instance_ids"])
    assert all(row["cost_so_far"] is not None and row["can_still_cost"] > 0 for row in status)
    ended = json.loads(shell.run("condor_annex", "terminate", "--annex-name", "scripted", "--yes", "--output", "json",
                                 env=env).stdout)
    assert ended == {"annex_name": "scripted", "instance_ids": sorted(document["instance_ids"]),
                     "objects_removed": 2, "already_gone": False}  # its settings and its token


def test_status_speaks_per_annex_with_cost_so_far_and_what_it_can_still_cost(shell):
    env = region_and_bundle(shell)
    assert launch(shell, env, "wide", 12, 10).returncode == 0
    assert launch(shell, env, "narrow", 2, 5).returncode == 0
    result = shell.run("condor_annex", "status", env=env)
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if re.search(r"\bwide\b", line) and "running" in line]
    assert len(rows) == 1  # one line per annex, not 12
    assert any("12 running" in line and "$" in line for line in lines)
    assert "can still cost" in result.stdout and "of the $500.00 spend cap" in result.stdout
    listed = shell.run("condor_annex", "status", "--instances", env=env)
    assert sum(1 for line in listed.stdout.splitlines() if re.search(r"\bi-[0-9a-f]{17}\b", line)) == 14


def _readme_lines(prefix: str) -> list[str]:
    return [line.strip() for line in README.read_text().splitlines() if line.strip().startswith(prefix)]


def test_the_readme_example_works_with_the_caps_its_issue_line_gives(shell):
    """The README's issue-credentials line and headline command, run as written. The headline names
    a date: once it has passed, the same lease length is asked for from now (the README says the
    example is of 2026-12-01, and the caps must hold the lease it implies from then)."""
    (issue,) = _readme_lines("annex-admin issue-credentials --project-id 'TheNeeds-MooreLab'")
    (headline,) = {line for line in _readme_lines("condor_annex --project-id 'TheNeeds-MooreLab' --expiry")}
    assert shell.setup_region().returncode == 0
    issue_args = shlex.split(issue)[1:]
    output = issue_args[issue_args.index("--output") + 1]
    issue_args[issue_args.index("--output") + 1] = str(shell.home / output)
    assert shell.run("annex-admin", *issue_args).returncode == 0
    env = {"CONDOR_ANNEX_CREDENTIALS": str(shell.home / output)}
    args = shlex.split(headline)[1:]
    expiry_text = args[args.index("--expiry") + 1]
    expiry = datetime.strptime(expiry_text, "%Y-%m-%d %H:%M").astimezone(timezone.utc)
    written_on = datetime(2026, 12, 1, tzinfo=timezone.utc)
    if expiry - datetime.now(timezone.utc) < expiry - written_on - timedelta(hours=1):
        hours = (expiry - written_on).total_seconds() / 3600
        at = args.index("--expiry")
        args[at : at + 2] = ["--duration", f"{hours:.1f}"]
    result = shell.run("condor_annex", *args, "--yes", env=env)
    assert result.returncode == 0, result.output
    assert "Launched 16 of 16" in result.stdout


def test_extending_a_password_annex_needs_no_pool_configuration(shell, tmp_path):
    """Only an annex running on a token gets a new one; a password annex (here on her own pool,
    `--own-pool`) has its lease moved without the pool being read, so an unset CONDOR_CONFIG is no
    obstacle."""
    from tests.flows import write_pool

    env = region_and_bundle(shell, "--allow-own-pool-key")
    password_pool = write_pool(tmp_path / "password-pool", signing_key=False)
    launched = launch(shell, {**env, "CONDOR_CONFIG": str(password_pool.condor_config)}, "pw", 2, 5, "--own-pool")
    assert launched.returncode == 0 and "pool password file" in launched.output
    moved = shell.run("condor_annex", "extend", "--annex-name", "pw", "--duration", "8", "--yes",
                      env={**env, "CONDOR_CONFIG": ""})
    assert moved.returncode == 0, moved.output
    assert "new pool token" not in moved.stdout
