"""`annex-admin build-image` through the installed console script, against the emulator.

The emulator runs no instance: a thread here plays the builder's part once the command has
launched it (tests/image_support/builder.py: the report PUT to the presigned URL in the builder's
user data, then a stop), as the real builder does at the end of its build. Everything else is the
command's own work, in its own process.
"""

from __future__ import annotations

import json

from annex_admin.image import built_images
from annex_admin.remembered import current_choices
from annex_common.aws import make_clients
from templates import contract
from tests import emulator as emu
from tests.flows import PROJECT, USER, record_pool
from tests.image_support.builder import FakeBuilder, VERSION, live_builders

STACK = contract.DEFAULT_STACK_NAME


def test_build_image_leaves_one_tagged_image_as_the_default_and_a_launch_uses_it(shell, aws):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    record_pool(make_clients(region=emu.REGION))  # as `annex-admin pool set` records it
    bundle = shell.home / "b.toml"
    assert shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                     "--output", str(bundle)).returncode == 0

    dry = shell.run("annex-admin", "build-image", "--dry-run")
    assert dry.returncode == 0, dry.output
    assert "The most it can cost: 1 x" in dry.stdout and "Dry run: nothing was launched" in dry.stdout
    clients = make_clients(region=emu.REGION)
    assert live_builders(clients) == []

    builder = FakeBuilder()
    watcher = builder.in_background(timeout=240)
    built = shell.run("annex-admin", "build-image", "--yes", timeout=300)
    watcher.join(timeout=5)
    assert built.returncode == 0, built.output
    assert "is the default of stack HTCondorAnnex" in built.stdout and f"HTCondor {VERSION}" in built.stdout
    # Progress with the elapsed time, step by step, on stderr.
    for words in ("Launching the builder", "installing HTCondor 24.0", "has reported", "is available", "Terminating the builder",
                  "UPDATE_COMPLETE"):
        assert any(words in line and " s  " in line for line in built.stderr.splitlines()), words

    images, snapshots = built_images(clients, STACK)
    assert len(images) == 1 and snapshots
    image = images[0]
    assert image.tags[contract.TAG_HTCONDOR_VERSION] == VERSION and image.tags[contract.TAG_STACK] == STACK
    assert current_choices(clients, STACK).image_id == image.image_id
    # Nothing else running: the builder is gone, and no other instance was started.
    assert live_builders(clients) == [] and len(builder.played) == 1
    live = clients.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
    assert live["Reservations"] == []

    check = shell.run("annex-admin", "check-setup", "--output", "json")
    item = next(c for c in json.loads(check.stdout)["checks"] if c["name"] == "image")
    assert item["ok"] and not item["warning"] and "built by build-image" in item["detail"]

    # A launch after it uses the built image.
    launched = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "3", "--instances", "2", "--yes",
                         env={"CONDOR_ANNEX_CREDENTIALS": str(bundle)})
    assert launched.returncode == 0, launched.output
    running = clients.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert {i["ImageId"] for r in running["Reservations"] for i in r["Instances"]} == {image.image_id}

    preview = shell.run("annex-admin", "teardown", "--dry-run")
    assert preview.returncode == 0 and f"would remove image {image.image_id}" in preview.stdout
    assert built_images(clients, STACK)[0] == images  # the dry run removed nothing


def test_build_image_with_a_bad_series_is_bad_input_and_asks_aws_nothing(shell, aws):
    before = aws.aws_requests()
    result = shell.run("annex-admin", "build-image", "--htcondor-series", "24", "--yes")
    assert result.returncode == 2, result.output
    assert "not an HTCondor series" in result.stderr and "Next:" in result.stderr
    assert aws.aws_requests() == before


def test_build_image_without_a_stack_says_to_run_setup(shell, aws):
    result = shell.run("annex-admin", "build-image", "--yes")
    assert result.returncode == 2, result.output  # a stack that is not there: bad input, nothing changed
    assert "annex-admin setup" in result.stderr


def test_build_image_of_a_series_htcondor_does_not_have_is_bad_input_even_in_a_dry_run(shell, aws):
    before = aws.aws_requests()
    result = shell.run("annex-admin", "build-image", "--dry-run", "--htcondor-series", "99.x")
    assert result.returncode == 2, result.output
    assert "HTCondor has no series 99.x" in result.stderr and "24.0, 24.x, 25.0, 25.x" in result.stderr
    assert aws.aws_requests() == before
