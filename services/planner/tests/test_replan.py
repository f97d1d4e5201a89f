"""What the planner takes from a ReplanRequested: known SKUs only, a bounded one-line reason."""

from kairyu_contracts.catalog import Cloud, load_catalog
from kairyu_planner.app import MAX_REPLAN_REASON, clean_reason, known_skus
from kairyu_planner.settings import PlanningSettings

CATALOG = load_catalog()


def test_only_skus_of_the_planners_cloud_are_kept_in_the_catalogs_spelling() -> None:
    names = ["standard_nc4as_t4_v3", "g6.xlarge", "Standard_Made_Up", "x" * 10_000]
    assert known_skus(names, CATALOG, PlanningSettings()) == {"Standard_NC4as_T4_v3"}
    assert known_skus(names, CATALOG, PlanningSettings(cloud=Cloud.AWS)) == {"g6.xlarge"}


def test_a_reason_is_one_line_of_bounded_length() -> None:
    assert clean_reason("QuotaExceeded:\n\x1b[31mred\x00") == "QuotaExceeded: [31mred"
    assert len(clean_reason("a" * 100_000)) == MAX_REPLAN_REASON
