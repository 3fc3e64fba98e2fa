"""How much of the account's Lambda concurrency the stack reserves, decided against the account.

The enforcer is the backstop that ends expired instances: a flood of broker Invokes (each may wait
for its project's lock) must not take every execution it needs, so it gets a reservation of its
own, and the broker a ceiling (a reservation caps a function as well as guaranteeing it). AWS keeps
at least ``UNRESERVED_MINIMUM`` of an account's concurrency unreserved and refuses a reservation
that would leave less; new accounts often have a total of 10. Where a reservation is impossible the
stack goes without it and setup says so, rather than failing the stack.
https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
"""

from __future__ import annotations

from dataclasses import dataclass

from annex_common.aws import AwsClients, aws_errors

# The sweep every 5 minutes and the state-change events share the enforcer: 10 lets a burst of
# starting instances be looked at while a sweep runs.
ENFORCER_RESERVED = 10
# Scientists' requests at once, all projects together; more wait and are retried by the client.
BROKER_CEILING = 20
UNRESERVED_MINIMUM = 100


@dataclass(frozen=True)
class ConcurrencyPlan:
    enforcer: int | None  # reserved executions, None: none reserved
    broker: int | None
    note: str  # what was not reserved and why ("" when both are)


def plan_concurrency(limit: int, unreserved: int, reserved_by_stack: int) -> ConcurrencyPlan:
    """The reservations the account allows: ``unreserved`` counts the stack's own current
    reservations as taken, so they are given back before deciding (an update re-reserves them)."""
    available = unreserved + reserved_by_stack
    if available - ENFORCER_RESERVED - BROKER_CEILING >= UNRESERVED_MINIMUM:
        return ConcurrencyPlan(ENFORCER_RESERVED, BROKER_CEILING, "")
    why = (f"the account's Lambda concurrency is {limit} with {available} unreserved, and AWS keeps "
           f"{UNRESERVED_MINIMUM} unreserved")
    if available - ENFORCER_RESERVED >= UNRESERVED_MINIMUM:
        return ConcurrencyPlan(ENFORCER_RESERVED, None, f"the broker has no ceiling: {why}")
    return ConcurrencyPlan(
        None, None,
        f"nothing reserved: {why}, so a flood of broker requests could delay the enforcer's sweep "
        "(ask AWS Support to raise the account's Lambda concurrency, then run setup again)",
    )


def reserved_of(clients: AwsClients, function_names: list[str]) -> int:
    """What these functions reserve now (0 for a function that does not exist yet)."""
    total = 0
    for name in function_names:
        with aws_errors(f"could not read the concurrency of function {name}"):
            try:
                answer = clients.awslambda.get_function_concurrency(FunctionName=name)
            except clients.awslambda.exceptions.ResourceNotFoundException:
                continue
        total += int(answer.get("ReservedConcurrentExecutions") or 0)
    return total


def account_concurrency(clients: AwsClients) -> tuple[int, int]:
    """(the account's concurrency limit, what of it is unreserved) in this region."""
    with aws_errors("could not read the account's Lambda limits"):
        limit = clients.awslambda.get_account_settings()["AccountLimit"]
    return int(limit["ConcurrentExecutions"]), int(limit["UnreservedConcurrentExecutions"])
