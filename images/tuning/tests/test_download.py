"""The downloader refuses internal addresses before connecting, and downloads the rest safely."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kairyu_tuning import download
from kairyu_tuning.download import Policy, RefusedError, refusal
from kairyu_tuning.failure import StepError

MIB = 1024 * 1024


@dataclass
class Served:
    port: int
    paths: list[str] = field(default_factory=list)
    # path -> list of (status, body, headers) answered in turn; the last one repeats
    answers: dict[str, list[tuple[int, bytes, dict[str, str]]]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Served]:
    served = Served(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.paths.append(self.path)
            answers = served.answers.get(self.path.split("?")[0]) or [(404, b"", {})]
            status, body, headers = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()


LOCAL = Policy(max_bytes=MIB, allowed=(ipaddress.ip_network("127.0.0.1/32"),), backoff_s=0.01)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1/data.parquet", "10.0.0.1 is a private address"),
        ("http://10.255.1.2:8080/x", "private address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata or host endpoint"),
        ("http://168.63.129.16/machine", "cloud metadata or host endpoint"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:10.0.0.1]/x", "private address"),
        ("http://localhost/x", "loopback"),
        ("http://100.64.0.1/x", "not a public internet address"),
        ("ftp://example.com/x", "only http and https"),
        ("https://user:pw@example.com/x", "credentials"),
    ],
)
def test_internal_addresses_are_refused_before_connecting(
    url: str, why: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    with pytest.raises(RefusedError, match=why):
        download.download([url], tmp_path, Policy(max_bytes=MIB))
    assert list(tmp_path.iterdir()) == []


def test_loopback_gets_no_request_at_all(server: Served, tmp_path: Path) -> None:
    server.answers["/data.parquet"] = [(200, b"PAR1", {})]
    with pytest.raises(SystemExit) as exit_info:
        download.main([server.url("/data.parquet"), f"--target={tmp_path}"])
    assert exit_info.value.code == 1
    assert server.paths == []


def test_a_public_address_is_allowed() -> None:
    assert refusal(ipaddress.ip_address("20.1.2.3"), Policy(max_bytes=1)) is None


def test_download_names_the_file_from_the_url_path(server: Served, tmp_path: Path) -> None:
    server.answers["/sets/train.parquet"] = [(200, b"PAR1 data", {})]
    (saved,) = download.download([server.url("/sets/train.parquet?download=true")], tmp_path, LOCAL)
    assert saved == tmp_path / "train.parquet"
    assert saved.read_bytes() == b"PAR1 data"


def test_transient_failures_are_retried(server: Served, tmp_path: Path) -> None:
    server.answers["/d.jsonl"] = [(503, b"busy", {}), (503, b"busy", {}), (200, b"{}\n", {})]
    download.download([server.url("/d.jsonl")], tmp_path, LOCAL)
    assert (tmp_path / "d.jsonl").read_bytes() == b"{}\n"
    assert len(server.paths) == 3


def test_a_client_error_is_not_retried_and_says_so(server: Served, tmp_path: Path) -> None:
    with pytest.raises(StepError, match="answered 404"):
        download.download([server.url("/missing.parquet")], tmp_path, LOCAL)
    assert len(server.paths) == 1


def test_too_large_is_refused_and_leaves_nothing(server: Served, tmp_path: Path) -> None:
    server.answers["/big.parquet"] = [(200, b"x" * (MIB + 1), {})]
    with pytest.raises(StepError, match="the limit is 1048576"):
        download.download([server.url("/big.parquet")], tmp_path, LOCAL)
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_to_an_internal_address_is_refused(server: Served, tmp_path: Path) -> None:
    server.answers["/go"] = [(302, b"", {"Location": "http://169.254.169.254/latest/"})]
    with pytest.raises(RefusedError, match="metadata"):
        download.download([server.url("/go")], tmp_path, LOCAL)
