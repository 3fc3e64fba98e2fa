"""Recording the pool annexes join: once per region stack, or for one project instead.

``annex-admin pool set`` (and ``issue-credentials --pool-*`` for a project) reads the pool's signing
key file (or its pool password file) on the administrator's machine and stores it, with the
collector and trust domain, as an SSM SecureString under the stack's pool path, encrypted with the
stack's KMS key (``annex_cloud.pools``). A plan (what is recorded now, what will be) comes first;
one executor writes it. The secret is never printed, logged or written anywhere else.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import botocore.exceptions

from annex_cloud.pools import DEFAULT_KEY_NAME, PoolSecret, is_pool_key, pool_parameter, pool_problems, read_pool_parameter
from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.errors import AnnexError, BadInput
from annex_admin.stack import StackInfo
from templates import contract

_NOT_PRIVATE = 0o077


@dataclass(frozen=True)
class PoolChoice:
    """What the administrator gave on the command line (paths, not secrets)."""

    collector_host: str
    trust_domain: str
    signing_key_file: Path | None = None
    password_file: Path | None = None
    key_name: str = DEFAULT_KEY_NAME
    option_prefix: str = "--"  # how the command names the files' options (issue-credentials: --pool-)


@dataclass(frozen=True)
class PoolPlan:
    """What ``pool set`` will do: the parameter, the pool recorded there now (if any) and the new."""

    parameter: str
    key_arn: str
    current: PoolSecret | None
    new: PoolSecret

    @property
    def unchanged(self) -> bool:
        return self.current is not None and self.current.public() == self.new.public() \
            and self.current.secret == self.new.secret

    def lines(self) -> list[str]:
        now = self.current.describe() if self.current else "nothing recorded"
        lines = [f"now:   {now}", f"to be: {self.new.describe()}",
                 f"kept in SSM parameter {self.parameter} (SecureString, the stack's key {self.key_arn})"]
        if self.current is not None and self.current.public() == self.new.public() and not self.unchanged:
            lines.append("the secret changes: annexes launched from now on, and every extension, use the new one")
        if is_pool_key(self.new.key_name):
            lines.append("warning: this is the pool's own POOL key: the broker could sign any identity of the pool; "
                         "a key of its own name (ANNEX) limits what the stack holds")
        return lines


def read_secret_file(path: Path, what: str) -> bytes:
    """The file as HTCondor keeps it; BadInput when it is missing, empty or others may read it."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise BadInput(f"{what} {path} is not a regular file", "", "Pass the key file itself.")
            if mode & _NOT_PRIVATE:
                raise BadInput(
                    f"{what} {path} can be read by other users (mode {stat.S_IMODE(mode):04o})",
                    "HTCondor refuses a key file that is not private, and so does annex-admin",
                    f"Run chmod 0600 {path} (and consider the key exposed), then try again.",
                )
            data = handle.read()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist", "", "Pass the file the central manager uses.") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise BadInput(f"cannot read {what} {path}", getattr(exc, "strerror", None) or str(exc),
                       "Pass a file you can read.") from None
    return data


def pool_from_choice(choice: PoolChoice) -> PoolSecret:
    """The pool to record, read and checked before any AWS call; BadInput names what is wrong."""
    if (choice.signing_key_file is None) == (choice.password_file is None):
        key, password = f"{choice.option_prefix}signing-key-file", f"{choice.option_prefix}password-file"
        raise BadInput(
            f"give exactly one of {key} and {password}",
            "an annex authenticates with a token signed by the pool's key, or with its pool password",
            f"Pass {key} with a key of its own name (recommended), or {password}.",
        )
    if choice.signing_key_file is not None:
        pool = PoolSecret(choice.collector_host, choice.trust_domain, "idtoken", choice.key_name,
                          read_secret_file(choice.signing_key_file, "the signing key file"))
    else:
        assert choice.password_file is not None
        pool = PoolSecret(choice.collector_host, choice.trust_domain, "password", "",
                          read_secret_file(choice.password_file, "the pool password file"))
    problems = pool_problems(pool)
    if problems:
        raise BadInput("the pool cannot be recorded", "; ".join(problems),
                       "Fix the option named and run again; nothing was changed.")
    return pool


def plan_pool(clients: AwsClients, stack: StackInfo, pool: PoolSecret, project_id: str | None = None) -> PoolPlan:
    parameter = pool_parameter(stack.name, project_id)
    key_arn = stack.output(contract.OUT_POOL_KEY)
    return PoolPlan(parameter, key_arn, recorded_pool(clients, parameter), pool)


def recorded_pool(clients: AwsClients, parameter: str) -> PoolSecret | None:
    with aws_errors(f"could not read the pool recorded in {parameter}"):
        try:
            return read_pool_parameter(clients.client("ssm"), parameter)
        except ValueError:
            return None  # unreadable: the new record replaces it


def apply_pool(clients: AwsClients, plan: PoolPlan) -> None:
    if plan.unchanged:
        return
    with aws_errors(f"could not record the pool in {plan.parameter}"):
        clients.client("ssm").put_parameter(
            Name=plan.parameter, Value=plan.new.to_parameter(), Type="SecureString", KeyId=plan.key_arn,
            Overwrite=True, Description="condor-annex: a pool annexes join (collector, trust domain, its key)",
        )


def remove_pool(clients: Any, parameter: str) -> bool:
    """Delete one recorded pool; False when there was none."""
    try:
        clients.client("ssm").delete_parameter(Name=parameter)
        return True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return False
        raise


def recorded_parameters(clients: AwsClients, stack_name: str) -> list[str]:
    """Every pool parameter of the stack (the stack's and the projects')."""
    from annex_cloud.pools import pools_path

    names: list[str] = []
    paginator = clients.client("ssm").get_paginator("get_parameters_by_path")
    for page in paginator.paginate(Path=pools_path(stack_name).rstrip("/"), Recursive=True):
        names += [p["Name"] for p in page.get("Parameters", [])]
    return sorted(names)


@dataclass(frozen=True)
class ConfigKey:
    """The signing key's name ``pool-config`` prints, and, when it is not the recorded pool's,
    why not and how to name another."""

    name: str
    note: str | None = None


def config_key_name(clients: Callable[[], AwsClients], stack_name: str) -> ConfigKey:
    """The key name the stack's recorded pool signs with; the default (with a note) when no pool
    is recorded, the pool uses a password, or the record cannot be read from here."""
    how = "pass --key-name with the name given to annex-admin pool set --key-name"
    try:
        pool = recorded_pool(clients(), pool_parameter(stack_name))
    except AnnexError as exc:
        return ConfigKey(DEFAULT_KEY_NAME, f"The pool recorded for stack {stack_name} could not be read "
                                           f"({exc.what}), so this names the key {DEFAULT_KEY_NAME}: {how}.")
    if pool is None:
        return ConfigKey(DEFAULT_KEY_NAME, f"No pool is recorded for stack {stack_name}, so this names the key "
                                           f"{DEFAULT_KEY_NAME}: {how}, or run `annex-admin pool set` first.")
    if pool.security != "idtoken":
        return ConfigKey(DEFAULT_KEY_NAME, f"Stack {stack_name}'s pool is recorded with its pool password: annex "
                                           "nodes need no signing key, and the lines about one do not apply.")
    return ConfigKey(pool.key_name)
