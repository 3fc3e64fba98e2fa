"""Who is asking, as AWS proves it: a signed sts:GetCallerIdentity request, bound to one request.

The client signs (SigV4, its own keys) a GetCallerIdentity request whose signed headers name the
broker it is meant for (its ARN: account, region and name) and the request it is made for (the
SHA-256 of the operation and its parameters, as canonical JSON). It sends the signed headers in
its Invoke payload. The broker recomputes both, sends the request unchanged to STS at an address
the broker itself chooses, and takes the caller's ARN, unique id and account from STS's answer.
The signature covers the host, the body and both headers, so the proof cannot be pointed at
another endpoint, turned into another action, sent to another broker or used for another
request; STS (and the broker, by its own clock) refuse it after 15 minutes. The client's own
claims about who it is are never read: who the principal is, and whether it is the scientist the
administrator recorded, is decided from STS's answer alone (annex_cloud.broker.who).
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

AUDIENCE_HEADER = "X-Annex-Broker"  # the broker's function ARN, unqualified
REQUEST_HEADER = "X-Annex-Request"  # SHA-256 (hex) of the request the proof is for
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
# Only these headers of the proof are forwarded to STS; the rest are dropped.
FORWARDED_HEADERS = (
    "authorization", "x-amz-date", "x-amz-security-token", "content-type",
    AUDIENCE_HEADER.lower(), REQUEST_HEADER.lower(),
)
SIGNED_AT_LEAST = ("host", AUDIENCE_HEADER.lower(), REQUEST_HEADER.lower())
MAX_HEADER_LENGTH = 4096
MAX_HEADERS = 32
PROOF_LIFE_SECONDS = 15 * 60  # as STS: a SigV4 request is refused 15 minutes either side of its date
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
FUNCTION_ARN_RE = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}$")
_NS_RE = re.compile(r"^\{[^}]*\}")

# What STS names: arn:<partition>:<service>::<account>:<resource>
_PRINCIPAL_RE = re.compile(r"^arn:aws[a-z-]*:(?P<service>iam|sts)::(?P<account>[0-9]{12}):(?P<resource>.+)$")
_USER_NAME_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")


class NotProven(Exception):
    """The caller's identity could not be established."""


@dataclass(frozen=True)
class Caller:
    """The principal STS says signed the proof."""

    arn: str
    account: str
    user_id: str  # IAM's unique id: AIDA… for a user, AROA…:<session> for a role session
    kind: str  # user | assumed-role | federated-user | root | other
    name: str  # the user's name, the role's name, the federated user's name; "" for root or other


def principal(arn: str, user_id: str, account: str) -> Caller:
    """What kind of principal STS's answer names (pure: the ARN's shape decides)."""
    match = _PRINCIPAL_RE.match(arn)
    if not match:
        return Caller(arn, account, user_id, "other", "")
    service, resource = match["service"], match["resource"]
    kind, name = "other", ""
    if service == "iam" and resource == "root":
        kind = "root"
    elif service == "iam" and resource.startswith("user/"):
        candidate = resource.rsplit("/", 1)[1]
        if _USER_NAME_RE.fullmatch(candidate):
            kind, name = "user", candidate
    elif service == "sts" and resource.startswith("assumed-role/") and resource.count("/") >= 2:
        kind, name = "assumed-role", resource.split("/")[1]
    elif service == "sts" and resource.startswith("federated-user/"):
        kind, name = "federated-user", resource.split("/", 1)[1]
    return Caller(arn, match["account"], user_id, kind, name)


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def request_digest(op: str, params: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) a proof signs: the operation and its parameters, canonical JSON."""
    return hashlib.sha256(canonical_json({"op": op, "params": dict(params)})).hexdigest()


def unqualified_function_arn(arn: str) -> str:
    """A function's ARN without a version or alias: arn:aws:lambda:<region>:<account>:function:<name>."""
    return ":".join(arn.split(":")[:7])


def function_arn(partition: str, region: str, account: str, name: str) -> str:
    return f"arn:{partition}:lambda:{region}:{account}:function:{name}"


def sts_endpoint(session: Any, region: str) -> str:
    """The regional STS address for ``region``, as this boto3 session resolves it.

    Client and broker each call this with their own session; both then name the same host
    (regional STS, or the emulator when AWS_ENDPOINT_URL is set), which the signature covers.
    """
    import botocore.config

    config = botocore.config.Config(region_name=region)
    client = session.client("sts", region_name=region, config=config)
    url = client.meta.endpoint_url
    if url.rstrip("/") == "https://sts.amazonaws.com":
        url = f"https://sts.{region}.amazonaws.com"
    return url.rstrip("/") + "/"


def sign_identity_proof(
    credentials: Any, *, region: str, sts_url: str, audience: str, request: str
) -> dict[str, Any]:
    """The proof a client puts in its request: signed headers and body of GetCallerIdentity,
    for the broker ``audience`` (its ARN) and the request whose digest is ``request``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    signed = AWSRequest(
        method="POST",
        url=sts_url,
        data=STS_BODY,
        headers={"Content-Type": CONTENT_TYPE, AUDIENCE_HEADER: audience, REQUEST_HEADER: request},
    )
    SigV4Auth(credentials, "sts", region).add_auth(signed)
    headers = {name: value for name, value in signed.headers.items() if name.lower() in FORWARDED_HEADERS}
    return {"headers": headers, "body": STS_BODY}


Post = Callable[[str, bytes, Mapping[str, str]], tuple[int, bytes]]


def http_post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the broker's own URL)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def prove_caller(
    proof: Any, *, sts_url: str, audience: str, request: str, now: datetime, post: Post = http_post
) -> Caller:
    """The principal that signed ``proof`` for this broker and this request, as STS answers;
    NotProven otherwise. Whether that principal may ask is not decided here."""
    headers = checked_headers(proof, audience, request, now)
    status, answer = post(sts_url, STS_BODY.encode(), headers)
    if status != 200:
        raise NotProven(f"STS refused the identity proof ({_sts_error(answer) or f'HTTP {status}'})")
    arn, user_id, account = (_find_text(answer, tag) or "" for tag in ("Arn", "UserId", "Account"))
    if not arn or not user_id or not account:
        raise NotProven("STS's answer names no ARN, unique id or account")
    caller = principal(arn, user_id, account)
    if caller.account != account:
        raise NotProven(f"STS's answer is inconsistent (ARN {arn}, account {account})")
    return caller


def checked_headers(proof: Any, audience: str, request: str, now: datetime) -> dict[str, str]:
    """The headers to forward, once the proof is well formed, for this broker and this request,
    signs both, and is dated within its life. Pure: NotProven says what is wrong."""
    if not isinstance(proof, dict) or proof.get("body") != STS_BODY or not isinstance(proof.get("headers"), dict):
        raise NotProven("the request carries no identity proof")
    if len(proof["headers"]) > MAX_HEADERS:
        raise NotProven("the identity proof is malformed (too many headers)")
    headers: dict[str, str] = {}
    for name, value in proof["headers"].items():
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            raise NotProven("the identity proof is malformed (a header name is not a header name)")
        if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH or CONTROL_RE.search(value):
            raise NotProven(f"the identity proof is malformed (header {name} is not one line of text)")
        if name.lower() in FORWARDED_HEADERS:
            headers[name.lower()] = value
    if headers.get(AUDIENCE_HEADER.lower()) != audience:
        raise NotProven(f"the identity proof was made for another broker than {audience}")
    if headers.get(REQUEST_HEADER.lower()) != request:
        raise NotProven("the identity proof was made for another request")
    signed = re.search(r"SignedHeaders=([a-z0-9;-]+)", headers.get("authorization", ""))
    signed_names = set(signed.group(1).split(";")) if signed else set()
    if not set(SIGNED_AT_LEAST) <= signed_names:
        raise NotProven("the identity proof does not sign its host, broker and request")
    check_fresh(headers.get("x-amz-date", ""), now)
    return headers


def check_fresh(amz_date: str, now: datetime) -> None:
    """A proof lives 15 minutes either side of its date, as STS judges a signed request."""
    try:
        signed_at = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise NotProven("the identity proof carries no signing date") from None
    age = (now - signed_at).total_seconds()
    if abs(age) > PROOF_LIFE_SECONDS:
        when = "ago" if age > 0 else "ahead"
        raise NotProven(
            f"the identity proof was signed {abs(age) / 60:.0f} minutes {when} ({amz_date}); "
            f"a proof lives {PROOF_LIFE_SECONDS // 60} minutes"
        )


def _find_text(document: bytes, tag: str) -> str | None:
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if _NS_RE.sub("", element.tag) == tag:
            return (element.text or "").strip()
    return None


def _sts_error(document: bytes) -> str:
    code = _find_text(document, "Code")
    message = _find_text(document, "Message")
    return ": ".join(part for part in (code, message) if part)
