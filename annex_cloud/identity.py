"""Who is asking, as AWS proves it: a signed sts:GetCallerIdentity request.

The client signs (SigV4, its own keys) a GetCallerIdentity request whose signed headers name the
broker it is meant for, and sends the signed headers in its Invoke payload. The broker sends
that request, unchanged, to STS at an address the broker itself chooses, and takes the caller's
ARN from STS's answer. The signature covers the host, the body and the audience header, so the
proof cannot be pointed at another endpoint, turned into another action, or replayed to another
broker; STS refuses it after 15 minutes. The client's own claims about who it is are never read.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Callable, Mapping

AUDIENCE_HEADER = "X-Annex-Broker"
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
# Only these headers of the proof are forwarded to STS; the rest are dropped.
FORWARDED_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token", "content-type", AUDIENCE_HEADER.lower())
MAX_HEADER_LENGTH = 4096
USER_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>[0-9]{12}):user/(?:[^/]+/)*(?P<name>[A-Za-z0-9+=,.@_-]{1,64})$")
_NS_RE = re.compile(r"^\{[^}]*\}")


class NotProven(Exception):
    """The caller's identity could not be established."""


@dataclass(frozen=True)
class Caller:
    arn: str
    account: str
    user_name: str


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


def sign_identity_proof(credentials: Any, *, region: str, sts_url: str, audience: str) -> dict[str, Any]:
    """The proof a client puts in its request: signed headers and body of GetCallerIdentity."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(
        method="POST",
        url=sts_url,
        data=STS_BODY,
        headers={"Content-Type": CONTENT_TYPE, AUDIENCE_HEADER: audience},
    )
    SigV4Auth(credentials, "sts", region).add_auth(request)
    headers = {name: value for name, value in request.headers.items() if name.lower() in FORWARDED_HEADERS}
    return {"headers": headers, "body": STS_BODY}


Post = Callable[[str, bytes, Mapping[str, str]], tuple[int, bytes]]


def http_post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the broker's own URL)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def prove_caller(proof: Any, *, sts_url: str, audience: str, post: Post = http_post) -> Caller:
    """The IAM user that signed ``proof`` for this broker, as STS answers; NotProven otherwise."""
    headers = _checked_headers(proof, audience)
    status, answer = post(sts_url, STS_BODY.encode(), headers)
    if status != 200:
        raise NotProven(f"STS refused the identity proof ({_sts_error(answer) or f'HTTP {status}'})")
    arn = _find_text(answer, "Arn")
    match = USER_ARN_RE.match(arn or "")
    if not match:
        raise NotProven(f"the caller is not an IAM user ({arn or 'no ARN in the answer'})")
    return Caller(arn=arn or "", account=match["account"], user_name=match["name"])


def _checked_headers(proof: Any, audience: str) -> dict[str, str]:
    if not isinstance(proof, dict) or proof.get("body") != STS_BODY or not isinstance(proof.get("headers"), dict):
        raise NotProven("the request carries no identity proof")
    headers: dict[str, str] = {}
    for name, value in proof["headers"].items():
        if not isinstance(name, str) or not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
            raise NotProven("the identity proof is malformed")
        if name.lower() in FORWARDED_HEADERS:
            headers[name.lower()] = value
    if headers.get(AUDIENCE_HEADER.lower()) != audience:
        raise NotProven("the identity proof was made for another broker")
    signed = re.search(r"SignedHeaders=([a-z0-9;-]+)", headers.get("authorization", ""))
    signed_names = set(signed.group(1).split(";")) if signed else set()
    if not {"host", AUDIENCE_HEADER.lower()} <= signed_names:
        raise NotProven("the identity proof does not sign its host and audience")
    return headers


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
