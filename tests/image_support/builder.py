"""Plays the builder instance of `annex-admin build-image` in the emulator, where no instance runs.

On AWS the builder runs its user data (templates/node_bootstrap.py's builder loader, then the
bootstrap's build mode), reports with a PUT to the presigned URL in that user data, and powers
off, which stops it (the launch asks for stop). Here: the user data is read back from EC2, the
report is PUT to that very URL over HTTP (the emulator's S3 checks nothing of the signature, AWS
does), and the instance is stopped through the API. The builder script itself runs for real, in
bash, in tests/functional/test_image_builder.py.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from annex_common.aws import AwsClients, make_clients
from templates import contract
from tests import emulator as emu

VERSION = "24.0.3"


def live_builders(clients: AwsClients) -> list[str]:
    answer = clients.ec2.describe_instances(Filters=[
        {"Name": "tag-key", "Values": [contract.TAG_IMAGE_BUILD]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])
    return [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]


def user_data_of(clients: AwsClients, instance_id: str) -> str:
    value = clients.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def result_url(user_data: str) -> str:
    found = re.search(r"^ANNEX_BUILD_RESULT_URL='([^']+)'$", user_data, re.MULTILINE)
    assert found, user_data
    return found.group(1)


def report(url: str, body: str) -> None:
    # As curl -T sends it (urllib would otherwise call it a form, and the emulator store nothing).
    request = urllib.request.Request(
        url, data=body.encode(), method="PUT", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


@dataclass
class FakeBuilder:
    """What the builder does on AWS once its build ends: report, then stop."""

    status: str = "ok"
    version: str = VERSION
    stop: bool = True
    played: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._clients = make_clients(region=emu.REGION)  # its own session: no tool's hooks

    def play(self, instance_id: str) -> None:
        if instance_id in self.played:
            return
        self.played.append(instance_id)
        body = f"status={self.status}\n"
        body += f"htcondor_version={self.version}\nhtcondor_series=24.0\n" if self.status == "ok" else "reason=dnf failed\n"
        report(result_url(user_data_of(self._clients, instance_id)), body)
        if self.stop:
            self._clients.ec2.stop_instances(InstanceIds=[instance_id])

    def play_all(self) -> int:
        builders = live_builders(self._clients)
        for builder in builders:
            self.play(builder)
        return len(builders)

    def hook(self, **_: object) -> None:
        """A botocore `before-call.ec2.DescribeInstances` handler: the build ends as soon as the
        tool first looks at the builder."""
        self.play_all()

    def in_background(self, timeout: float = 120) -> threading.Thread:
        """Watches the emulator for a builder (another process launches it) and plays it once."""

        def watch() -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.play_all():
                    return
                time.sleep(0.3)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread
