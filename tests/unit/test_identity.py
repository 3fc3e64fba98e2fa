"""Who asks, without I/O: a proof's shape, its broker, its request and its age; the principal STS
names; and the administrator's record it must be."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.credentials import Credentials

from annex_cloud.broker import operation
from annex_cloud.broker.who import bound_user
from annex_cloud.errors import Refused
from annex_cloud.identity import (
    NotProven,
    checked_headers,
    principal,
    prove_caller,
    request_digest,
    sign_identity_proof,
    unqualified_function_arn,
)
from annex_cloud.registry import UserRecord

BROKER = "arn:aws:lambda:us-east-1:123456789012:function:HTCondorAnnex-broker"
STS = "https://sts.us-east-1.amazonaws.com/"
ARN = "arn:aws:iam::123456789012:user/condor-annex/bob"
USER_ID = "AIDAEXAMPLEBOB000001"
RECORD = UserRecord("bob", "OtherLab", ARN, USER_ID)
PARAMS = {"annex_name": "a1", "request_id": "0" * 32}


def now() -> datetime:
    return datetime.now(timezone.utc)


def proof(*, audience: str = BROKER, op: str = "terminate", params: dict = PARAMS, token: str | None = None) -> dict:
    credentials = Credentials("AKIAEXAMPLEKEY000001", "secret", token)
    return sign_identity_proof(credentials, region="us-east-1", sts_url=STS, audience=audience,
                               request=request_digest(op, params))


def sts_answer(arn: str, user_id: str, account: str = "123456789012"):
    body = (f"<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>{arn}</Arn><UserId>{user_id}</UserId>"
            f"<Account>{account}</Account></GetCallerIdentityResult></GetCallerIdentityResponse>").encode()
    sent: list[dict] = []

    def post(_url, _body, headers):
        sent.append(dict(headers))
        return 200, body

    post.sent = sent  # type: ignore[attr-defined]
    return post


# --- the request's digest ------------------------------------------------------------------------


def test_the_digest_is_of_the_operation_and_its_parameters_in_any_key_order():
    assert request_digest("terminate", {"a": 1, "b": [True, None]}) == request_digest("terminate", {"b": [True, None], "a": 1})
    assert request_digest("terminate", PARAMS) != request_digest("extend", PARAMS)
    assert request_digest("terminate", PARAMS) != request_digest("terminate", {**PARAMS, "annex_name": "a2"})
    assert len(request_digest("status", {})) == 64


def test_a_proof_made_for_one_request_is_refused_for_another():
    made = proof(op="status", params={})
    checked_headers(made, BROKER, request_digest("status", {}), now())  # its own request: fine
    with pytest.raises(NotProven, match="another request"):
        checked_headers(made, BROKER, request_digest("terminate", PARAMS), now())


def test_a_proof_names_the_brokers_arn_not_its_name():
    made = proof(audience="HTCondorAnnex-broker")
    with pytest.raises(NotProven, match="another broker"):
        checked_headers(made, BROKER, request_digest("terminate", PARAMS), now())
    other_account = BROKER.replace("123456789012", "999999999999")
    with pytest.raises(NotProven, match="another broker"):
        checked_headers(proof(audience=other_account), BROKER, request_digest("terminate", PARAMS), now())


def test_a_proof_that_does_not_sign_its_request_header_is_refused():
    made = proof()
    made["headers"]["Authorization"] = made["headers"]["Authorization"].replace(";x-annex-request", "")
    with pytest.raises(NotProven, match="does not sign"):
        checked_headers(made, BROKER, request_digest("terminate", PARAMS), now())


def test_a_proof_lives_fifteen_minutes_by_the_brokers_clock():
    made = proof()
    digest = request_digest("terminate", PARAMS)
    checked_headers(made, BROKER, digest, now() + timedelta(minutes=14))
    with pytest.raises(NotProven, match="minutes ago"):
        checked_headers(made, BROKER, digest, now() + timedelta(minutes=16))
    with pytest.raises(NotProven, match="minutes ahead"):
        checked_headers(made, BROKER, digest, now() - timedelta(minutes=16))
    del made["headers"]["X-Amz-Date"]
    with pytest.raises(NotProven, match="no signing date"):
        checked_headers(made, BROKER, digest, now())


@pytest.mark.parametrize("header, value", [
    ("X-Annex-Broker", BROKER + "\r\nX-Evil: 1"),
    ("Authorization", "AWS4-HMAC-SHA256 x\n"),
    ("X-Amz-Date", 20261206),
    ("Bad Header\r\n", "x"),
    ("X-Amz-Security-Token", "x" * 5000),
])
def test_malformed_headers_are_not_proven_never_a_crash(header, value):
    made = proof()
    made["headers"][header] = value
    with pytest.raises(NotProven, match="malformed"):
        checked_headers(made, BROKER, request_digest("terminate", PARAMS), now())


@pytest.mark.parametrize("event", [
    {"op": ["status"]}, {"op": {"x": 1}}, {"op": 7}, {"op": None}, ["status"], None, {"op": "launch-more"},
])
def test_an_operation_that_is_not_a_known_name_is_refused(event):
    with pytest.raises(Refused, match="does not know this request"):
        operation(event)


def test_parameters_that_are_not_plain_json_are_refused():
    with pytest.raises(Refused, match="not an object"):
        operation({"op": "status", "params": ["x"]})
    with pytest.raises(Refused, match="not plain JSON"):
        operation({"op": "status", "params": {"x": float("nan")}})


def test_the_broker_forwards_the_signed_request_and_reads_the_answer():
    post = sts_answer(ARN, USER_ID)
    caller = prove_caller(proof(), sts_url=STS, audience=BROKER, request=request_digest("terminate", PARAMS),
                          now=now(), post=post)
    assert (caller.kind, caller.name, caller.account, caller.user_id, caller.arn) == (
        "user", "bob", "123456789012", USER_ID, ARN)
    assert {"x-annex-broker", "x-annex-request", "authorization", "x-amz-date"} <= set(post.sent[0])


# --- the principal STS names ---------------------------------------------------------------------


@pytest.mark.parametrize("arn, kind, name", [
    ("arn:aws:iam::123456789012:user/bob", "user", "bob"),
    ("arn:aws:iam::123456789012:user/condor-annex/bob", "user", "bob"),
    ("arn:aws-us-gov:iam::123456789012:user/bob", "user", "bob"),
    ("arn:aws:sts::123456789012:assumed-role/HTCondorAnnex-BrokerRole-X/HTCondorAnnex-broker", "assumed-role",
     "HTCondorAnnex-BrokerRole-X"),
    ("arn:aws:sts::123456789012:federated-user/bob", "federated-user", "bob"),
    ("arn:aws:iam::123456789012:root", "root", ""),
    ("arn:aws:sts::123456789012:user/moto", "other", ""),
    ("not an arn", "other", ""),
])
def test_the_kind_of_principal_is_read_from_its_arn(arn, kind, name):
    found = principal(arn, "AIDA", "123456789012")
    assert (found.kind, found.name) == (kind, name)


def test_a_qualified_function_arn_is_the_functions_own():
    assert unqualified_function_arn(BROKER + ":$LATEST") == BROKER
    assert unqualified_function_arn(BROKER) == BROKER


# --- the administrator's record --------------------------------------------------------------------


def caller(arn: str = ARN, user_id: str = USER_ID, account: str = "123456789012"):
    return principal(arn, user_id, account)


def test_the_recorded_user_is_served():
    assert bound_user(caller(), RECORD) == RECORD


@pytest.mark.parametrize("who, record, what, why", [
    (caller(ARN.replace("123456789012", "999999999999"), "AIDAOTHERACCOUNT0001", "999999999999"), RECORD,
     "of AWS account 999999999999 is not the scientist", "another account is someone else"),
    (caller(user_id="AIDARECREATEDBOB0002"), RECORD, "is not the user the administrator issued credentials to",
     "deleted and made again"),
    (caller(ARN.replace("/condor-annex/", "/elsewhere/")), RECORD, "is not the scientist the administrator recorded",
     "the record is of"),
    (caller("arn:aws:sts::123456789012:assumed-role/HTCondorAnnex-BrokerRole-X/HTCondorAnnex-broker",
            "AROAEXAMPLE:HTCondorAnnex-broker"), RECORD, "acts only for a scientist's IAM user",
     "a session of the IAM role HTCondorAnnex-BrokerRole-X"),
    (caller("arn:aws:sts::123456789012:assumed-role/annex-node-x/i-0123", "AROAEXAMPLE:i-0123"), RECORD,
     "acts only for a scientist's IAM user", "a session of the IAM role annex-node-x"),
    (caller("arn:aws:sts::123456789012:federated-user/bob", "123456789012:bob"), RECORD,
     "acts only for a scientist's IAM user", "the federated user bob"),
    (caller("arn:aws:iam::123456789012:root", "123456789012"), RECORD, "acts only for a scientist's IAM user",
     "the root user of AWS account 123456789012"),
    (caller(), None, "has no condor-annex project", "names no project"),
    (caller(), UserRecord("bob", "OtherLab"), "does not say which IAM user it is", "earlier condor-annex"),
    (caller(), UserRecord("bob", "OtherLab", ARN, USER_ID, "2026-12-06T10:00:00Z"), "were revoked",
     "session credentials made earlier included"),
])
def test_every_other_principal_is_refused_saying_why(who, record, what, why):
    with pytest.raises(Refused) as caught:
        bound_user(who, record)
    assert what in caught.value.what and why in caught.value.why, caught.value.to_dict()
    assert caught.value.next_step


def test_an_old_record_tells_the_administrator_to_issue_again():
    with pytest.raises(Refused) as caught:
        bound_user(caller(), UserRecord("bob", "OtherLab"))
    assert "annex-admin issue-credentials" in caught.value.next_step


def test_a_requests_record_names_it_without_its_secret_material():
    """Sent again after a Ctrl-C, a launch carries fresh pool material (never kept on disk): it is
    the same request. Any other change makes it another request."""
    from annex_cloud.broker.requests import fingerprint

    launch = {"annex_name": "a", "count": 2, "request_id": "r" * 32,
              "pool": {"collector_host": "cm:9618", "security": "idtoken", "material": "c2VjcmV0"}}
    again = {**launch, "pool": {**launch["pool"], "material": "YW5vdGhlcg=="}}
    assert fingerprint("launch", launch) == fingerprint("launch", again)
    assert fingerprint("launch", launch) != fingerprint("launch", {**launch, "count": 3})
    assert fingerprint("extend", {"annex_name": "a", "token": "eA=="}) == fingerprint("extend", {"annex_name": "a", "token": "eQ=="})
    assert fingerprint("extend", {"annex_name": "a"}) != fingerprint("terminate", {"annex_name": "a"})
