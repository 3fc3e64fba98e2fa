"""How an instance gets its bootstrap: a short loader, the launch templates' user data, fetches
``annex_cloud/node/bootstrap.sh`` from the stack's code bucket, checks that its SHA-256 is the one
the template names, and runs it. Anything else powers the instance off.

The script is not the user data itself because EC2 caps user data at 16 KB and the bootstrap,
which carries the node's configuration template and the rules every value must meet, outgrew it.
The object is content-addressed and published by setup beside the functions' zip
(``annex_admin.deploy.publish_code``); the nodes' roles may read ``node/`` of that bucket and
nothing else of it. The digest in the template pins the exact bytes: an object replaced in the
bucket is refused, not run.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from troposphere import Base64, Join

from annex_common.artifacts import Artifact

BOOTSTRAP_PREFIX = "node/"
# Where the loader puts the script; the bootstrap installs its timers to run it from there.
INSTALL_PATH = "/usr/local/libexec/condor-annex/bootstrap.sh"
FETCH_ATTEMPTS = 6
FETCH_PAUSE_SECONDS = 10


def bootstrap_artifact() -> Artifact:
    body = resources.files("annex_cloud.node").joinpath("bootstrap.sh").read_bytes()
    return Artifact(body, f"{BOOTSTRAP_PREFIX}bootstrap-", ".sh")


def _bootstrap_series() -> str:
    """The HTCondor series the node bootstrap asks for (its HTCONDOR_SERIES), read from it."""
    found = re.search(rb"^readonly HTCONDOR_SERIES=([0-9.x]+)", bootstrap_artifact().body, re.MULTILINE)
    if found is None:
        raise RuntimeError("the node bootstrap names no HTCONDOR_SERIES")
    return found.group(1).decode()


# The series nodes ask for: an image with an older HTCondor is upgraded at every boot.
HTCONDOR_SERIES_DEFAULT = _bootstrap_series()


# What both loaders do: fetch the bootstrap (a few tries), run it in {mode} only when its SHA-256
# is {digest}; otherwise say {refused} and fall through to the caller's own ending.
_FETCH_CHECK_RUN = """script="${{ANNEX_ROOT:-}}{install_path}"
mkdir -p "${{script%/*}}"
for attempt in {attempt_list}; do
  {fetch} && break
  echo "condor-annex: could not fetch {fetched} (attempt $attempt of {attempts})" >&2
  [ "$attempt" -lt {attempts} ] && sleep {pause}
done
if printf '%s  %s\\n' "$digest" "$script.part" | sha256sum --check --status; then
  chmod 0755 "$script.part" && mv -f "$script.part" "$script" && exec "$script" {mode}
fi
echo "condor-annex: {refused}" >&2
rm -f "$script.part"
"""


def _fetch_check_run(*, fetch: str, fetched: str, mode: str, refused: str) -> str:
    return _FETCH_CHECK_RUN.format(
        fetch=fetch, fetched=fetched, mode=mode, refused=refused, install_path=INSTALL_PATH,
        attempts=FETCH_ATTEMPTS, attempt_list=" ".join(str(n) for n in range(1, FETCH_ATTEMPTS + 1)),
        pause=FETCH_PAUSE_SECONDS,
    )


# The loader; {key} and {digest} are filled in here, the three @MARKERS@ by CloudFormation.
# ANNEX_ROOT and ANNEX_POWEROFF_CMD are the bootstrap's own test hooks (see its header).
_LOADER = """#!/bin/bash
# condor-annex: fetch the node bootstrap this launch template names, check it, run it.
ANNEX_BUCKET='@BUCKET@'
ANNEX_REGION='@REGION@'
export ANNEX_BUCKET ANNEX_REGION
object='s3://@CODE_BUCKET@/{key}'
digest='{digest}'
{fetch_check_run}# shellcheck disable=SC2086
${{ANNEX_POWEROFF_CMD:-systemctl poweroff}}
"""


def loader_text(artifact: Artifact) -> str:
    """The loader with its markers @BUCKET@, @REGION@ and @CODE_BUCKET@ still in place."""
    return _LOADER.format(key=artifact.key, digest=artifact.digest, fetch_check_run=_fetch_check_run(
        fetch='aws s3 cp --only-show-errors --region "$ANNEX_REGION" "$object" "$script.part"',
        fetched="$object", mode="boot",
        refused="no bootstrap with the SHA-256 this launch template names; powering off",
    ))


def user_data(bucket: Any, region: Any, code_bucket: Any, artifact: Artifact | None = None) -> Base64:
    """The launch templates' user data: the loader with the stack's references joined in."""
    text = loader_text(artifact or bootstrap_artifact())
    parts: list[Any] = []
    for marker, value in (("@BUCKET@", bucket), ("@REGION@", region), ("@CODE_BUCKET@", code_bucket)):
        before, text = text.split(marker, 1)
        parts += [before, value]
    return Base64(Join("", parts + [text]))


# --- the image builder's user data (annex-admin build-image) ----------------------------------
#
# The builder is launched from the stack's own launch template (its network, security group,
# volumes, metadata options) with this user data instead of the loader above: the only way an
# instance is asked to build rather than join, and only the administrator's tool writes it (the
# broker launches from the projects' template versions, whose user data is the loader). The
# builder has no instance profile, so it reads the bootstrap, and reports its result, through two
# presigned URLs of the code bucket: one GET of the exact object the stack's templates name
# (checked against the same SHA-256), one PUT of the build's result.

_BUILDER = """#!/bin/bash
# condor-annex image builder (annex-admin build-image): fetch the node bootstrap the stack's
# launch templates name, check it, run it in build mode. Never the user data of an annex node.
ANNEX_BUCKET='{bucket}'
ANNEX_REGION='{region}'
ANNEX_HTCONDOR_SERIES='{series}'
ANNEX_BUILD_RESULT_URL='{result_url}'
export ANNEX_BUCKET ANNEX_REGION ANNEX_HTCONDOR_SERIES ANNEX_BUILD_RESULT_URL
source_url='{bootstrap_url}'
digest='{digest}'
{fetch_check_run}report="$(mktemp)"
printf 'status=failed\\nreason=no node bootstrap with the SHA-256 the stack names\\n' >"$report"
curl -sS --fail --max-time 30 -T "$report" "$ANNEX_BUILD_RESULT_URL" >/dev/null
# shellcheck disable=SC2086
${{ANNEX_POWEROFF_CMD:-systemctl poweroff}}
"""

# Characters a presigned URL may hold here: none that could end the single-quoted shell word.
_URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!&+,;=%-]+$")
_WORD_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def builder_user_data(
    *, bucket: str, region: str, series: str, bootstrap_url: str, result_url: str, artifact: Artifact | None = None
) -> str:
    """The builder's user data: the bootstrap of ``artifact`` (the one the stack's templates
    name), fetched from ``bootstrap_url`` and checked, run in build mode for ``series``."""
    for word in (bucket, region, series):
        if not _WORD_RE.match(word):
            raise ValueError(f"unsafe value for the builder's user data: {word!r}")
    for url in (bootstrap_url, result_url):
        if not _URL_RE.match(url):
            raise ValueError("a presigned URL holds characters the builder's user data cannot carry")
    chosen = artifact or bootstrap_artifact()
    return _BUILDER.format(
        bucket=bucket, region=region, series=series, result_url=result_url, bootstrap_url=bootstrap_url,
        digest=chosen.digest, fetch_check_run=_fetch_check_run(
            fetch='curl -sS --fail --max-time 60 -o "$script.part" "$source_url"',
            fetched="the node bootstrap", mode="build",
            refused="no bootstrap with the SHA-256 the stack names; the build failed",
        ),
    )
