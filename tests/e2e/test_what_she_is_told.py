"""What the scientist is told is what is true: a full cap, launch JSON against the plan's table,
status of names and totals, the extend plan's lease against the cap, a shortening to minutes."""

from __future__ import annotations

import json
import re

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
