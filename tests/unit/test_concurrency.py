"""How much Lambda concurrency the stack reserves, from what the account allows (no AWS here)."""

from __future__ import annotations

from annex_admin.concurrency import BROKER_CEILING, ENFORCER_RESERVED, UNRESERVED_MINIMUM, plan_concurrency


def test_an_ordinary_account_reserves_the_enforcer_and_caps_the_broker():
    plan = plan_concurrency(1000, 1000, 0)
    assert (plan.enforcer, plan.broker, plan.note) == (ENFORCER_RESERVED, BROKER_CEILING, "")


def test_the_stacks_own_reservations_are_given_back_before_deciding():
    # An update of a stack that already reserves both, in an account with exactly enough.
    needed = UNRESERVED_MINIMUM + ENFORCER_RESERVED + BROKER_CEILING
    assert plan_concurrency(needed, UNRESERVED_MINIMUM, ENFORCER_RESERVED + BROKER_CEILING).broker == BROKER_CEILING
    assert plan_concurrency(needed, UNRESERVED_MINIMUM, 0).broker is None


def test_room_for_the_enforcer_only_leaves_the_broker_without_a_ceiling_and_says_so():
    plan = plan_concurrency(115, 115, 0)
    assert plan.enforcer == ENFORCER_RESERVED and plan.broker is None
    assert plan.note.startswith("the broker has no ceiling") and "115" in plan.note


def test_a_new_account_of_ten_reserves_nothing_and_says_why():
    plan = plan_concurrency(10, 10, 0)
    assert plan.enforcer is None and plan.broker is None
    assert "nothing reserved" in plan.note and "AWS keeps 100 unreserved" in plan.note and "AWS Support" in plan.note
