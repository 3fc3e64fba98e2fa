"""--expiry reads the times the tool prints, and refuses in words what names no single moment."""

from __future__ import annotations

import re

import pytest

from tests.flows import PROJECT, USER

BERLIN = {"TZ": "Europe/Berlin"}  # CET in winter, CEST in summer: a zone with gaps and folds
SHOWN = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}) (CET|CEST) \((\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC\)")


def dry_run(shell, env, *when: str):
    return shell.run("condor_annex", "--project-id", PROJECT, "--instances", "1", "--dry-run", *when, env=env)


def test_the_lease_end_as_the_plan_prints_it_is_read_back(shell):
    assert shell.setup_region().returncode == 0
    bundle = shell.home / "b.toml"
    assert shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                     "--output", str(bundle)).returncode == 0
    env = {"CONDOR_ANNEX_CREDENTIALS": str(bundle), **BERLIN}
    planned = dry_run(shell, env, "--duration", "30")
    assert planned.returncode == 0, planned.output
    local, zone, utc = SHOWN.search(planned.stdout).groups()
    for written in (f"{local} {zone}", f"{utc} UTC", f"{utc}Z", f"{utc} Z", local):
        again = dry_run(shell, env, "--expiry", written)
        assert again.returncode == 0, (written, again.output)
        assert SHOWN.search(again.stdout).groups() == (local, zone, utc), (written, again.stdout)


@pytest.mark.parametrize("written, said", [
    ("2027-02-30 10:00", "names no such date"),
    ("2027-01-07 25:00", "names no such time of day"),
    ("2027-01-07 10:00:30", "has seconds"),
    ("2027-03-28 02:30", "the local time 2027-03-28 02:30 does not exist"),  # clocks go forward
    ("2027-10-31 02:30", "the local time 2027-10-31 02:30 happens twice"),  # clocks go back
    ("2027-01-07 10:00 EST", "names the zone EST"),
])
def test_an_expiry_that_names_no_single_moment_is_refused_in_words(shell, aws, written, said):
    before = aws.aws_requests()
    result = dry_run(shell, BERLIN, "--expiry", written)
    assert result.returncode == 2, result.output
    assert said in result.stderr and "cannot read the expiry" not in result.stderr, result.stderr
    assert aws.aws_requests() == before


def test_a_time_that_happens_twice_is_read_with_its_zone(shell):
    result = dry_run(shell, BERLIN, "--expiry", "2027-10-31 02:30")
    assert "Say which: --expiry '2027-10-31 02:30 CEST' or '2027-10-31 02:30 CET'." in result.stderr
    for zone in ("CEST", "CET"):
        named = dry_run(shell, BERLIN, "--expiry", f"2027-10-31 02:30 {zone}")
        assert "happens twice" not in named.stderr and "credentials bundle" in named.stderr  # read; then the bundle is missing
