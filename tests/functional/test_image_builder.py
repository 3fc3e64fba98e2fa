"""The image builder's script, run for real in bash in a temporary root, and a node booting from
what it built.

Real: bash, the builder's user data as build-image writes it (templates/node_bootstrap.py), the
node bootstrap in build and boot mode, curl against presigned URLs of the suite's S3 emulator (the
bootstrap fetched, the result PUT), sha256sum, shellcheck. Replaced because they cannot run here
(tests/bootstrap_support, plus a fake dnf): the package manager (it records its calls and, for
`install condor`/`upgrade condor`, puts HTCondor's condor_master and condor_version on PATH, as the
packages would), systemctl, the power-off command, the metadata service. /etc/os-release is the
root's own (Amazon Linux 2023), so the install recipe runs as on an instance.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import botocore.config
import pytest

from annex_cloud.node import config as node_config
from templates.node_bootstrap import HTCONDOR_SERIES_DEFAULT, INSTALL_PATH, bootstrap_artifact, builder_user_data
from tests import emulator as emu
from tests.bootstrap_support.imds import FakeImds
from tests.bootstrap_support.node import Node, clone_node, make_node, sandbox_env_for
from tests.functional.test_bootstrap import BOOT_AT, BUCKET, INSTANCE_ID, tags, upload_annex

CODE_BUCKET = "annex-code-image-builder-test"
RESULT_KEY = "image-builds/test-build/result"
AMI = "ami-0a1b2c3d4e5f60718"
EC2_USER_DATA_LIMIT = 16384
INSTALLED = "24.0.3"
RELEASE_RPM = "https://research.cs.wisc.edu/htcondor/repo/{series}/htcondor-release-current.amzn2023.noarch.rpm"

_CONDOR_VERSION = """#!/bin/sh
echo '$CondorVersion: {version} 2026-11-01 BuildID: 780000 PackageID: {version}-1 $'
echo '$CondorPlatform: x86_64_AmazonLinux2023 $'
"""

# Records its calls; `install`/`upgrade` of condor put HTCondor (of calls/dnf.version) on PATH.
_DNF = """#!/bin/sh
printf '%s\\n' "$*" >> "{calls}/dnf"
[ -f "{calls}/dnf.fail" ] && exit 1
case "$*" in
  "install -y condor"|"upgrade -y condor")
    printf '#!/bin/sh\\nexit 0\\n' > "{bin}/condor_master"
    sed "s/@VERSION@/$(cat "{calls}/dnf.version")/g" "{calls}/condor_version.template" > "{bin}/condor_version"
    chmod 0755 "{bin}/condor_master" "{bin}/condor_version" ;;
esac
exit 0
"""


def with_package_manager(node: Node, installs: str = INSTALLED, htcondor: str | None = None) -> Node:
    """The fake dnf on the node's PATH; ``htcondor``: the version already installed (None: none)."""
    (node.calls / "dnf.version").write_text(installs + "\n")
    (node.calls / "condor_version.template").write_text(_CONDOR_VERSION.format(version="@VERSION@"))
    dnf = node.bin_dir / "dnf"
    dnf.write_text(_DNF.format(calls=node.calls, bin=node.bin_dir))
    dnf.chmod(0o755)
    (node.bin_dir / "condor_master").unlink(missing_ok=True)
    (node.bin_dir / "condor_version").unlink(missing_ok=True)
    if htcondor is not None:
        (node.bin_dir / "condor_master").write_text("#!/bin/sh\nexit 0\n")
        (node.bin_dir / "condor_version").write_text(_CONDOR_VERSION.format(version=htcondor))
        for name in ("condor_master", "condor_version"):
            (node.bin_dir / name).chmod(0o755)
    release = node.path("/etc/os-release")
    release.parent.mkdir(parents=True, exist_ok=True)
    release.write_text('NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nVERSION_ID="2023"\n')
    return node


def presigned(clients, method: str, key: str) -> str:
    s3 = clients.client("s3", config=botocore.config.Config(signature_version="s3v4"))
    return s3.generate_presigned_url(method, Params={"Bucket": CODE_BUCKET, "Key": key}, ExpiresIn=3600)


def publish(clients, body: bytes | None = None) -> None:
    clients.s3.create_bucket(Bucket=CODE_BUCKET)
    artifact = bootstrap_artifact()
    clients.s3.put_object(Bucket=CODE_BUCKET, Key=artifact.key, Body=body if body is not None else artifact.body)


def run_builder(node: Node, clients, tmp: Path, series: str = HTCONDOR_SERIES_DEFAULT) -> subprocess.CompletedProcess:
    text = builder_user_data(
        bucket=BUCKET, region=emu.REGION, series=series,
        bootstrap_url=presigned(clients, "get_object", bootstrap_artifact().key),
        result_url=presigned(clients, "put_object", RESULT_KEY),
    )
    script = tmp / "user-data"
    script.write_text(text)
    return subprocess.run(["bash", str(script)], env=node.env(), capture_output=True, text=True, timeout=120)


def reported(clients) -> dict[str, str]:
    body = clients.s3.get_object(Bucket=CODE_BUCKET, Key=RESULT_KEY)["Body"].read().decode()
    return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)


@dataclass
class Build:
    node: Node
    result: subprocess.CompletedProcess
    report: dict[str, str]


@pytest.fixture(scope="module")
def build(emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    """One real build that the tests of the built image share (each boots a copy of its root)."""
    from annex_common.aws import make_clients

    emulator.reset()
    clients = make_clients(region=emu.REGION)
    publish(clients)
    tmp = tmp_path_factory.mktemp("build")
    server = FakeImds(INSTANCE_ID, {}).start()
    node = with_package_manager(make_node(tmp, server, sandbox_env_for(emulator.url, tmp / "home"), BUCKET, emu.REGION))
    result = run_builder(node, clients, tmp)
    yield Build(node, result, reported(clients))
    server.stop()


# --- the builder's script ---------------------------------------------------------------------


def test_the_builders_user_data_is_small_and_shellcheck_clean(tmp_path: Path) -> None:
    # Presigned URLs with a session token run to about 1,500 characters each.
    url = "https://annex-code.s3.us-east-1.amazonaws.com/node/b.sh?X-Amz-Security-Token=" + "A%2Fb" * 300
    text = builder_user_data(bucket="b" * 63, region="ap-southeast-2", series="24.x", bootstrap_url=url, result_url=url)
    assert len(text.encode()) <= EC2_USER_DATA_LIMIT // 2
    assert f"digest='{bootstrap_artifact().digest}'" in text and 'exec "$script" build' in text
    script = tmp_path / "user-data"
    script.write_text(text)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("value", ["it's", "a b", "$(id)", "x\ny"])
def test_the_builders_user_data_refuses_what_could_leave_its_quotes(value: str) -> None:
    url = "https://example.com/x"
    with pytest.raises(ValueError):
        builder_user_data(bucket=value, region="us-east-1", series="24.0", bootstrap_url=url, result_url=url)
    with pytest.raises(ValueError):
        builder_user_data(bucket="b-1", region="us-east-1", series="24.0", bootstrap_url=url + value, result_url=url)


def test_the_builder_installs_htcondor_and_the_node_files_configures_no_pool_and_reports(build: Build) -> None:
    node, result = build.node, build.result
    assert result.returncode == 0, result.stderr
    assert build.report == {"status": "ok", "htcondor_version": INSTALLED, "htcondor_series": HTCONDOR_SERIES_DEFAULT}
    # HTCondor from its own repository, for the series asked.
    assert node.recorded("dnf") == [f"install -y {RELEASE_RPM.format(series=HTCONDOR_SERIES_DEFAULT)}", "install -y condor"]
    # The node files: this very bootstrap, the master's shutdown script, the two timers' units,
    # enabled for the next boot but not started; HTCondor itself disabled until configured.
    assert node.path(INSTALL_PATH).read_bytes() == bootstrap_artifact().body
    assert "bootstrap.sh poweroff" in node.path(node_config.MASTER_SHUTDOWN_SCRIPT).read_text()
    for unit in ("condor-annex-watchdog", "condor-annex-deadman"):
        assert node.path(f"/etc/systemd/system/{unit}.service").exists()
        assert node.path(f"/etc/systemd/system/{unit}.timer").exists()
    assert node.systemctl_calls() == [
        "daemon-reload", "enable condor-annex-watchdog.timer condor-annex-deadman.timer", "disable condor",
    ]
    # No pool: no configuration, no token, no password, no state of this instance.
    assert not node.path(node_config.INSTANCE_CONFIG_PATH).exists()
    assert not node.path(node_config.TOKEN_DIRECTORY).exists()
    assert not node.path(node_config.PASSWORD_FILE).exists()
    assert not node.path("/var/lib/condor-annex").exists()
    record = node.path("/etc/condor-annex/image.env").read_text()
    assert f"HTCONDOR_VERSION={INSTALLED}\n" in record and f"HTCONDOR_SERIES={HTCONDOR_SERIES_DEFAULT}\n" in record
    assert f"BOOTSTRAP_SHA256={bootstrap_artifact().digest}\n" in record and "BUILT_AT=20" in record
    # It stops itself (the launch made power-off a stop), once, after reporting.
    assert node.poweroffs() == [""]
    log = node.path("/var/log/condor-annex/build.log").read_text()
    assert "build complete: HTCondor 24.0.3" in log and not node.path("/var/log/condor-annex/bootstrap.log").exists()
    assert "X-Amz-Signature" not in log + result.stderr  # the URLs are capabilities: never logged


def test_a_replaced_bootstrap_is_never_run_and_the_failure_is_reported(tmp_path: Path, sandbox_env, clients) -> None:
    artifact = bootstrap_artifact()
    publish(clients, artifact.body.replace(b"set -euo pipefail", b"set -euo pipefail\ntouch /tmp/owned", 1))
    server = FakeImds(INSTANCE_ID, {}).start()
    try:
        node = with_package_manager(make_node(tmp_path, server, sandbox_env, BUCKET, emu.REGION))
        result = run_builder(node, clients, tmp_path)
    finally:
        server.stop()
    assert "no bootstrap with the SHA-256" in result.stderr
    assert reported(clients)["status"] == "failed"
    assert not node.path(INSTALL_PATH).exists() and node.recorded("dnf") == []
    assert node.poweroffs() == [""]


def test_a_failed_install_is_reported_with_its_step_and_the_builder_powers_off(tmp_path: Path, sandbox_env, clients) -> None:
    publish(clients)
    server = FakeImds(INSTANCE_ID, {}).start()
    try:
        node = with_package_manager(make_node(tmp_path, server, sandbox_env, BUCKET, emu.REGION))
        (node.calls / "dnf.fail").write_text("")
        result = run_builder(node, clients, tmp_path)
    finally:
        server.stop()
    report = reported(clients)
    assert report["status"] == "failed" and report["reason"] == "installing HTCondor 24.0", report
    assert result.returncode != 0 and node.poweroffs() == [""]
    assert not node.path("/etc/condor-annex/image.env").exists()


def test_a_series_older_than_the_nodes_ask_is_refused_by_the_builder(tmp_path: Path, sandbox_env, clients) -> None:
    publish(clients)
    server = FakeImds(INSTANCE_ID, {}).start()
    try:
        node = with_package_manager(make_node(tmp_path, server, sandbox_env, BUCKET, emu.REGION))
        run_builder(node, clients, tmp_path, series="23.0")
    finally:
        server.stop()
    assert reported(clients)["status"] == "failed"
    assert "older than 24.0" in node.path("/var/log/condor-annex/build.log").read_text()
    assert node.recorded("dnf") == []


# --- a node booting from the built image --------------------------------------------------------


@pytest.fixture
def booting(build: Build, tmp_path: Path, sandbox_env, clients) -> Iterator[Node]:
    """A new instance from the built image: a copy of the builder's root and its HTCondor, with
    its own annex to join and its own metadata (the image's id among it)."""
    upload_annex(clients, "idtoken")
    server = FakeImds(INSTANCE_ID, tags(), ami_id=AMI).start()
    node = clone_node(build.node, tmp_path, server, sandbox_env)
    with_package_manager(node, htcondor=INSTALLED)
    yield node
    server.stop()


def test_a_node_booting_from_the_built_image_runs_no_package_manager_and_names_its_image(booting: Node) -> None:
    result = booting.run(now=BOOT_AT)
    assert result.returncode == 0, result.stderr
    assert booting.recorded("dnf") == []  # no package manager at all
    log = booting.log_text()
    assert f"image {AMI}: built by annex-admin build-image at 20" in log and f"with HTCondor {INSTALLED}" in log
    assert f"HTCondor {INSTALLED} is already installed (series 24.0 or newer): nothing to install" in log
    assert f"running HTCondor {INSTALLED}" in log and "boot complete" in log
    assert "restart condor" in booting.systemctl_calls() and booting.poweroffs() == []


def test_a_node_whose_htcondor_is_older_than_the_series_upgrades_it_and_says_why(booting: Node) -> None:
    with_package_manager(booting, installs=INSTALLED, htcondor="23.0.18")
    result = booting.run(now=BOOT_AT)
    assert result.returncode == 0, result.stderr
    assert booting.recorded("dnf") == [f"install -y {RELEASE_RPM.format(series='24.0')}", "upgrade -y condor"]
    log = booting.log_text()
    assert "HTCondor 23.0.18 on this image is older than series 24.0, which this bootstrap asks for" in log
    assert f"installed HTCondor {INSTALLED}" in log and f"running HTCondor {INSTALLED}" in log


def test_a_node_on_an_image_without_htcondor_installs_it_and_says_the_image_is_not_ours(
    tmp_path: Path, sandbox_env, clients
) -> None:
    upload_annex(clients, "idtoken")
    server = FakeImds(INSTANCE_ID, tags(), ami_id=AMI).start()
    try:
        node = with_package_manager(make_node(tmp_path, server, sandbox_env, BUCKET, emu.REGION))
        result = node.run(now=BOOT_AT)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert node.recorded("dnf") == [f"install -y {RELEASE_RPM.format(series='24.0')}", "install -y condor"]
    assert f"image {AMI}: not built by annex-admin build-image" in node.log_text()
