"""`annex-admin build-image` through its core (annex_admin.image) against the emulator.

The emulator runs no instance: the builder's part (report, then stop) is played by
tests/image_support/builder.py through the same URL and API the real builder uses; the builder's
script runs for real in bash in test_image_builder.py. The emulator makes images "available" at
once and never fails one, so the image's own states are not exercised here; a failure at the step
that waits for them is injected on the tool's client instead.
"""

from __future__ import annotations

import pytest

from annex_admin import image
from annex_admin.remembered import current_choices
from templates import contract
from tests.flows import deploy_stack
from tests.image_support.builder import FakeBuilder, VERSION

FAST = image.Timing(poll_seconds=0.05, build_timeout=20, image_timeout=20, report_grace=1.0, heartbeat_seconds=60)


def test_smoke(clients):
    deploy_stack(clients)
    plan = image.plan_build(clients, contract.DEFAULT_STACK_NAME, "24.0")
    builder = FakeBuilder()
    clients.ec2.meta.events.register("before-call.ec2.DescribeInstances", builder.hook)
    lines = []
    result = image.execute_build(clients, plan, lines.append, FAST)
    print("\n".join(lines))
    assert result.htcondor_version == VERSION
    assert current_choices(clients, contract.DEFAULT_STACK_NAME).image_id == result.image_id
