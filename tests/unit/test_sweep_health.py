"""check-setup's judgement of the enforcer's sweeps, from per-minute metric sums (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from annex_common.times import format_local_short
from annex_admin.check import SweepRecord, judge_sweeps, sweep_record

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def minutes_ago(n: float) -> datetime:
    return NOW - timedelta(minutes=n)


def test_the_record_is_the_newest_heartbeat_and_what_was_left_since():
    heartbeats = [(minutes_ago(11), 1.0), (minutes_ago(6), 1.0), (minutes_ago(1), 0.0)]
    unended = [(minutes_ago(11), 4.0), (minutes_ago(6), 1.0), (minutes_ago(3), 2.0)]
    assert sweep_record(heartbeats, unended) == SweepRecord(minutes_ago(6), 3.0)
    assert sweep_record([], unended) == SweepRecord(None, 0.0)


def test_a_recent_clean_sweep_passes_and_names_its_age():
    item = judge_sweeps(SweepRecord(minutes_ago(4), 0.0), NOW, minutes_ago(600))
    assert item.ok and item.detail == f"last sweep {format_local_short(minutes_ago(4))}, 4 min ago"


def test_a_sweep_older_than_fifteen_minutes_fails():
    assert judge_sweeps(SweepRecord(minutes_ago(15), 0.0), NOW, None).ok
    item = judge_sweeps(SweepRecord(minutes_ago(15.5), 0.0), NOW, None)
    assert not item.ok and "over 15 minutes" in item.detail


def test_a_sweep_that_left_an_instance_alive_fails():
    item = judge_sweeps(SweepRecord(minutes_ago(2), 1.0), NOW, None)
    assert not item.ok and "left 1 instance(s) it could not end" in item.detail


def test_no_sweep_is_expected_only_from_a_fresh_stack():
    assert judge_sweeps(SweepRecord(None, 0.0), NOW, minutes_ago(3)).ok
    assert not judge_sweeps(SweepRecord(None, 0.0), NOW, minutes_ago(16)).ok
    assert not judge_sweeps(SweepRecord(None, 0.0), NOW, None).ok
