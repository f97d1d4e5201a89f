"""Whether make dev can run Zipkin's UI: the Java version in `java -version`'s banner."""

import pytest

from kairyu_localenv.zipkin import java_version


@pytest.mark.parametrize(
    ("banner", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("bash: java: command not found", None),
    ],
)
def test_the_major_version_is_read_from_the_banner(banner: str, major: int | None) -> None:
    assert java_version(banner) == major
