"""Basic auth's users file and checks (the HTTPS side is tested with a real process in
tests/integration/test_http_tls.py)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from system_info_collector.httpserver import Throttled
from system_info_collector.webauth import BasicAuth, parse_users
from tests.helpers import poll

HASH = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()


def header(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(f'{user}:{password}'.encode()).decode()}"


def test_users_lines_comments_and_blank_lines() -> None:
    users = parse_users(f"# scrapers\n\nprometheus:{HASH}\n  vm:{HASH.replace('$2b$', '$2y$')}  \n")
    assert sorted(users) == ["prometheus", "vm"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no user:bcrypt-hash line"),
        ("# only a comment\n", "no user:bcrypt-hash line"),
        ("prometheus\n", "line 1: expected user:bcrypt-hash"),
        (f":{HASH}\n", "line 1: expected user:bcrypt-hash"),
        ("prometheus:plain-password\n", "line 1 (user 'prometheus'): not a bcrypt hash"),
        (f"a:{HASH}\n\na:{HASH}\n", "line 3: user 'a' twice"),
        (f"a:{HASH[:-1]}\n", "not a bcrypt hash"),
    ],
)
def test_a_bad_users_file_names_the_line_and_never_the_secret(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_users(text)
    assert message in str(caught.value)
    assert "plain-password" not in str(caught.value) and HASH[7:] not in str(caught.value)


def test_only_the_right_password_of_a_listed_user_passes_also_after_a_success(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    path.write_text(f"prometheus:{HASH}\n")
    auth = BasicAuth(str(path))
    assert auth.user(header("prometheus", "right")) == "prometheus"
    assert auth.user(header("prometheus", "right")) == "prometheus"  # remembered
    assert auth.user(header("prometheus", "wrong")) is None  # the memory is no bypass
    assert auth.user(header("prometheus", "righ")) is None
    assert auth.user(header("nobody", "right")) is None
    for bad in (
        None,
        "",
        "Basic",
        "Basic !!!",
        "Bearer abc",
        header("prometheus", "right", "Digest"),
    ):
        assert auth.user(bad) is None, bad
    no_colon = "Basic " + base64.b64encode(b"prometheus").decode()
    assert auth.user(no_colon) is None


def test_a_changed_users_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"prometheus:{HASH}\n")
    auth = BasicAuth(str(path))
    assert auth.user(header("prometheus", "right")) == "prometheus"
    other = bcrypt.hashpw(b"new", bcrypt.gensalt(4)).decode()
    path.write_text(f"grafana:{other}\n")
    # looked at when a request comes, at most once a second
    poll(lambda: auth.user(header("grafana", "new")), timeout=5.0, what="the new users file")
    assert auth.user(header("prometheus", "right")) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_passwords_spend_a_budget_and_are_answered_throttled_until_it_refills(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    """A client trying passwords costs bcrypt checks; past the budget the next new password is
    refused with Throttled (429) without a check, while a remembered password, right or wrong,
    still gets its answer; the budget refills with the clock."""
    path = tmp_path / "users"
    path.write_text(f"prometheus:{HASH}\n")
    clock = Clock()
    auth = BasicAuth(str(path), clock=clock, share=0.05, burst=1e-6)  # one check empties it
    assert auth.user(header("prometheus", "right")) == "prometheus"
    with pytest.raises(Throttled) as caught:
        auth.user(header("prometheus", "guess-1"))
    assert caught.value.retry_after >= 1
    with pytest.raises(Throttled):
        auth.user(header("nobody", "guess-1"))  # an unknown user's dummy check alike
    assert auth.user(header("prometheus", "right")) == "prometheus"  # remembered: no check
    (warning,) = [e for e in events if e.get("event") == "http_auth_throttled"]
    assert warning["level"] == "WARNING" and "guess" not in str(warning)
    clock.now += caught.value.retry_after
    assert auth.user(header("prometheus", "guess-1")) is None  # checked again, and wrong
    with pytest.raises(Throttled):
        auth.user(header("prometheus", "guess-2"))
    assert auth.user(header("prometheus", "guess-1")) is None  # a wrong one is remembered too
    assert auth.user(header("prometheus", "right")) == "prometheus"
    # a sustained flood is one WARNING a minute, counting what it refused meanwhile
    assert len([e for e in events if e.get("event") == "http_auth_throttled"]) == 1
    clock.now += 60
    assert auth.user(header("prometheus", "guess-3")) is None  # refilled: checked
    with pytest.raises(Throttled):
        auth.user(header("prometheus", "guess-4"))
    warnings = [e for e in events if e.get("event") == "http_auth_throttled"]
    assert [w["refused"] for w in warnings] == [1, 3]


def test_the_budget_lets_a_few_checks_through_at_once_and_then_its_share(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"prometheus:{HASH}\n")
    clock = Clock()
    auth = BasicAuth(str(path), clock=clock, share=0.05, burst=0.05)
    checked = 0
    with pytest.raises(Throttled):
        while checked < 10_000:
            auth.user(header("prometheus", f"guess-{checked}"))
            checked += 1
    # a cost-4 bcrypt check takes about a millisecond of CPU: tens fit into 50 ms, not thousands
    assert 2 <= checked < 10_000
