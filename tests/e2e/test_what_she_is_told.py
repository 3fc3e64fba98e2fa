"""What the scientist is told is what is true: a full cap, launch JSON against the plan's table,
status of names and totals, the extend plan's lease against the cap, a shortening to minutes."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from tests.e2e.test_scientist_answers import launch, region_and_bundle
from tests.flows import PROJECT


def test_a_full_instance_cap_says_no_room_is_left(shell):
    env = region_and_bundle(shell, "--max-instances", "1")
    assert launch(shell, env, "only", 1, 5).returncode == 0
    refused = launch(shell, env, "another", 1, 5, "--dry-run")
    assert refused.returncode == 2, refused.output
    assert "1 more instance would break the project's instance cap of 1" in refused.stderr, refused.stderr
    assert "no room left" in refused.stderr and "raise the cap" in refused.stderr, refused.stderr
    assert "at most 0" not in refused.stderr


def test_launch_json_says_dry_run_or_not_and_counts_committed_as_the_table_does(shell):
    env = region_and_bundle(shell)
    table = launch(shell, env, "shown", 2, 5, "--dry-run")
    committed = re.search(r"\$([\d,.]+)/\$500\.00 committed", table.stdout)
    assert committed, table.stdout
    planned = json.loads(launch(shell, env, "shown", 2, 5, "--dry-run", "--output", "json").stdout)
    assert planned["dry_run"] is True
    assert abs(planned["committed_spend_usd"] - float(committed.group(1).replace(",", ""))) < 0.01
    launched = launch(shell, env, "shown", 2, 5, "--output", "json")
    assert launched.returncode == 0, launched.output
    document = json.loads(launched.stdout)
    assert document["dry_run"] is False
    # The project had nothing live: what it has committed is this annex's most.
    assert abs(document["committed_spend_usd"] - document["most_cost_usd"]) < 0.01, document
    extended = json.loads(shell.run("condor_annex", "extend", "--annex-name", "shown", "--duration", "8", "--yes",
                                    "--output", "json", env=env).stdout)
    assert extended["dry_run"] is False


TOTALS = re.compile(r"Project (\S+): (\d+) live instance\(s\) of 32 allowed; they can still cost \$([\d,.]+) of the "
                    r"\$500\.00 spend cap\. Instances not yet ended have cost \$([\d,.]+) so far \(ended ones are not counted")


def test_status_of_a_name_never_launched_is_bad_input_and_totals_always_appear(shell):
    env = region_and_bundle(shell)
    empty = shell.run("condor_annex", "status", env=env)
    assert empty.returncode == 0, empty.output
    assert "No live instances in project" in empty.stdout and TOTALS.search(empty.stdout), empty.stdout

    assert launch(shell, env, "deadline", 2, 5).returncode == 0
    typo = shell.run("condor_annex", "status", "--annex-name", "deadlin", env=env)
    assert typo.returncode == 2, typo.output
    assert "no annex named deadlin" in typo.stderr and "--annex-name deadline" in typo.stderr, typo.stderr
    assert shell.run("condor_annex", "status", "--annex-name", "deadlin", "--output", "json", env=env).returncode == 2

    assert shell.run("condor_annex", "terminate", "--annex-name", "deadline", "--yes", env=env).returncode == 0
    ended = shell.run("condor_annex", "status", "--annex-name", "deadline", env=env)
    assert ended.returncode == 0, ended.output
    assert "No live instances in annex deadline." in ended.stdout
    totals = TOTALS.search(ended.stdout)
    assert totals and totals.group(2) == "0", ended.stdout  # the whole project's, with nothing live


def test_status_names_the_project_the_broker_answered_for_not_the_bundles_word(shell):
    env = region_and_bundle(shell)
    bundle = shell.home / "b.toml"
    bundle.write_text(bundle.read_text().replace(f'"{PROJECT}"', '"SomebodyElse-Lab"'))
    shown = shell.run("condor_annex", "status", env=env)
    assert shown.returncode == 0, shown.output
    totals = TOTALS.search(shown.stdout)
    assert totals and totals.group(1) == PROJECT, shown.stdout
    assert "SomebodyElse-Lab" not in shown.stdout


def test_the_extend_plan_shows_the_lease_as_the_cap_counts_it(shell):
    env = region_and_bundle(shell, "--max-lease-hours", "480", "--max-spend", "1000")
    assert launch(shell, env, "grow", 1, 5).returncode == 0
    plan = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "400", "--dry-run", env=env)
    assert plan.returncode == 0, plan.output
    lease = next(line for line in plan.stdout.splitlines() if "lease ends" in line)
    assert re.search(r"\(400\.0 h from now; 400\.\d h from launch, as the lease cap counts it\)", lease), lease
    assert "lease ≤ 480 h from launch" in plan.stdout, plan.stdout
    over = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "481", "--dry-run", env=env)
    assert over.returncode == 2 and "hours from launch is beyond the project's lease cap of 480" in over.stderr, over.output


def test_shortening_a_running_annex_to_minutes_points_to_terminate(shell):
    env = region_and_bundle(shell)
    assert launch(shell, env, "soon", 1, 5).returncode == 0
    soon = (datetime.now().astimezone() + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")
    for when in (["--duration", "0.05"], ["--expiry", soon]):
        refused = shell.run("condor_annex", "extend", "--annex-name", "soon", *when, "--shorten", "--yes", env=env)
        assert refused.returncode == 2, refused.output
        assert "less than 10 minutes from now" in refused.stderr, refused.stderr
        assert "condor_annex terminate --annex-name soon" in refused.stderr, refused.stderr
        assert "boot and join" not in refused.stderr
    # A launch that short is still told why: its instances could not boot in time.
    new = launch(shell, env, "brief", 1, 0.05)
    assert new.returncode == 2 and "boot and join the pool" in new.stderr, new.output
