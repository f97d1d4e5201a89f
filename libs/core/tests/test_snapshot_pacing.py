"""The watcher's pacing of snapshot requests on Service Bus (`kairyu_core.bus.snapshot_pacing`)."""

from kairyu_core.bus.snapshot_pacing import SnapshotPacer


def test_a_first_request_is_answered_at_once() -> None:
    pacer = SnapshotPacer(interval_s=5)
    assert pacer.ask("kairyu-deployer", "Pod", "a", now=100.0)
    assert pacer.due(now=100.0) == []


def test_a_flood_of_requests_costs_one_snapshot_per_interval() -> None:
    pacer = SnapshotPacer(interval_s=5)
    answered = 0
    now = 0.0
    while now < 60.0:  # a request every 10 ms for a minute: 6000 requests
        answered += pacer.ask("kairyu-deployer", "Pod", f"r{now}", now=now)
        answered += len(pacer.due(now=now))
        now = round(now + 0.01, 2)
    assert answered == 12  # 0 s, 5 s, ..., 55 s


def test_a_held_request_is_answered_when_its_interval_ends_with_the_latest_id() -> None:
    pacer = SnapshotPacer(interval_s=5)
    assert pacer.ask("kairyu-deployer", "Pod", "first", now=0.0)
    assert not pacer.ask("kairyu-deployer", "Pod", "second", now=1.0)
    assert not pacer.ask("kairyu-deployer", "Pod", "third", now=2.0)
    assert pacer.holding == 1
    assert pacer.due(now=4.9) == []
    assert pacer.due(now=5.0) == [("kairyu-deployer", "Pod", "third")]
    assert pacer.holding == 0
    assert pacer.due(now=20.0) == []  # answered once, not again


def test_readers_and_kinds_are_paced_apart() -> None:
    pacer = SnapshotPacer(interval_s=5)
    assert pacer.ask("kairyu-deployer", "Pod", "a", now=0.0)
    assert pacer.ask("kairyu-deployer", "Deployment", "b", now=0.1)
    assert pacer.ask("kairyu-tuner", "Pod", "c", now=0.2)
    assert not pacer.ask("kairyu-deployer", "Pod", "d", now=0.3)


def test_an_answer_after_the_interval_covers_what_was_held() -> None:
    pacer = SnapshotPacer(interval_s=5)
    assert pacer.ask("kairyu-deployer", "Pod", "a", now=0.0)
    assert not pacer.ask("kairyu-deployer", "Pod", "b", now=1.0)
    assert pacer.ask("kairyu-deployer", "Pod", "c", now=6.0)  # answered now, b with it
    assert pacer.due(now=12.0) == []
