"""The emulator's check of moto's internals (annex_sandbox.moto_contract), against the installed moto."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from annex_sandbox import moto_contract
from annex_sandbox.moto_contract import Internal, MotoMismatch, check_moto, problems


def test_the_installed_moto_is_a_checked_release_with_every_internal_in_shape():
    assert problems() == []
    assert check_moto() == metadata.version("moto")


def test_a_missing_or_reshaped_internal_is_named():
    found = problems((
        Internal("moto.s3.responses", "S3Response.no_such_method"),
        Internal("moto.no_such_module", "anything"),
        Internal("moto.iam.access_control", "IAMPolicy.__init__", ("self", "document")),
    ))
    assert len(found) == 3
    assert found[0].startswith("moto.s3.responses.S3Response.no_such_method is missing")
    assert found[1].startswith("moto.no_such_module.anything is missing")
    assert found[2] == "moto.iam.access_control.IAMPolicy.__init__ takes (self, policy), expected (self, document)"


def test_an_unchecked_release_is_refused_naming_both_versions():
    with pytest.raises(MotoMismatch) as refused:
        check_moto(("5.0.0",))
    assert f"checked against moto 5.0.0, and this is moto {metadata.version('moto')}" in str(refused.value)


def test_every_patch_of_the_emulator_has_its_internals_listed():
    """Each ``install_*`` replaces attributes of moto classes; the contract must name each of them."""
    import ast
    from pathlib import Path

    listed = {internal.name.split(".")[-1] for internal in moto_contract.INTERNALS}
    source = Path(moto_contract.__file__).with_name("patches.py").read_text()
    assigned = {
        target.attr
        for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Attribute) and target.value.__class__ is ast.Name
        and target.value.id[0].isupper()
    }
    assert assigned, "the patches assign no moto attribute: the check below would prove nothing"
    # _determine_resource is added, not replaced: moto asks hasattr(self, "_determine_resource").
    assert assigned - listed - {"_determine_resource"} == set()


def test_the_server_refuses_to_start_under_an_unchecked_moto(tmp_path):
    program = (
        "import annex_sandbox.moto_contract as c; c.CHECKED_MOTO = ('5.0.0',); "
        "import annex_sandbox.server as s; s.main(['-H', '127.0.0.1', '-p', '9'])"
    )
    started = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "The local emulator cannot start: the emulator was checked against moto 5.0.0" in started.stderr
