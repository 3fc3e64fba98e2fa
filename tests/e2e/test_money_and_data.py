"""Mistakes that cost money or data: a mistyped annex name."""

from __future__ import annotations

import json

from tests.flows import PROJECT, USER


def region_and_bundle(shell, *caps: str) -> dict[str, str]:
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    bundle = shell.home / "b.toml"
    issued = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                       "--output", str(bundle), *caps)
    assert issued.returncode == 0, issued.output
    return {"CONDOR_ANNEX_CREDENTIALS": str(bundle)}


def launch(shell, env, name: str, count: int, hours: float, *extra: str):
    return shell.run("condor_annex", "--project-id", PROJECT, "--duration", str(hours), "--instances", str(count),
                     "--annex-name", name, "--yes", *extra, env=env)


def status_rows(shell, env) -> list[dict]:
    result = shell.run("condor_annex", "status", "--output", "json", env=env)
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)


def live_of(rows: list[dict], annex: str) -> list[str]:
    return sorted(r["instance_id"] for r in rows if r["annex_name"] == annex and r["state"] in ("pending", "running"))


# -- 1. a mistyped annex name ----------------------------------------------------------------


def test_a_mistyped_annex_name_is_bad_input_naming_the_closest_live_annex(shell):
    env = region_and_bundle(shell)
    assert launch(shell, env, "deadline", 3, 5).returncode == 0
    before = live_of(status_rows(shell, env), "deadline")

    typo = shell.run("condor_annex", "terminate", "--annex-name", "deadlin", "--yes", env=env)
    assert typo.returncode == 2, typo.output
    assert "already gone" not in typo.output
    assert "deadlin" in typo.stderr and "--annex-name deadline" in typo.stderr
    assert live_of(status_rows(shell, env), "deadline") == before  # nothing was ended

    # Asked without --yes, the same: nothing to confirm, exit 2.
    assert shell.run("condor_annex", "terminate", "--annex-name", "deadlin", env=env).returncode == 2
    unknown = shell.run("condor_annex", "terminate", "--annex-name", "zzz-never", "--yes", env=env)
    assert unknown.returncode == 2 and "zzz-never" in unknown.stderr, unknown.output

    ended = shell.run("condor_annex", "terminate", "--annex-name", "deadline", "--yes", env=env)
    assert ended.returncode == 0 and "Terminated 3 instance(s)" in ended.stdout, ended.output
    # An annex the broker launched and ended is "already gone", not unknown.
    again = shell.run("condor_annex", "terminate", "--annex-name", "deadline", "--yes", env=env)
    assert again.returncode == 0 and "already gone" in again.stdout, again.output
    # With no live annex left, a name it never knew is still bad input.
    assert shell.run("condor_annex", "terminate", "--annex-name", "deadlin", "--yes", env=env).returncode == 2
