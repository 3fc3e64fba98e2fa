"""Who may ask: the principal STS proved, against the administrator's record of a scientist.

A caller is the record of one IAM user: the account, ARN and unique id IAM gave when the
administrator ran issue-credentials, never a name. Every other principal is refused, each with
what it is: another account's user of the same name, a user deleted and made again (a new unique
id), a role session (the broker's own role, a node role, any other), a federated user, the root
user; and so is a recorded scientist whose credentials were revoked, whatever she signed with.
"""

from __future__ import annotations

from annex_cloud.errors import Refused
from annex_cloud.identity import Caller
from annex_cloud.registry import UserRecord

YOUR_BUNDLE = "Use the credentials bundle your pool administrator issued to you (condor_annex does)."
ISSUE_AGAIN = "Ask your pool administrator to run `annex-admin issue-credentials` for you."

_NOT_A_USER = {
    "assumed-role": "a session of the IAM role {name}",
    "federated-user": "the federated user {name}",
    "root": "the root user of AWS account {account}",
    "other": "a principal of a kind the broker does not serve",
}


def require_user(caller: Caller) -> str:
    """The IAM user name of a caller that is an IAM user; Refused for every other principal."""
    if caller.kind == "user":
        return caller.name
    described = _NOT_A_USER.get(caller.kind, _NOT_A_USER["other"]).format(name=caller.name, account=caller.account)
    raise Refused(
        "the broker acts only for a scientist's IAM user",
        f"the identity proof was signed by {described} ({caller.arn})",
        YOUR_BUNDLE,
    )


def account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def bound_user(caller: Caller, record: UserRecord | None) -> UserRecord:
    """The administrator's record of the caller, when STS's account, ARN and unique id are all
    the record's and it is not revoked; Refused, saying which differs, otherwise."""
    name = require_user(caller)
    if record is None:
        raise Refused(
            f"IAM user {name} has no condor-annex project",
            "the administrator's record names no project for this user",
            ISSUE_AGAIN,
        )
    if not record.arn or not record.user_id:
        raise Refused(
            f"the administrator's record of IAM user {name} does not say which IAM user it is",
            "it was made by an earlier condor-annex, which recorded a name but not the user's ARN and "
            "unique id, and a name alone can be any account's user",
            f"{ISSUE_AGAIN} Issuing again records them and keeps the project and its caps.",
        )
    recorded_account = account_of(record.arn)
    if caller.account != recorded_account:
        raise Refused(
            f"IAM user {name} of AWS account {caller.account} is not the scientist the administrator recorded",
            f"the record is of {record.arn}, in account {recorded_account}: a user of the same name in "
            "another account is someone else",
            YOUR_BUNDLE,
        )
    if caller.arn != record.arn:
        raise Refused(
            f"IAM user {caller.arn} is not the scientist the administrator recorded",
            f"the record is of {record.arn}",
            YOUR_BUNDLE,
        )
    if caller.user_id != record.user_id:
        raise Refused(
            f"IAM user {name} is not the user the administrator issued credentials to",
            f"its unique id {caller.user_id} is not the recorded {record.user_id}: the user was deleted "
            "and made again under the same name",
            "If this user should act, ask your pool administrator to run `annex-admin issue-credentials` for it.",
        )
    if record.revoked:
        raise Refused(
            f"the credentials of IAM user {name} were revoked",
            f"the pool administrator revoked them at {record.revoked}; the broker refuses this user whatever "
            "it signs with, session credentials made earlier included",
            "Ask your pool administrator for new credentials if you should have them.",
        )
    return record
