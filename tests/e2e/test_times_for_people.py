"""Times for people are local with their zone, in plans, refusals, status and check-setup; JSON stays UTC."""

from __future__ import annotations

import json
import re

from tests.e2e.test_scientist_answers import launch, region_and_bundle

NEW_YORK = {"TZ": "America/New_York"}
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z")
LOCAL = r"\d{4}-\d\d-\d\d \d\d:\d\d E[SD]T"


def test_a_refusal_names_the_lease_end_in_her_local_time(shell):
    env = {**region_and_bundle(shell), **NEW_YORK}
    refused = launch(shell, env, "toolong", 2, 200)  # the default lease cap is 168 h
    assert refused.returncode == 2, refused.output
    assert "beyond the project's lease cap of 168 hours" in refused.stderr
    assert re.search(rf"the lease would end {LOCAL} \(\d{{4}}-\d\d-\d\d \d\d:\d\d UTC\)", refused.stderr), refused.stderr
    assert UTC_STAMP.search(refused.output) is None, refused.output


def test_status_shows_when_the_lease_ends_and_json_stays_utc(shell):
    env = {**region_and_bundle(shell), **NEW_YORK}
    assert launch(shell, env, "deadline", 2, 48).returncode == 0
    table = " ".join(shell.run("condor_annex", "status", env=env).stdout.split())
    assert re.search(rf"deadline │ 2 running │ \? │ {LOCAL} \(4[78]h\d\dm left\)", table), table
    instances = " ".join(shell.run("condor_annex", "status", "--instances", env=env).stdout.split())
    assert re.search(rf"{LOCAL} \(4[78]h\d\dm left\)", instances), instances
    rows = json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout)
    assert rows and all(UTC_STAMP.fullmatch(row["expiry"]) for row in rows)


def test_check_setup_says_the_last_sweep_in_local_time(shell):
    assert shell.setup_region().returncode == 0  # a pool recorded too: check-setup is then complete
    assert shell.run("annex-admin", "enforce").returncode == 0
    check = shell.run("annex-admin", "check-setup", env=NEW_YORK)
    table = " ".join(check.stdout.split())
    assert re.search(rf"enforcer sweeps ok last sweep {LOCAL}, [01] min ago", table), table
    assert re.search(rf"prices from .*, {LOCAL}\)", table), table
    assert UTC_STAMP.search(check.stdout) is None
    document = json.loads(shell.run("annex-admin", "check-setup", "--output", "json").stdout)
    assert document["complete"] is True
