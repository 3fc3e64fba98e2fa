"""Mistakes that cost money or data: a mistyped annex name, Ctrl-C during a launch, an extension
that commits money, revoking a user condor-annex never issued, a project's totals."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

from annex_common.aws import make_clients
from tests.e2e.test_scientist_answers import launch, region_and_bundle
from tests.flows import PROJECT, USER, assert_speaks_plainly, console_script


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


# -- 2. Ctrl-C during a launch -----------------------------------------------------------------


def registry_requests() -> list[dict]:
    """The broker's request records, read with the administrator's keys."""
    clients = make_clients(region="us-east-1")
    outputs = clients.cloudformation.describe_stacks(StackName="HTCondorAnnex")["Stacks"][0]["Outputs"]
    table = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "RegistryTable")
    items = clients.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return [i for i in items if i["sk"]["S"].startswith("request#")]


def wait_for(check, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_ctrl_c_during_a_launch_says_it_may_have_gone_through_and_the_same_command_gets_its_answer(shell, aws):
    env = {**shell.env, **region_and_bundle(shell)}
    # The default, time-stamped annex name: a second run names another annex unless it reuses the request.
    command = [console_script("condor_annex"), "--project-id", PROJECT, "--duration", "5", "--instances", "3", "--yes"]
    # Ctrl-C once the broker has the launch request and the client waits for its answer: the
    # moment a person presses it after answering yes. The broker finishes the launch on its side.
    code, stderr = interrupt_once_sent(shell, aws, env, *command[1:], invokes=2)  # plan, then launch
    assert code == 130, stderr
    assert_speaks_plainly(stderr)
    assert "nothing further was started" not in stderr
    assert "may have" in stderr and "condor_annex status" in stderr, stderr

    first = status_rows(shell, env)
    annexes = {r["annex_name"] for r in first}
    assert len(first) == 3 and len(annexes) == 1

    again = shell.run("condor_annex", *command[1:], env=env)
    assert again.returncode == 0, again.output
    assert "Launched 3 of 3" in again.stdout and "earlier" in again.output, again.output
    after = status_rows(shell, env)
    assert sorted(r["instance_id"] for r in after) == sorted(r["instance_id"] for r in first)  # launched once
    assert len(registry_requests()) == 1
    # Answered: the machine no longer keeps the request.
    state = shell.home / ".local" / "state" / "condor-annex"
    assert not [p for p in state.rglob("*") if p.is_file()]


def interrupt_once_sent(shell, emulator, env, *args: str, invokes: int) -> tuple[int, str]:
    """Run condor_annex with ``args`` and press Ctrl-C once the emulator has its ``invokes``-th
    broker Invoke (the request that changes things), holding the emulator still meanwhile, so that
    the broker cannot answer first however quick it is. Returns once the broker has finished it."""
    records = len(registry_requests())
    offset = emulator.log_offset()

    def sent() -> bool:
        with open(emulator.log_path, "rb") as log:
            log.seek(offset)
            return len(re.findall(rb" api-call \S+ lambda Invoke$", log.read(), re.M)) >= invokes

    client = subprocess.Popen([console_script("condor_annex"), *args], env=env, cwd=shell.home,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(sent, "the broker's Invoke")
        emulator.process.send_signal(signal.SIGSTOP)
        try:
            client.send_signal(signal.SIGINT)
            client.wait(timeout=60)
        finally:
            emulator.process.send_signal(signal.SIGCONT)
        _stdout, stderr = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    # The broker carries the request out whatever happened to the command.
    wait_for(lambda: (found := registry_requests()) and len(found) > records
             and all(i["state"]["S"] == "done" for i in found), "the request to finish")
    return client.returncode, stderr


def kept_requests(shell) -> list:
    state = shell.home / ".local" / "state" / "condor-annex"
    return [p for p in state.rglob("*.json")] if state.exists() else []


def test_an_interrupted_launch_whose_annex_has_ended_is_never_reported_as_running(shell, aws):
    env = {**shell.env, **region_and_bundle(shell)}
    ec2 = make_clients(region="us-east-1").ec2  # the administrator's keys: the lease "ends" here
    for name in ("lapsed", "ended"):
        command = ["--project-id", PROJECT, "--duration", "5", "--instances", "1", "--annex-name", name, "--yes"]
        code, stderr = interrupt_once_sent(shell, aws, env, *command, invokes=2)  # plan, then launch
        assert code == 130, stderr
        assert kept_requests(shell)
        (launched,) = live_of(status_rows(shell, env), name)
        if name == "lapsed":
            ec2.terminate_instances(InstanceIds=[launched])  # as the enforcer does at the lease end
            again = shell.run("condor_annex", *command, env=env)
            assert again.returncode == 1, again.output
            assert "Launched" not in again.stdout and "Watch it" not in again.stdout, again.output
            assert "was carried out and has since ended" in again.stderr, again.stderr
            assert "Run the same command again to launch anew" in again.stderr, again.stderr
        else:
            ended = shell.run("condor_annex", "terminate", "--annex-name", name, "--yes", env=env)
            assert ended.returncode == 0, ended.output
        assert not kept_requests(shell)  # forgotten: the same command is a new launch
        anew = shell.run("condor_annex", *command, env=env)
        assert anew.returncode == 0 and "Launched 1 of 1" in anew.stdout, anew.output
        assert "earlier" not in anew.output
        assert live_of(status_rows(shell, env), name) != [launched]


def test_ctrl_c_during_extend_or_terminate_says_it_may_have_gone_through(shell, aws):
    env = {**shell.env, **region_and_bundle(shell)}
    assert launch(shell, env, "held", 1, 5).returncode == 0
    for args, invokes in ((["extend", "--annex-name", "held", "--duration", "8", "--yes"], 2),  # plan, then extend
                          (["terminate", "--annex-name", "held", "--yes"], 1)):
        code, stderr = interrupt_once_sent(shell, aws, env, *args, invokes=invokes)
        assert code == 130, stderr
        assert_speaks_plainly(stderr)
        assert "nothing further was started" not in stderr, stderr
        assert "may have gone through" in stderr and "condor_annex status --annex-name held" in stderr, stderr


# -- 3. extend shows its plan and asks ---------------------------------------------------------


def test_extend_shows_its_plan_and_asks_as_launch_does(shell):
    env = region_and_bundle(shell, "--max-lease-hours", "480", "--max-spend", "1000")
    assert launch(shell, env, "grow", 2, 5).returncode == 0
    ends = {r["expiry"] for r in status_rows(shell, env)}

    unasked = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "400", env=env)
    assert unasked.returncode == 2, unasked.output
    assert "not confirmed" in unasked.stderr
    for shown in ("Extend annex grow", "lease ends", "->", "adds", "most it costs", "project caps"):
        assert shown in unasked.output, (shown, unasked.output)
    declined = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "400", env=env, answer="n")
    assert declined.returncode == 2, declined.output
    dry = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "400", "--dry-run", env=env)
    assert dry.returncode == 0 and "Dry run" in dry.stdout and "project caps" in dry.stdout, dry.output
    planned = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "400", "--dry-run",
                        "--output", "json", env=env)
    document = json.loads(planned.stdout)
    assert document["dry_run"] is True and document["adds_usd"] > 0 and document["old_expiries"] == sorted(ends)
    assert {r["expiry"] for r in status_rows(shell, env)} == ends  # nothing moved

    agreed = shell.run("condor_annex", "extend", "--annex-name", "grow", "--duration", "400", env=env, answer="y")
    assert agreed.returncode == 0, agreed.output
    assert {r["expiry"] for r in status_rows(shell, env)} != ends


# -- 4. revoke-credentials of a user it never issued --------------------------------------------


def test_revoke_credentials_refuses_a_user_condor_annex_did_not_make(shell):
    region_and_bundle(shell)
    iam = make_clients(region="us-east-1").iam
    iam.create_user(UserName="ops-robot")
    key = iam.create_access_key(UserName="ops-robot")["AccessKey"]["AccessKeyId"]
    refused = shell.run("annex-admin", "revoke-credentials", "--user", "ops-robot")
    assert refused.returncode == 2, refused.output
    assert "ops-robot" in refused.stderr and "not created by condor-annex" in refused.stderr
    keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName="ops-robot")["AccessKeyMetadata"]]
    assert keys == [key]
    # Hers are revoked as before.
    revoked = shell.run("annex-admin", "revoke-credentials", "--user", USER, "--yes")
    assert revoked.returncode == 0, revoked.output
    assert iam.list_access_keys(UserName=USER)["AccessKeyMetadata"] == []


# -- 5. status of one annex: the project's totals are the whole project's ------------------------

TOTALS = re.compile(r"Project \S+: (\d+) live instance\(s\) of 32 allowed; .*can still cost \$([\d,.]+) of")


def test_status_of_one_annex_shows_the_whole_projects_totals(shell):
    env = region_and_bundle(shell)
    assert launch(shell, env, "big", 6, 10).returncode == 0
    assert launch(shell, env, "small", 2, 5).returncode == 0
    whole = shell.run("condor_annex", "status", env=env)
    one = shell.run("condor_annex", "status", "--annex-name", "small", env=env)
    assert whole.returncode == 0 and one.returncode == 0, one.output
    assert "big" not in one.stdout.split("Project ")[0]  # the table is of the one annex
    totals_whole, totals_one = TOTALS.search(whole.stdout), TOTALS.search(one.stdout)
    assert totals_whole and totals_one, one.stdout
    assert totals_one.group(1) == totals_whole.group(1) == "8"
    can_still = [float(m.group(2).replace(",", "")) for m in (totals_whole, totals_one)]
    assert abs(can_still[0] - can_still[1]) < 0.05, can_still
