"""How condor_annex asks the stack's broker: one Invoke per question, with AWS's proof of who asks,
made for this broker (its ARN) and this one request (its SHA-256)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from annex_cloud.identity import function_arn, request_digest, sign_identity_proof, sts_endpoint
from annex_common.aws import AwsClients, aws_errors, error_code, invoke_function
from annex_common.errors import AwsFailure, BadInput, Interrupted
from annex_common.times import local_times_in


@dataclass
class Broker:
    clients: AwsClients
    function_name: str
    region: str
    function_arn: str = ""  # the audience of every proof; "" until known (from the bundle, or STS)

    def audience(self) -> str:
        """The broker's ARN. A bundle names it; for one issued before bundles did, the account
        is her own (the broker's stack is in the account that made her user), as STS says."""
        if not self.function_arn:
            with aws_errors("could not learn the AWS account of these credentials",
                            "Ask your pool administrator for a new bundle (it names the broker)."):
                identity = self.clients.client("sts").get_caller_identity()
            partition = str(identity["Arn"]).split(":")[1]
            self.function_arn = function_arn(partition, self.region, str(identity["Account"]), self.function_name)
        return self.function_arn

    def ask(self, op: str, params: dict[str, Any], what: str) -> dict[str, Any]:
        """The broker's answer to ``op``; a refusal is ``BadInput`` (nothing was changed)."""
        credentials = self.clients.session.get_credentials()
        if credentials is None:
            raise BadInput(what, "the credentials bundle holds no keys", "Ask your pool administrator for a new bundle.")
        proof = sign_identity_proof(
            credentials.get_frozen_credentials(),
            region=self.region,
            sts_url=sts_endpoint(self.clients.session, self.region),
            audience=self.audience(),
            request=request_digest(op, params),
        )
        try:
            answer = invoke_function(
                self.clients, self.function_name, {"op": op, "identity": proof, "params": params}, what
            )
        except AwsFailure as exc:
            if isinstance(exc.__cause__, botocore.exceptions.ClientError) and error_code(exc.__cause__) == "ResourceNotFoundException":
                raise BadInput(
                    f"no condor-annex stack with a broker ({self.function_name}) in {self.region}",
                    "the region has not been set up, or the bundle names the wrong region or stack",
                    "Ask your pool administrator to run `annex-admin setup` (or check region and stack_name in your bundle).",
                ) from exc
            raise
        if answer.get("ok") is True and isinstance(answer.get("result"), dict):
            return answer["result"]
        refused = answer.get("refused")
        if isinstance(refused, dict):
            raise refusal(refused, what)
        if "busy" in answer:
            raise AwsFailure(what, f"the broker is busy with another request of your project ({answer['busy']})", "Retry in a minute.")
        raise AwsFailure(what, "the broker gave an answer condor_annex does not understand", "Update condor_annex, or tell your pool administrator.")


def refusal(refused: dict[str, Any], what: str) -> BadInput:
    """The broker's refusal (what, why, next), as the one message the scientist reads: the broker
    writes moments in UTC (it knows no one's zone); she reads them in her local time."""
    return BadInput(*(local_times_in(str(refused.get(key, default))) for key, default in
                      (("what", what), ("why", ""), ("next", ""))))


def first_broken(plan: dict[str, Any], what: str) -> BadInput | None:
    """The first cap a broker's plan breaks, as a refusal; None when it breaks none. More than one
    is said in the same message."""
    breaks = [b for b in plan.get("breaks") or [] if isinstance(b, dict)]
    if not breaks:
        return None
    error = refusal(breaks[0], what)
    if len(breaks) > 1:
        also = "; ".join(local_times_in(str(b.get("what", ""))) for b in breaks[1:])
        error.why = f"{error.why}; it would also break a cap: {also}" if error.why else f"it would also break a cap: {also}"
    return error


def sent_then_interrupted(doing: str, annex_name: str, again: str) -> Interrupted:
    """Ctrl-C while a request that changes an annex was with the broker: the broker carries it
    out whatever happens here, so it may have gone through; say so, and how to see it."""
    return Interrupted(
        f"interrupted while the broker was {doing} annex {annex_name}: it may have gone through",
        "the request had been sent, and the broker carries it out whatever happens to this command",
        f"See it with `condor_annex status --annex-name {annex_name}`. {again}",
    )


def instance_rows(broker: Broker, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """Every instance row status lists, page after page (each page is one broker answer, well
    under Lambda's limit)."""
    rows: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        asked = {**params, "instances": True, **({"page": page} if page else {})}
        answer = broker.ask("status", asked, what)
        rows += answer.get("instances", [])
        page = answer.get("next_page")
        if not page:
            return rows
