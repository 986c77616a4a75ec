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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an unencoded '@' in a URI password: libpq splits at the first one
        (
            "postgresql://sic:Wrong@Pass99@127.0.0.1/metrics",
            "postgresql://sic:***@127.0.0.1/metrics",
        ),
        (
            "failed to resolve host 'Pass99@127.0.0.1': [Errno -2] Name or service not known",
            "failed to resolve host '***@127.0.0.1': [Errno -2] Name or service not known",
        ),
        ("connection to host=Pass99@db:5432 failed", "connection to host=***@db:5432 failed"),
        ('host "a@b@db" unknown', 'host "***@db" unknown'),
        (
            "postgresql://sic@db/metrics and nothing else",
            "postgresql://sic@db/metrics and nothing else",
        ),
    ],
)
def test_host_text_with_an_at_sign_is_redacted(text: str, expected: str) -> None:
    assert redact_dsn(text) == expected
    assert "Pass99" not in redact_dsn(text) and "Wrong" not in redact_dsn(text)
