"""cfn-lint on every template shape we build, through the installed `annex-admin template`."""

from __future__ import annotations

import subprocess

import pytest

from tests.flows import console_script


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--ssh-cidr", "203.0.113.0/24"],
        ["--instance-types", "m7i.large,c6i.xlarge,m5.large,r6i.large", "--zones", "us-east-1a,us-east-1b,us-east-1c"],
        ["--region", "eu-west-1", "--image-id", "ami-0123456789abcdef0", "--stack-name", "Other-Annex"],
        ["--notify-email", "admin@example.org"],
    ],
    ids=["defaults", "ssh", "four-types-three-zones", "other-region", "notify-email"],
)
def test_template_is_cfn_lint_clean(tmp_path, args):
    result = subprocess.run([console_script("annex-admin"), "template", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "stack.json"
    path.write_text(result.stdout)
    lint = subprocess.run([console_script("cfn-lint"), str(path)], capture_output=True, text=True, timeout=120)
    # cfn-lint exits 0 only with no errors and no warnings (W3010 is silenced, with its reason,
    # on the subnets in templates/stack.py).
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_lint_would_catch_a_broken_template(tmp_path):
    """The lint check can fail: a template with a dangling reference is reported."""
    result = subprocess.run([console_script("annex-admin"), "template"], capture_output=True, text=True, timeout=60)
    broken = result.stdout.replace('"Ref": "Vpc"', '"Ref": "NoSuchVpc"', 1)
    assert broken != result.stdout
    path = tmp_path / "broken.json"
    path.write_text(broken)
    lint = subprocess.run([console_script("cfn-lint"), str(path)], capture_output=True, text=True, timeout=120)
    assert lint.returncode != 0 and "NoSuchVpc" in lint.stdout
