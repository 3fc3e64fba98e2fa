"""Output a person reads right and a script can parse: the plan's wording, whole tables in pipes."""

from __future__ import annotations

import re

from tests.e2e.test_scientist_flow import live_instances, setup_region_and_bundle
from tests.flows import COLLECTOR, PROJECT

LONG_NAME = "a-rather-long-annex-name-for-the-thesis-deadline-in-december-x"  # 63 characters, the most allowed


def test_the_plan_counts_the_annex_not_each_type(shell):
    env = {"CONDOR_ANNEX_CREDENTIALS": setup_region_and_bundle(shell)}
    result = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", "16", "--dry-run", env=env)
    assert result.returncode == 0, result.output
    assert "16 instances, from m7i.large / m6i.large / m5.large (on-demand)" in result.stdout
    assert "16 ×" not in result.stdout
    pool_row = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["pool"])
    assert pool_row.count(COLLECTOR) == 1, pool_row  # the pool is named once
    one = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", "1",
                    "--instance-type", "m5.large", "--dry-run", env=env)
    assert "1 instance of m5.large (on-demand)" in one.stdout, one.output


def test_status_written_to_a_pipe_never_cuts_an_id_or_a_name(shell):
    env = {"CONDOR_ANNEX_CREDENTIALS": setup_region_and_bundle(shell)}
    launched = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", "3",
                         "--annex-name", LONG_NAME, "--yes", env=env)
    assert launched.returncode == 0, launched.output
    # Not a terminal (the output is a pipe) and no COLUMNS: rich would assume 80 columns.
    for columns in ({"COLUMNS": ""}, {"COLUMNS": "40"}):
        per_annex = shell.run("condor_annex", "status", env={**env, **columns})
        assert "…" not in per_annex.stdout
        assert [line for line in per_annex.stdout.splitlines() if LONG_NAME in line.split()]
        status = shell.run("condor_annex", "status", "--instances", env={**env, **columns})
        assert status.returncode == 0, status.output
        assert "…" not in status.stdout
        rows = [line for line in status.stdout.splitlines() if re.search(r"\bi-[0-9a-f]", line)]
        ids = {i["InstanceId"] for i in live_instances()}
        assert len(rows) == len(ids) == 3
        for line in rows:
            assert LONG_NAME in line.split()
            assert set(line.split()) & ids


def test_admin_tables_in_a_pipe_are_whole(shell):
    result = shell.run("annex-admin", "setup", "--yes", env={"COLUMNS": ""})
    assert result.returncode == 0, result.output
    assert "…" not in result.stdout
    policy = next(line for line in result.stdout.splitlines() if "ScientistPolicyArn" in line)
    assert re.search(r"arn:aws:iam::\d+:policy/condor-annex/HTCondorAnnex-scientist-us-east-1(\s|$)", policy)
