"""The downloader refuses internal addresses before connecting, and downloads the rest safely."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kairyu_tuning import download, failure
from kairyu_tuning.download import DeadlineError, Policy, RefusedError, refusal
from kairyu_tuning.failure import StepError

MIB = 1024 * 1024
NO_LENGTH = "x-test-no-length"


@dataclass
class Served:
    port: int
    paths: list[str] = field(default_factory=list)
    # path -> list of (status, body, headers) answered in turn; the last one repeats. The header
    # NO_LENGTH sends no Content-Length: the body ends when the connection closes.
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
                if key != NO_LENGTH:
                    self.send_header(key, value)
            if NO_LENGTH not in headers:
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
        ("http://[64:ff9b::a9fe:a9fe]/latest/", "NAT64 form of 169.254.169.254, a cloud metadata"),
        ("http://[::ffff:0:a00:1]/x", "IPv4-translated form of 10.0.0.1, a private address"),
        ("http://[fec0::1]/x", "site-local"),
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


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("64:ff9b::a00:1", "the NAT64 form of 10.0.0.1, a private address"),
        ("64:ff9b::7f00:1", "the NAT64 form of 127.0.0.1, a loopback address"),
        ("64:ff9b:1::a9fe:a9fe", "local-use NAT64 prefix, not a public internet address"),
        ("2002:a9fe:a9fe::1", "the 6to4 form of 169.254.169.254, a cloud metadata"),
        ("2002:c0a8:101::1", "the 6to4 form of 192.168.1.1, a private address"),
        ("::a00:1", "the IPv4-compatible form of 10.0.0.1, a private address"),
        ("::ffff:0:7f00:1", "the IPv4-translated form of 127.0.0.1, a loopback address"),
        ("::ffff:0:a9fe:a9fe", "the IPv4-translated form of 169.254.169.254, a cloud metadata"),
        # Teredo: the client's IPv4 address is stored inverted in the last 32 bits.
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "the Teredo form of 10.0.0.1, a private address"),
        ("fec0::1", "a site-local address, not a public internet address"),
        ("fec0:1234::a00:1", "a site-local address"),
        ("3fff::1", "not a public internet address"),
    ],
)
def test_ipv6_forms_of_internal_addresses_are_refused(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address), Policy(max_bytes=MIB))
    assert reason == f"{address} is {why}" or (reason is not None and why in reason)


def test_nat64_and_mapped_addresses_are_judged_by_the_ipv4_inside() -> None:
    """IPv6-only clusters reach the internet through DNS64 + NAT64: public ones must still work."""
    policy = Policy(max_bytes=MIB)
    assert refusal(ipaddress.ip_address("64:ff9b::a00:1"), policy) == (
        "64:ff9b::a00:1 is the NAT64 form of 10.0.0.1, a private address"
    )
    assert refusal(ipaddress.ip_address("64:ff9b::808:808"), policy) is None
    assert refusal(ipaddress.ip_address("::ffff:808:808"), policy) is None
    # An allowed internal network is allowed in its NAT64 form too (the gateway delivers there).
    allowed = Policy(max_bytes=MIB, allowed=(ipaddress.ip_network("10.0.0.0/8"),))
    assert refusal(ipaddress.ip_address("64:ff9b::a00:1"), allowed) is None
    # 6to4 relays reach nothing a cluster needs: refused even with a public address inside.
    assert "6to4" in (refusal(ipaddress.ip_address("2002:808:808::1"), policy) or "")


def test_a_name_with_a_dns64_answer_for_an_internal_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A DNS64 resolver answers a name whose A record is 169.254.169.254 with 64:ff9b::a9fe:a9fe."""
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("20.1.2.3", 80)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::a9fe:a9fe", 80, 0, 0)),
    ]

    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    monkeypatch.setattr(socket, "create_connection", no_connection)
    with pytest.raises(RefusedError, match=r"metadata\.example resolves to 64:ff9b::a9fe:a9fe is"):
        download.download(["http://metadata.example/latest/"], tmp_path, Policy(max_bytes=MIB))


@pytest.fixture
def dripping() -> Iterator[Callable[[bytes], str]]:
    """A server that sends `head` at once, then one byte every 0.2 s until the client goes away.

    Each byte comes long before any sensible read timeout, so only a deadline ends the download.
    """
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    threads = []

    def serve(head: bytes) -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(head)
                    while not stop.wait(0.2):
                        conn.sendall(b"x")
                except OSError:
                    continue

    def start(head: bytes) -> str:
        thread = threading.Thread(target=serve, args=(head,), daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/slow.jsonl"

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)
    listener.close()


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b""],
    ids=["dripped-body", "dripped-status-line"],
)
def test_a_dripping_server_is_cut_off_at_the_deadline(
    head: bytes, dripping: Callable[[bytes], str], tmp_path: Path
) -> None:
    policy = Policy(
        max_bytes=MIB,
        allowed=(ipaddress.ip_network("127.0.0.1/32"),),
        read_timeout_s=5.0,
        deadline_s=1.0,
        backoff_s=0.01,
    )
    started = time.monotonic()
    with pytest.raises(
        DeadlineError, match=r"slow\.jsonl: the download did not finish within .* 1 s"
    ):
        download.download([dripping(head)], tmp_path, policy)
    assert time.monotonic() - started < 3.0  # well before the 5 s read timeout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", ["declared", "streamed"])
def test_all_urls_together_are_held_to_the_total_limit(
    length: str, server: Served, tmp_path: Path
) -> None:
    headers = {} if length == "declared" else {NO_LENGTH: ""}
    server.answers["/a.jsonl"] = [(200, b"a" * (600 * 1024), headers)]
    server.answers["/b.jsonl"] = [(200, b"b" * (600 * 1024), headers)]
    policy = Policy(
        max_bytes=MIB,
        max_total_bytes=MIB,
        allowed=(ipaddress.ip_network("127.0.0.1/32"),),
        backoff_s=0.01,
    )
    with pytest.raises(StepError, match="past their limit of 1048576 bytes"):
        download.download([server.url("/a.jsonl"), server.url("/b.jsonl")], tmp_path, policy)
    assert not (tmp_path / "b.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:99999/x.jsonl", "the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:0/x.jsonl", "the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:http/x.jsonl", "the port must be a number from 1 to 65535"),
        ("http://[::1/x.jsonl", "not a well-formed URL"),
        ("http://exa mple.com/x.jsonl", "must not contain spaces or control characters"),
    ],
)
def test_a_malformed_url_ends_with_a_reason_not_a_traceback(
    url: str, why: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        download.main([url, f"--target={tmp_path}", "--backoff-s=0.01"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert why in err
    assert "Traceback" not in err


def test_a_file_name_with_letters_outside_ascii_is_fetched(server: Served, tmp_path: Path) -> None:
    server.answers["/donn%C3%A9es.jsonl"] = [(200, b"{}\n", {})]
    (saved,) = download.download([server.url("/données.jsonl")], tmp_path, LOCAL)
    assert saved.read_bytes() == b"{}\n"


TOKEN = "S3CR3T-T0KEN"  # what a signed URL carries


def test_a_signed_urls_token_is_sent_but_never_printed(
    server: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server.answers["/data.parquet"] = [(503, b"busy", {}), (200, b"PAR1", {})]
    url = server.url(f"/data.parquet?X-Amz-Credential=AKIA&X-Amz-Signature={TOKEN}")
    download.main([url, f"--target={tmp_path}", "--backoff-s=0.01", "--allow-cidr=127.0.0.1/32"])
    assert (tmp_path / "data.parquet").read_bytes() == b"PAR1"
    assert server.paths[-1] == f"/data.parquet?X-Amz-Credential=AKIA&X-Amz-Signature={TOKEN}"
    printed = capsys.readouterr()
    assert "retrying" in printed.err
    assert "data.parquet" in printed.out + printed.err
    assert TOKEN not in printed.out + printed.err


@pytest.mark.parametrize(
    "url",
    [
        f"/data.parquet?sig={TOKEN}",  # a path on the test server: it answers 403
        f"https://reader:{TOKEN}@example.com/data.parquet",
        f"http://127.0.0.1:99999/data.parquet?sig={TOKEN}",
    ],
)
def test_a_failed_downloads_reason_has_no_token(
    url: str,
    server: Served,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The reason goes to the termination log, and from there into the Workspace's condition."""
    termination_log = tmp_path / "termination-log"
    monkeypatch.setattr(failure, "TERMINATION_LOG", termination_log)
    server.answers["/data.parquet"] = [(403, b"expired", {})]
    if url.startswith("/"):
        url = server.url(url)
    with pytest.raises(SystemExit):
        download.main([url, f"--target={tmp_path / 'data'}", "--allow-cidr=127.0.0.1/32"])
    reason = termination_log.read_text()
    assert "data.parquet" in reason
    assert TOKEN not in reason
    assert TOKEN not in capsys.readouterr().err
