"""Every kind of bad input: one clear message, exit status 2, and nothing new in AWS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from annex_common.aws import make_clients
from tests import emulator as emu
from tests.flows import (
    ANNEX_KEY_FILE,
    COLLECTOR,
    PROJECT,
    TRUST_DOMAIN,
    USER,
    assert_speaks_plainly,
    console_script,
    write_pool,
    write_private,
)

SEED_EXPIRY = "2015-01-01 10:00"  # the seed's own date, long past


@dataclass
class World:
    env: dict[str, str]
    home: Path
    bundle: Path
    existing_annex: str
    bucket: str


@pytest.fixture(scope="module")
def world(emulator, tmp_path_factory) -> World:
    """One stack, one bundle and one live annex, shared by every case (each case changes nothing)."""
    emulator.reset()
    home = tmp_path_factory.mktemp("scientist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emu.sandbox_environment(emulator.url, home))
    env.update(HOME=str(home), COLUMNS="200", CONDOR_CONFIG=str(write_pool(home / "pool").condor_config))
    bundle = home / "b.toml"

    def run(*args: str) -> None:
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=home)
        assert result.returncode == 0, result.stdout + result.stderr

    run(console_script("annex-admin"), "setup", "--yes")
    key_file = home / "ANNEX"
    write_private(key_file, ANNEX_KEY_FILE)
    run(console_script("annex-admin"), "pool", "set", "--collector", COLLECTOR, "--trust-domain", TRUST_DOMAIN,
        "--signing-key-file", str(key_file), "--yes")
    key_file.unlink()
    run(console_script("annex-admin"), "issue-credentials", "--project-id", PROJECT, "--user", USER,
        "--output", str(bundle), "--max-instances", "8", "--max-lease-hours", "72", "--allow-own-pool-key")
    env["CONDOR_ANNEX_CREDENTIALS"] = str(bundle)
    run(console_script("condor_annex"), "--project-id", PROJECT, "--duration", "2", "--instances", "2",
        "--annex-name", "existing", "--yes")
    outputs = make_clients(region="us-east-1").cloudformation.describe_stacks(StackName="HTCondorAnnex")["Stacks"][0]["Outputs"]
    bucket = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "ConfigBucket")
    return World(env, home, bundle, "existing", bucket)


def aws_snapshot(bucket: str) -> tuple[int, int]:
    clients = make_clients(region="us-east-1")
    instances = sum(
        len(r["Instances"])
        for page in clients.ec2.get_paginator("describe_instances").paginate()
        for r in page["Reservations"]
    )
    objects = sum(page.get("KeyCount", 0) for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    return instances, objects


@dataclass
class Case:
    args: list[str]
    expect: str  # a phrase the one message must contain
    env: dict[str, str | None] = field(default_factory=dict)
    prepare: Callable[[World], dict[str, str]] | None = None


def launch(*extra: str, expiry: str | None = None, duration: str | None = "24", count: str = "2") -> list[str]:
    args = ["--project-id", PROJECT, "--instances", count, "--yes", *extra]
    if expiry is not None:
        args += ["--expiry", expiry]
    elif duration is not None:
        args += ["--duration", duration]
    return args


def bundle_copy(mode: int, content: str | None = None) -> Callable[[World], dict[str, str]]:
    def prepare(world: World) -> dict[str, str]:
        target = world.home / f"bundle-{mode:o}-{abs(hash(content))}.toml"
        if content is None:
            shutil.copy(world.bundle, target)
        else:
            target.write_text(content)
        os.chmod(target, mode)
        return {"CONDOR_ANNEX_CREDENTIALS": str(target)}

    return prepare


def other_region_bundle(world: World) -> dict[str, str]:
    target = world.home / "west.toml"
    target.write_text(world.bundle.read_text().replace('region = "us-east-1"', 'region = "us-west-2"'))
    os.chmod(target, 0o600)
    return {"CONDOR_ANNEX_CREDENTIALS": str(target)}


def broken_pool(text: str) -> Callable[[World], dict[str, str]]:
    def prepare(world: World) -> dict[str, str]:
        path = world.home / f"pool-{abs(hash(text))}.config"
        path.write_text(text)
        return {"CONDOR_CONFIG": str(path)}

    return prepare


def pool_without_security(world: World) -> dict[str, str]:
    path = world.home / "pool-nosec.config"
    path.write_text(
        "COLLECTOR_HOST = cm.pool.example\nTRUST_DOMAIN = pool.example\n"
        f"SEC_PASSWORD_FILE = {world.home}/absent-password\n"
        f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {world.home}/absent-key\n"
    )
    return {"CONDOR_CONFIG": str(path)}


CASES = {
    "expiry-in-the-past": Case(launch(expiry=SEED_EXPIRY), "in the past"),
    "expiry-unparsable": Case(launch(expiry="next tuesday"), "cannot read the expiry"),
    "expiry-beyond-lease-cap": Case(launch(duration="100"), "lease cap"),
    "duration-negative": Case(launch(duration="-3"), "positive number of hours"),
    # One rule for a lease end absurdly far away, typed either way (the broker refuses it too).
    "expiry-far-beyond-reach": Case(launch("--dry-run", expiry="9999-12-31 23:59"), "more than ten years from now"),
    "duration-far-beyond-reach": Case(launch(duration="1e300"), "more than ten years from now"),
    "expiry-and-duration": Case(launch("--expiry", "2030-01-01 00:00", duration="5"), "exactly one"),
    "zero-instances": Case(launch(count="0"), "not a positive whole number"),
    "negative-instances": Case(launch(count="-4"), "not a positive whole number"),
    "non-numeric-instances": Case(launch(count="lots"), "Error: --instances 'lots' is not a whole number"),
    "non-numeric-duration": Case(launch(duration="soon"), "Error: --duration 'soon' is not a number"),
    "too-many-instances": Case(launch(count="100000"), "at most 10,000 instances per annex"),
    "over-instance-cap": Case(launch(count="9"), "instance cap"),
    "over-cap-with-live-annex": Case(launch(count="7"), "instance cap"),
    "project-not-covered": Case(["--project-id", "SomeoneElse", "--duration", "5", "--instances", "1", "--yes"], "do not cover project"),
    "bundle-missing": Case(launch(), "$CONDOR_ANNEX_CREDENTIALS names it, and there is no such file",
                           env={"CONDOR_ANNEX_CREDENTIALS": "/nonexistent/b.toml"}),
    "bundle-option-missing": Case(["status", "--credentials", "/nonexistent/c.toml"], "--credentials names it"),
    "bundle-is-a-folder": Case(launch(), "not a regular file", env={"CONDOR_ANNEX_CREDENTIALS": "/tmp"}),
    "bundle-malformed": Case(launch(), "not valid TOML", prepare=bundle_copy(0o600, "region = [unclosed\n")),
    "bundle-missing-keys": Case(launch(), "missing", prepare=bundle_copy(0o600, 'region = "us-east-1"\n')),
    "bundle-empty": Case(launch(), "Why: the file is empty", prepare=bundle_copy(0o600, "")),
    "bundle-blank": Case(["status"], "Why: the file is empty", prepare=bundle_copy(0o600, "\ufeff\n  \n")),
    "credentials-option-empty": Case(["status", "--credentials", ""], "Error: --credentials is empty"),
    "bundle-world-readable": Case(launch(), "readable by others", prepare=bundle_copy(0o644)),
    "bundle-group-readable": Case(launch(), "readable by others", prepare=bundle_copy(0o640)),
    # Her own pool (--own-pool, which her project may use here): its configuration and key are read.
    "condor-config-unset": Case(launch("--own-pool"), "CONDOR_CONFIG", env={"CONDOR_CONFIG": None}),
    "condor-config-missing": Case(launch("--own-pool"), "CONDOR_CONFIG", env={"CONDOR_CONFIG": "/nonexistent/condor_config"}),
    "condor-config-unparseable": Case(launch("--own-pool"), "", prepare=broken_pool("COLLECTOR_HOST = (\nif version >\n")),
    "no-pool-security-readable": Case(launch("--own-pool"), "", prepare=pool_without_security),
    "instance-type-not-offered": Case(launch("--instance-type", "p5.48xlarge"), "not offered"),
    "annex-name-in-use": Case(launch("--annex-name", "existing"), "already in use"),
    "annex-name-malformed": Case(launch("--annex-name", "bad name/../x"), "not allowed"),
    "idle-out-of-range": Case(launch("--idle", "0"), "out of range"),
    "extend-unknown-annex": Case(["extend", "--annex-name", "nope", "--duration", "5"], "no live annex"),
    "extend-beyond-cap": Case(["extend", "--annex-name", "existing", "--duration", "100"], "lease cap"),
    "terminate-bad-annex-name": Case(["terminate", "--annex-name", "no pe", "--yes"], "not allowed"),
    "terminate-mistyped-annex": Case(["terminate", "--annex-name", "existin", "--yes"], "--annex-name existing"),
    "terminate-unknown-annex": Case(["terminate", "--annex-name", "nope"], "no annex named nope"),
    "status-bad-output": Case(["status", "--output", "xml"], "Error: --output 'xml' is not one of 'table', 'json'"),
    "import-without-file": Case(["import-credentials"], "Error: FILE is missing"),
    "date-only-expiry": Case(["--project-id", PROJECT, "--instances", "1", "--expiry", "2026-12-04", "--yes"], "no time of day"),
    "no-stack-in-bundle-region": Case(launch(), "no condor-annex stack", prepare=other_region_bundle),
    "unknown-option": Case(["launch", "--frobnicate"], "No such option"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_exits_2_and_changes_nothing(world, case):
    env = dict(world.env)
    if case.prepare:
        env.update(case.prepare(world))
    for key, value in case.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    before = aws_snapshot(world.bucket)
    result = subprocess.run(
        [console_script("condor_annex"), *case.args],
        env=env, capture_output=True, text=True, timeout=120, cwd=world.home, stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert_speaks_plainly(output)
    assert case.expect in output, output
    for library_words in ("Value error", "Input should be", "{file}", "Try '"):
        assert library_words not in output, output
    assert aws_snapshot(world.bucket) == before


def test_a_dry_run_that_breaks_a_cap_shows_the_plan_and_the_cap_it_breaks(world):
    """Launch and extend alike: the plan with its figures, then the cap named (exit 2, nothing changed)."""
    before = aws_snapshot(world.bucket)

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([console_script("condor_annex"), *args], env=world.env, capture_output=True,
                                text=True, timeout=120, cwd=world.home, stdin=subprocess.DEVNULL)
        assert_speaks_plainly(result.stdout + result.stderr)
        return result

    over = run("--project-id", PROJECT, "--duration", "24", "--instances", "9", "--dry-run")
    assert over.returncode == 2, over.stdout + over.stderr
    assert "most it costs" in over.stdout and "11/8 instances" in over.stdout, over.stdout
    assert "instance cap of 8" in over.stderr
    scripted = run("--project-id", PROJECT, "--duration", "24", "--instances", "9", "--dry-run", "--output", "json")
    assert scripted.returncode == 2
    document = json.loads(scripted.stdout)
    assert document["count"] == 9 and "instance cap of 8" in document["breaks"][0]["what"]
    both = run("--project-id", PROJECT, "--duration", "100", "--instances", "9", "--dry-run")
    assert both.returncode == 2 and "lease cap of 72" in both.stderr and "instance cap of 8" in both.stderr
    longer = run("extend", "--annex-name", world.existing_annex, "--duration", "100", "--dry-run")
    assert longer.returncode == 2, longer.stdout + longer.stderr
    assert "lease ends" in longer.stdout and "project caps" in longer.stdout and "lease cap of 72" in longer.stderr
    assert aws_snapshot(world.bucket) == before
