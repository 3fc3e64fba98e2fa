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
