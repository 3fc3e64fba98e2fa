"""Properties of what users feed the programs through files and the command line.

- Any bytes in a bundle file, with any private mode: a valid bundle or BadInput, nothing else.
- Any issue-credentials input: refused as BadInput, or accepted and then round-trips through the
  bundle file the scientist receives.
- Random argument lists to the installed `condor_annex`: never a traceback, exit 0, 1 or 2 only.

Inputs that once escaped are kept as plain examples at the end.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annex_admin.credentials import PROJECT_RE, USER_RE, CapsChange, validate_issue
from annex_cloud.caps import MAX_CAP_LEASE_HOURS, Caps
from annex_common.errors import BadInput
from annex_common.bundle import Bundle, load_bundle, write_bundle
from tests.flows import console_script, write_pool
from tests.unit.test_properties import assert_valid_bundle, bundle_documents, expiry_like, outcome

FILES = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI = settings(max_examples=25, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(mode)


def toml_bytes(document: dict[str, Any]) -> bytes:
    try:
        return tomli_w.dumps(document).encode()
    except (TypeError, ValueError):
        return repr(document).encode()


bundle_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    bundle_documents().map(toml_bytes),
    st.tuples(bundle_documents().map(toml_bytes), st.integers(0, 300), st.binary(max_size=4)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:]  # a good-looking file, damaged somewhere
    ),
)


@FILES
@given(data=bundle_bytes, mode=st.integers(0, 0o777).map(lambda m: m | 0o400))
def test_any_bundle_file_loads_as_a_bundle_or_is_bad_input(tmp_path: Path, data: bytes, mode: int):
    path = tmp_path / "bundle.toml"
    write_file(path, data, mode)
    result = outcome(load_bundle, path)
    if mode & 0o077:
        assert isinstance(result, BadInput) and "readable by others" in result.why
    elif not isinstance(result, BadInput):
        assert_valid_bundle(result)


names = st.one_of(st.text(max_size=70), st.from_regex(PROJECT_RE, fullmatch=True), st.from_regex(USER_RE, fullmatch=True))
finite_caps = st.builds(
    Caps,
    max_instances=st.integers(-5, 10**7),
    max_lease_hours=st.floats(min_value=-10, max_value=2 * MAX_CAP_LEASE_HOURS, allow_nan=False),
    max_spend_usd=st.floats(min_value=-10, max_value=1e12, allow_nan=False),
)


@FILES
@given(project=names, user=names, caps=finite_caps, where=st.sampled_from(["file", "folder", "missing-folder"]))
def test_issue_input_is_refused_or_round_trips_through_the_bundle(tmp_path: Path, project: str, user: str,
                                                                 caps: Caps, where: str):
    output = {"file": tmp_path / "out.toml", "folder": tmp_path, "missing-folder": tmp_path / "nope" / "b.toml"}[where]
    result = outcome(validate_issue, project, user, CapsChange(caps.max_instances, caps.max_lease_hours, caps.max_spend_usd), output)
    if isinstance(result, BadInput):
        return
    assert where == "file" and PROJECT_RE.match(project) and USER_RE.match(user)
    assert caps.max_instances >= 1 and 0 < caps.max_lease_hours <= MAX_CAP_LEASE_HOURS and caps.max_spend_usd > 0
    bundle = Bundle("us-east-1", "HTCondorAnnex", project, user, "AKIAEXAMPLE", "secret", caps)
    write_bundle(output, bundle)
    assert load_bundle(output) == bundle  # what she receives reads back as issued


# --- the installed condor_annex, with random arguments ----------------------------------------

arg_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
options = st.one_of(
    st.tuples(st.just("--project-id"), st.one_of(st.just("TheNeeds-MooreLab"), arg_text)),
    st.tuples(st.just("--expiry"), st.one_of(expiry_like(), arg_text)),
    st.tuples(st.just("--duration"), st.one_of(st.floats().map(str), arg_text)),
    st.tuples(st.one_of(st.just("--instances"), st.just("--count")), st.one_of(st.integers().map(str), arg_text)),
    st.tuples(st.just("--annex-name"), arg_text),
    st.tuples(st.just("--instance-type"), arg_text),
    st.tuples(st.just("--idle"), st.one_of(st.integers().map(str), arg_text)),
    st.tuples(st.just("--output"), st.one_of(st.sampled_from(["json", "table"]), arg_text)),
    st.tuples(st.sampled_from(["--spot", "--dry-run", "--yes", "-y", "--help"])),
    st.tuples(arg_text),
).map(list)
argument_lists = st.tuples(
    st.sampled_from(["", "launch", "status", "extend", "terminate", "import-credentials"]),
    st.lists(options, max_size=6),
).map(lambda t: ([t[0]] if t[0] else []) + [word for option in t[1] for word in option])


@CLI
@given(argv=argument_lists)
def test_condor_annex_never_shows_a_traceback_whatever_the_arguments(sandbox_env: dict[str, str], tmp_path: Path,
                                                                     argv: list[str]):
    """A bundle for a region with no stack: every command that gets that far is refused (exit 2)."""
    env = dict(sandbox_env, CONDOR_ANNEX_CREDENTIALS=str(_bundle(tmp_path)),
               CONDOR_CONFIG=str(write_pool(tmp_path / "pool").condor_config))
    done = subprocess.run([console_script("condor_annex"), *argv], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert "Traceback" not in done.stdout + done.stderr, (argv, done.stderr[-2000:])
    assert done.returncode in (0, 1, 2), (argv, done.returncode, done.stderr[-2000:])


def _bundle(folder: Path) -> Path:
    path = folder / "bundle.toml"
    if not path.exists():
        write_bundle(path, Bundle("us-east-1", "HTCondorAnnex", "TheNeeds-MooreLab", "needs-moore",
                                  "AKIAFAKETESTKEY00000", "fake-secret", Caps(32, 168, 500.0)))
    return path


# --- inputs the properties above once found escaping: each is bad input now -------------------


@pytest.mark.parametrize("nesting", ["a = " + "[" * 5000, "a = " + "{b = " * 3000])
def test_a_deeply_nested_bundle_is_bad_input(tmp_path: Path, nesting: str):
    path = tmp_path / "bundle.toml"
    write_file(path, nesting.encode(), 0o600)
    with pytest.raises(BadInput):
        load_bundle(path)


@pytest.mark.parametrize("caps", [Caps(8, math.nan, 100.0), Caps(8, 72.0, math.nan), Caps(8, 72.0, math.inf)])
def test_non_finite_caps_are_refused(tmp_path: Path, caps: Caps):
    with pytest.raises(BadInput):
        validate_issue("TheNeeds-MooreLab", "needs-moore", CapsChange(caps.max_instances, caps.max_lease_hours, caps.max_spend_usd), tmp_path / "b.toml")


def test_the_random_arguments_reach_the_emulator_and_are_refused_there(sandbox_env: dict[str, str], tmp_path: Path):
    """The property above is only worth something if valid arguments get past parsing: they do,
    and the empty region refuses them with exit 2."""
    env = dict(sandbox_env, CONDOR_ANNEX_CREDENTIALS=str(_bundle(tmp_path)),
               CONDOR_CONFIG=str(write_pool(tmp_path / "pool").condor_config))
    done = subprocess.run([console_script("condor_annex"), "--project-id", "TheNeeds-MooreLab", "--duration", "5",
                           "--instances", "2", "--yes"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no condor-annex stack with a broker (HTCondorAnnex-broker)" in done.stderr

