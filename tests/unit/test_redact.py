import pytest

from system_info_collector.redact import redact_dsn, redact_secret


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://sic:s3cr%40t@db:5432/m?sslmode=require",
            "postgresql://sic:***@db:5432/m?sslmode=require",
        ),
        ("postgres://u:p@h/d", "postgres://u:***@h/d"),
        ("host=db user=sic password=hunter2 dbname=m", "host=db user=sic password=*** dbname=m"),
        ("host=db password='a b\\'c' dbname=m", "host=db password=*** dbname=m"),
        ("postgresql://h/d?user=u&password=pw&x=1", "postgresql://h/d?user=u&password=***&x=1"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
    ],
)
def test_passwords_are_masked(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_literal_secrets_are_masked() -> None:
    assert redact_secret("auth failed for pw-from-file", ["pw-from-file"]) == "auth failed for ***"
