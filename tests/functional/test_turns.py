"""Caps that cannot be overtaken: a launch, an extension and a terminate of one project take turns,
and each counts what the others committed, however long a launch's fleet rounds take.

As in test_launch.py, the broker's operations run as components in this process over the real
emulator, so that a test can slow a launch between its fleet rounds (a pause after each
CreateFleet answer, on that launch's own EC2 client) and make EC2's list lag behind a launch (its
DescribeInstances answers leave the new annex out, as AWS's eventually consistent list may for a
while). Fleet rounds are shortened to one or two instances, so that a launch of a few instances
has the rounds of a large one.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from annex_cloud import fleet, registry
from annex_cloud.broker.ops import end_annex, extend, launch, price_book
from annex_cloud.caps import Caps
from annex_cloud.errors import Refused
from annex_common.aws import make_clients
from templates import contract
from tests.functional.test_broker import live
from tests.functional.test_launch import annex_instances, broker_call, launch_params, scientist
from tests.unit.test_template import render

ROUND_PAUSE = 3.0  # seconds each slowed launch waits after a fleet answer


def slowed(after_first_round: threading.Event):
    """A broker-side client whose launches pause after every fleet answer; the event is set when
    the first answer has arrived (its instances then exist)."""
    own = make_clients(region="us-east-1")

    def pause(**_):
        after_first_round.set()
        time.sleep(ROUND_PAUSE)

    own.ec2.meta.events.register("after-call.ec2.CreateFleet", pause)
    return own


def lagging(hidden_annex: str):
    """A broker-side client to which EC2's list does not show ``hidden_annex`` yet."""
    own = make_clients(region="us-east-1")

    def hide(parsed, **_):
        for reservation in parsed.get("Reservations", []):
            reservation["Instances"] = [
                i for i in reservation.get("Instances", [])
                if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(contract.TAG_ANNEX_NAME) != hidden_annex
            ]

    own.ec2.meta.events.register("after-call.ec2.DescribeInstances", hide)
    return own


def in_background(work) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def expiries(annex: str) -> set[str]:
    return {t["Value"] for i in annex_instances(annex) for t in i["Tags"] if t["Key"] == contract.TAG_EXPIRY}


def test_the_project_lock_outlives_the_broker_function():
    """A live launch never loses its lock: the lease is longer than the function may run."""
    functions = {name: r for name, r in render()["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    assert registry.LOCK_SECONDS > max(f["Properties"]["Timeout"] for f in functions.values())


def test_a_launch_whose_lock_lapsed_between_rounds_never_lets_a_second_launch_break_the_cap(
    aws, clients, tmp_path, monkeypatch
):
    """Two launches of 6 against a cap of 8, the first in rounds of 2 with pauses longer than its
    lock's lease (shortened here to 1 s: as if a launch outlived it). The second takes the lapsed
    lock and is admitted for what the first had launched so far; the first must then launch no
    further round."""
    monkeypatch.setattr(fleet, "FLEET_CHUNK", 2)
    monkeypatch.setattr(registry, "LOCK_SECONDS", 1)
    _ctx, _pool, outputs = scientist(tmp_path, caps=Caps(8, 168, 500.0))
    first_round = threading.Event()
    slow = slowed(first_round)
    first = broker_call(slow, outputs, tmp_path / "b.toml", launch_params("first", 6, "a" * 32))
    thread, outcome = in_background(lambda: launch(first))
    assert first_round.wait(60)
    second = launch(broker_call(clients, outputs, tmp_path / "b.toml", launch_params("second", 6, "b" * 32)))
    thread.join(120)
    assert "error" not in outcome, outcome
    assert len(second["instance_ids"]) == 6
    assert len(live()) <= 8, (len(outcome["result"]["instance_ids"]), outcome["result"]["stopped_by"])
    assert "lock" in outcome["result"]["stopped_by"]


def test_terminate_during_a_launch_of_the_same_name_ends_every_round(aws, clients, tmp_path, monkeypatch):
    """Terminate sent while a launch of the annex is between rounds waits for the launch, then
    ends all it launched: no round comes after the end."""
    monkeypatch.setattr(fleet, "FLEET_CHUNK", 2)
    _ctx, _pool, outputs = scientist(tmp_path)
    first_round = threading.Event()
    slow = slowed(first_round)
    thread, outcome = in_background(
        lambda: launch(broker_call(slow, outputs, tmp_path / "b.toml", launch_params("doomed", 6, "c" * 32)))
    )
    assert first_round.wait(60)
    ended = end_annex(broker_call(clients, outputs, tmp_path / "b.toml", {"annex_name": "doomed", "request_id": "d" * 32}))
    thread.join(120)
    assert "error" not in outcome, outcome
    assert annex_instances("doomed") == []
    assert sorted(ended["instance_ids"]) == sorted(outcome["result"]["instance_ids"])
    assert len(ended["instance_ids"]) == 6 and ended["already_gone"] is False


def test_an_extension_during_a_launch_counts_it_before_ec2_lists_it_and_moves_every_lease(
    aws, clients, tmp_path, monkeypatch
):
    """Annex "old" (2 for 10 h) runs; "new" (2 for 10 h, in two rounds) is being launched when
    "old" is asked to run 12 h, which the spend cap (42 instance hours) refuses once "new" counts.
    EC2's list does not show "new" yet: the broker's own launch records do. An extension of "new"
    itself then moves the lease of both its instances, which EC2 does not list yet either."""
    monkeypatch.setattr(fleet, "FLEET_CHUNK", 1)
    _ctx, _pool, outputs = scientist(tmp_path)
    bundle = tmp_path / "b.toml"
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def call_with(own, params):
        call = broker_call(own, outputs, bundle, params)
        hourly = price_book(call).price("m5.large")
        return dataclasses.replace(call, caps=Caps(32, 168, 42 * hourly))

    def launch_of(name: str, request_id: str) -> dict:
        params = launch_params(name, 2, request_id)
        params.update(instance_types=["m5.large"], expiry=(now + timedelta(hours=10)).strftime(contract.EXPIRY_FORMAT))
        return params

    def extension(name: str, hours: int, request_id: str, shorten: bool = False) -> dict:
        ends = (now + timedelta(hours=hours)).strftime(contract.EXPIRY_FORMAT)
        return {"annex_name": name, "expiry": ends, "shorten": shorten, "request_id": request_id}

    launch(call_with(clients, launch_of("old", "e" * 32)))
    first_round = threading.Event()
    slow = slowed(first_round)
    thread, outcome = in_background(lambda: launch(call_with(slow, launch_of("new", "f" * 32))))
    assert first_round.wait(60)
    behind = lagging("new")
    with pytest.raises(Refused) as refused:
        extend(call_with(behind, extension("old", 12, "1" * 32)))
    thread.join(120)
    assert "error" not in outcome, outcome
    assert "spend cap" in refused.value.what, json.dumps(refused.value.to_dict())
    assert len(outcome["result"]["instance_ids"]) == 2
    assert expiries("old") == {(now + timedelta(hours=10)).strftime(contract.EXPIRY_FORMAT)}

    shorter = extend(call_with(behind, extension("new", 9, "2" * 32, shorten=True)))
    assert sorted(shorter["instance_ids"]) == sorted(outcome["result"]["instance_ids"])
    assert expiries("new") == {(now + timedelta(hours=9)).strftime(contract.EXPIRY_FORMAT)}
