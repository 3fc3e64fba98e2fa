"""Fixtures for the IAM policy tests: one deployed stack per module, read back from the emulator."""

from __future__ import annotations

from typing import Iterator

import boto3
import pytest

from tests import emulator as emu
from tests.policy.stack_under_test import DeployedStack, deploy


@pytest.fixture(scope="module")
def deployed(emulator: emu.Emulator) -> Iterator[DeployedStack]:
    """The real stack in a clean emulator, deployed once for the module (enforcement off)."""
    emulator.reset()
    try:
        yield deploy(boto3.session.Session(region_name=emu.REGION))
    finally:
        emulator.enforce_iam(False)
