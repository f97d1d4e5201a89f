"""OtherServices: the deployer and the tuner skip the other's Workspaces without reading them."""

from kairyu_contracts.workloads import OtherServices


def test_a_generation_known_to_be_another_services_is_skipped_until_the_spec_changes() -> None:
    others = OtherServices()
    assert not others.handle_elsewhere("uid-1", 1)
    others.remember("uid-1", 1)
    assert others.handle_elsewhere("uid-1", 1)
    assert not others.handle_elsewhere("uid-1", 2), "a new generation may be ours: read it"
    assert not others.handle_elsewhere("uid-2", 1)


def test_it_forgets_the_oldest_past_its_limit() -> None:
    others = OtherServices(limit=2)
    for uid in ("a", "b", "c"):
        others.remember(uid, 1)
    assert [others.handle_elsewhere(uid, 1) for uid in ("a", "b", "c")] == [False, True, True]
