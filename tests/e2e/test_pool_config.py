"""`annex-admin pool-config`: the central manager's snippet, read back by HTCondor's own parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REVOKED = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210")
KEPT = "00000000000000000000000000000000"

# Reads the file as a central manager would, in a child process (a bad configuration file makes the
# bindings exit their process), and asks the revocation expression about tokens by their ids.
_READER = """
import json, sys, htcondor2 as htcondor, classad2
names = ["ENABLE_CCB_SERVER", "SEC_DEFAULT_AUTHENTICATION_METHODS", "ALLOW_ADVERTISE_STARTD",
         "ALLOW_ADVERTISE_MASTER", "SEC_TOKEN_REVOCATION_EXPR", "CONDOR_ANNEX_SIGNING_KEY",
         "CONDOR_ANNEX_SIGNING_KEY_FILE", "SEC_PASSWORD_DIRECTORY"]
values = {name: htcondor.param.get(name) for name in names}
revoked = {}
if values["SEC_TOKEN_REVOCATION_EXPR"]:
    expression = classad2.ExprTree(values["SEC_TOKEN_REVOCATION_EXPR"])
    for token_id in sys.argv[1:]:
        token = classad2.ClassAd({"jti": token_id, "sub": "condor_pool@pool.example"})
        token["revoked"] = expression
        revoked[token_id] = token.eval("revoked")
print(json.dumps({"values": {k: str(v) for k, v in values.items()}, "revoked": revoked}))
"""


def read_back(config: Path, *token_ids: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _READER, *token_ids],
        env={"CONDOR_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def central_manager(tmp_path: Path) -> Path:
    """A central manager's own configuration, before the annex file."""
    config = tmp_path / "condor_config"
    config.write_text("TRUST_DOMAIN = pool.example\nALLOW_DAEMON = condor@pool.example\n")
    return config


def test_the_snippet_parses_and_lets_annex_identities_advertise(shell, central_manager):
    result = shell.run("annex-admin", "pool-config")
    assert result.returncode == 0, result.output
    central_manager.write_text(central_manager.read_text() + result.stdout)
    values = read_back(central_manager)["values"]
    assert values["ENABLE_CCB_SERVER"] == "True"
    assert {"IDTOKENS", "PASSWORD"} <= {m.strip() for m in values["SEC_DEFAULT_AUTHENTICATION_METHODS"].split(",")}
    for knob in ("ALLOW_ADVERTISE_STARTD", "ALLOW_ADVERTISE_MASTER"):
        # The annexes' identity is added; the pool's own daemons keep their right.
        assert [s.strip() for s in values[knob].split(",")] == ["condor@pool.example", "condor_pool@pool.example"]
    assert values["SEC_TOKEN_REVOCATION_EXPR"] == "None"  # nothing revoked yet
    # The key the broker signs with, by name, and the file the central manager must hold.
    assert values["CONDOR_ANNEX_SIGNING_KEY"] == "ANNEX"
    assert values["CONDOR_ANNEX_SIGNING_KEY_FILE"] == values["SEC_PASSWORD_DIRECTORY"] + "/ANNEX"
    assert "delete that file" in result.stdout
    assert "pool-config --revoke" in result.stdout and "SEC_TOKEN_REVOCATION_EXPR" in result.stdout


def test_revocations_appended_to_the_snippet_revoke_exactly_those_tokens(shell, central_manager):
    snippet = shell.run("annex-admin", "pool-config").stdout
    first = shell.run("annex-admin", "pool-config", "--revoke", REVOKED[0])
    second = shell.run("annex-admin", "pool-config", "--revoke", REVOKED[1])
    assert first.returncode == second.returncode == 0, first.output + second.output
    # Appended one after the other, as the snippet says: the second keeps the first.
    central_manager.write_text(central_manager.read_text() + snippet + first.stdout + second.stdout)
    answer = read_back(central_manager, *REVOKED, KEPT)
    assert answer["revoked"] == {REVOKED[0]: True, REVOKED[1]: True, KEPT: False}


@pytest.mark.parametrize("token_id", ["not-hex", "0123", 'x" || true || "'])
def test_a_revocation_of_something_not_a_token_id_is_bad_input(shell, token_id):
    result = shell.run("annex-admin", "pool-config", "--revoke", token_id)
    assert result.returncode == 2
    assert "is not an annex token id" in result.output and "SEC_TOKEN_REVOCATION_EXPR" not in result.stdout


def test_another_key_name_is_named_and_a_bad_one_is_bad_input(shell, central_manager):
    result = shell.run("annex-admin", "pool-config", "--key-name", "LABANNEX")
    assert result.returncode == 0, result.output
    central_manager.write_text(central_manager.read_text() + result.stdout)
    assert read_back(central_manager)["values"]["CONDOR_ANNEX_SIGNING_KEY"] == "LABANNEX"
    bad = shell.run("annex-admin", "pool-config", "--key-name", "../POOL")
    assert bad.returncode == 2 and "not a key name" in bad.output


def test_the_snippet_names_the_recorded_pools_key(shell, central_manager):
    """pool-config names the key the stack's recorded pool signs with (pool set --key-name)."""
    from tests.flows import ANNEX_KEY_FILE, COLLECTOR, TRUST_DOMAIN, write_private

    without = shell.run("annex-admin", "pool-config")
    assert "No pool is recorded for stack HTCondorAnnex, so this names the key ANNEX" in " ".join(without.stderr.split())
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    write_private(shell.home / "LABANNEX", ANNEX_KEY_FILE)
    recorded = shell.run("annex-admin", "pool", "set", "--collector", COLLECTOR, "--trust-domain", TRUST_DOMAIN,
                         "--signing-key-file", "LABANNEX", "--key-name", "LABANNEX", "--yes")
    assert recorded.returncode == 0, recorded.output
    result = shell.run("annex-admin", "pool-config")
    assert result.returncode == 0 and result.stderr == "", result.output
    assert '"$(condor_config_val SEC_PASSWORD_DIRECTORY)/LABANNEX"' in result.stdout
    central_manager.write_text(central_manager.read_text() + result.stdout)
    assert read_back(central_manager)["values"]["CONDOR_ANNEX_SIGNING_KEY"] == "LABANNEX"


@pytest.mark.parametrize("key_name", ["ANNEX", "-LAB.ANNEX_2", "POOL"])
def test_every_shell_command_the_snippet_shows_is_shellcheck_clean_and_shown_whole(shell, key_name):
    from annex_admin.pool_config import shell_commands

    result = shell.run("annex-admin", "pool-config", "--key-name", key_name)
    assert result.returncode == 0, result.output
    commands = shell_commands(key_name)
    for command in commands:
        assert f"#   {command}\n" in result.stdout
    script = "#!/bin/bash\n" + "\n".join(commands) + "\n"
    shellcheck = Path(sys.executable).parent / "shellcheck"
    checked = subprocess.run([str(shellcheck), "--severity=style", "-"], input=script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # No HTCondor macro in a shell command: bash would run SEC_PASSWORD_DIRECTORY as a command.
    assert not any("$(SEC_" in c or "$(CONDOR_" in c for c in commands)


def test_the_command_that_makes_a_key_makes_a_private_one_where_htcondor_reads_keys(tmp_path):
    """Run in bash as printed, with condor_config_val answering as a central manager's would."""
    from annex_admin.pool_config import make_key_command

    passwords = tmp_path / "passwords.d"
    passwords.mkdir()
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "condor_config_val"
    fake.write_text(f'#!/bin/sh\n[ "$1" = SEC_PASSWORD_DIRECTORY ] && echo {passwords}\n')
    fake.chmod(0o755)
    made = subprocess.run(["bash", "-c", make_key_command("ANNEX")], env={"PATH": f"{tools}:/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    key = passwords / "ANNEX"
    assert key.stat().st_size == 64 and key.stat().st_mode & 0o777 == 0o600
