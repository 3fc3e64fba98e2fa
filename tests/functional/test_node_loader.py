"""The launch templates' user data: a loader that fetches the node bootstrap from the stack's code
bucket, runs it only if its SHA-256 is the one the template names, and powers off otherwise.

Run for real with bash and the ``aws`` CLI against the suite's emulator, in a temporary root (the
loader honours the bootstrap's ANNEX_ROOT and ANNEX_POWEROFF_CMD test hooks).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from templates import node_bootstrap
from templates.settings import StackSettings
from templates.stack import build_template
from tests import emulator as emu
from tests.bootstrap_support.imds import FakeImds
from tests.bootstrap_support.node import SCRIPT, Node, make_node, mode_of

CONFIG_BUCKET = "annex-config-loader-test"
CODE_BUCKET = "annex-code-loader-test"
EC2_USER_DATA_LIMIT = 16384  # bytes, before base64


def user_data(region: str, bucket: str = CONFIG_BUCKET, code_bucket: str = CODE_BUCKET) -> str:
    """The launch templates' user data as the region stack builds it, references resolved."""
    settings = StackSettings(
        region=region, image_id="ami-0123456789abcdef0",
        availability_zones=(f"{region}a", f"{region}b"), code_key="functions/annex_cloud-test.zip",
    )
    resources = build_template(settings).to_dict()["Resources"]
    datas = {
        json.dumps(r["Properties"]["LaunchTemplateData"]["UserData"])
        for r in resources.values() if r["Type"] == "AWS::EC2::LaunchTemplate"
    }
    assert len(datas) == 1
    values = {"ConfigBucket": bucket, "AWS::Region": region}

    def resolved(part: object) -> str:
        if isinstance(part, str):
            return part
        assert isinstance(part, dict)
        if "Ref" in part:
            return values[part["Ref"]]
        assert "${AWS::AccountId}" in part["Fn::Sub"]  # the code bucket, named by account and region
        return code_bucket

    return "".join(resolved(p) for p in json.loads(datas.pop())["Fn::Base64"]["Fn::Join"][1])


def test_user_data_is_small_clean_and_names_the_packaged_bootstrap(tmp_path: Path) -> None:
    text = user_data("ap-southeast-2", "b" * 63, "c" * 63)
    assert len(text.encode()) <= EC2_USER_DATA_LIMIT // 8  # room to spare, whatever the script's size
    artifact = node_bootstrap.bootstrap_artifact()
    assert artifact.body == SCRIPT.read_bytes()
    assert f"s3://{'c' * 63}/{artifact.key}" in text and f"digest='{artifact.digest}'" in text
    script = tmp_path / "user-data"
    script.write_text(text)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def node(tmp_path: Path, sandbox_env: dict[str, str], clients) -> Node:
    imds = FakeImds("i-0123456789abcdef0", {}).start()
    clients.s3.create_bucket(Bucket=CODE_BUCKET)
    clients.s3.create_bucket(Bucket=CONFIG_BUCKET)
    yield make_node(tmp_path, imds, sandbox_env, CONFIG_BUCKET, emu.REGION)
    imds.stop()


def run_user_data(node: Node, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "user-data"
    script.write_text(user_data(emu.REGION))
    return subprocess.run(["bash", str(script)], env=node.env(), capture_output=True, text=True, timeout=60)


def test_the_loader_installs_and_runs_the_published_bootstrap(node: Node, tmp_path: Path, clients) -> None:
    artifact = node_bootstrap.bootstrap_artifact()
    clients.s3.put_object(Bucket=CODE_BUCKET, Key=artifact.key, Body=artifact.body)
    result = run_user_data(node, tmp_path)
    installed = node.path(node_bootstrap.INSTALL_PATH)
    assert installed.read_bytes() == artifact.body and mode_of(installed) == 0o755
    # The bootstrap ran (its own log), and, with no tags in the metadata service, failed closed.
    assert "condor-annex boot: starting" in result.stderr
    assert node.poweroffs() == [""]


def test_a_replaced_bootstrap_is_never_run(node: Node, tmp_path: Path, clients) -> None:
    artifact = node_bootstrap.bootstrap_artifact()
    tampered = artifact.body.replace(b"set -euo pipefail", b"set -euo pipefail\ntouch /tmp/owned", 1)
    clients.s3.put_object(Bucket=CODE_BUCKET, Key=artifact.key, Body=tampered)
    result = run_user_data(node, tmp_path)
    assert "no bootstrap with the SHA-256" in result.stderr
    assert "condor-annex boot" not in result.stderr
    assert not node.path(node_bootstrap.INSTALL_PATH).exists()
    assert not node.path(node_bootstrap.INSTALL_PATH + ".part").exists()
    assert node.poweroffs() == [""]
