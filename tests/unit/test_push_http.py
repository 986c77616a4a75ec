"""The push sinks' HTTP client against a real HTTP server on 127.0.0.1 (in this process):
answers classified as the protocols say, auth read from files, secrets never in errors."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.sinks.push_http import Auth, PushClient, RejectedError

RETRY = frozenset({429, *range(500, 600)})


class Server:
    """Answers each POST with the next status of ``statuses`` and records the requests."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append({"headers": dict(self.headers), "body": body})
                status = server.statuses.pop(0) if server.statuses else 204
                answer = b"" if status == 204 else f"answer {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/write"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def client(url: str, auth: Auth | None = None) -> PushClient:
    return PushClient(url, timeout=2.0, auth=auth or Auth(), retry_statuses=RETRY, what="push to")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_and_429_are_transient(server: Server, status: int) -> None:
    server.statuses = [status]
    c = client(server.url)
    with pytest.raises(TransientSinkError, match=f"HTTP {status}"):
        c.post(b"x", {})
    assert c.post(b"x", {})[0] == 204  # the same client works on the next attempt


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_other_4xx_are_permanent_with_the_receivers_answer(server: Server, status: int) -> None:
    server.statuses = [status]
    with pytest.raises(RejectedError) as info:
        client(server.url).post(b"x", {})
    assert isinstance(info.value, PermanentSinkError)
    assert info.value.status == status and info.value.body == f"answer {status}"


def test_refused_connection_is_transient() -> None:
    s = Server()
    url = s.url
    s.close()
    with pytest.raises(TransientSinkError, match=r"127\.0\.0\.1"):
        client(url).post(b"x", {})


def test_bearer_token_from_a_file_is_sent_and_never_shown(server: Server, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    server.statuses = [401]
    c = client(server.url, Auth(bearer_token_file=str(token)))
    with pytest.raises(RejectedError) as info:
        c.post(b"x", {"X-Extra": "1"})
    assert server.requests[0]["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert server.requests[0]["headers"]["User-Agent"].startswith("system-info-collector/")
    assert server.requests[0]["headers"]["X-Extra"] == "1"
    assert "s3cr3t-token" not in str(info.value)


def test_basic_auth_and_a_rotated_password_file(server: Server, tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("first-pw")
    c = client(server.url, Auth(basic_user="bob", basic_password_file=str(password)))
    c.post(b"x", {})
    password.write_text("second-pw")
    server.statuses = [503]
    with pytest.raises(TransientSinkError) as info:
        c.post(b"x", {})  # the failure closes the connection ...
    c.post(b"x", {})  # ... and the reconnect reads the file again
    sent = [r["headers"]["Authorization"] for r in server.requests]
    assert sent[0] == "Basic " + base64.b64encode(b"bob:first-pw").decode()
    assert sent[-1] == "Basic " + base64.b64encode(b"bob:second-pw").decode()
    assert "first-pw" not in str(info.value)


def test_header_file_lines_are_sent(server: Server, tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    headers.write_text("# comment\nX-Scope-OrgID: tenant-1\nAuthorization: Api-Token abc123\n")
    client(server.url, Auth(headers_file=str(headers))).post(b"x", {})
    sent = server.requests[0]["headers"]
    assert sent["X-Scope-OrgID"] == "tenant-1" and sent["Authorization"] == "Api-Token abc123"


def test_a_bad_header_file_is_reported_without_its_content(server: Server, tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    headers.write_text("just-a-token-value\n")
    with pytest.raises(TransientSinkError) as info:
        client(server.url, Auth(headers_file=str(headers))).post(b"x", {})
    assert "line 1" in str(info.value) and "just-a-token-value" not in str(info.value)


def test_url_credentials_become_basic_auth_and_are_masked(server: Server) -> None:
    url = server.url.replace("http://", "http://amy:url-pw-123@")
    server.statuses = [500]
    c = client(url)
    with pytest.raises(TransientSinkError) as info:
        c.post(b"x", {})
    assert (
        server.requests[0]["headers"]["Authorization"]
        == "Basic " + base64.b64encode(b"amy:url-pw-123").decode()
    )
    assert "url-pw-123" not in str(info.value) and "amy:" not in c.target
