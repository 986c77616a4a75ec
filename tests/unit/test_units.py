import pytest

from system_info_collector.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1s", 1.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("2", 2.0),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512KB", 512_000),
        ("100MB", 100_000_000),
        ("1GiB", 1 << 30),
        ("1GB", 10**9),
        ("10", 10),
        ("4kib", 4096),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "fast", "-1s", "1 week", "1y"])
def test_bad_duration_names_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["", "big", "1PB", "-5MB"])
def test_bad_size_names_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(bad)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 1, 90, 300, 86400)] == [
        "250ms",
        "1s",
        "90s",
        "5m",
        "1d",
    ]
