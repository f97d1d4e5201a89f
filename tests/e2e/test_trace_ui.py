"""`make dev`'s rollout trace opens in a browser: Zipkin's UI, driven by headless Chromium.

The launcher is `make dev` itself (python -m kairyu_localenv); it prints the URL of the seed's
trace, and the page must show the rollout's root and its plan, provision, deploy and ready spans
with the service that did each. `KAIRYU_UPDATE_SNAPSHOTS=1` (`make snapshots`) also saves the page
as docs/images/trace-ui.png, the picture in docs/observability.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from kairyu_testing.dev_launcher import dev_launcher

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs/images/trace-ui.png"


def chromium() -> str:
    """Debian's chromium: $KAIRYU_CHROMIUM (make test), else tools/browser/chromium.sh finds it."""
    if path := os.environ.get("KAIRYU_CHROMIUM"):
        return path
    found = subprocess.run(
        ["bash", str(ROOT / "tools/browser/chromium.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return found.stdout.strip().splitlines()[-1]


@pytest.fixture
def dev_environment(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`make dev` running, once it said it is ready: the JSON line it prints then."""
    log = tmp_path / "launcher.log"
    with dev_launcher(tmp_path) as launcher:
        assert launcher.stdout is not None
        ready = next((json.loads(line) for line in launcher.stdout if line.startswith("{")), None)
        assert ready is not None, f"make dev never became ready:\n{log.read_text()[-4000:]}"
        # The URL is also in what the user reads.
        assert ready["trace_ui"] in log.read_text(), log.read_text()[-2000:]
        yield ready
        launcher.send_signal(signal.SIGTERM)  # a clean stop; the block's end kills what is left
        launcher.wait(60)


def wait_for_spans(url: str, names: set[str], timeout: float = 30.0) -> None:
    """Until Zipkin's API holds spans of every name: the page shows what it had when loaded."""
    api = url.replace("/zipkin/traces/", "/api/v2/trace/")
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(api, timeout=5) as answer:
                seen = {span.get("name", "") for span in json.load(answer)}
        except urllib.error.HTTPError as error:
            if error.code != 404:  # 404: no span of the trace yet
                raise
        if names <= seen:
            return
        time.sleep(0.5)
    raise AssertionError(f"Zipkin has {sorted(seen)}, not all of {sorted(names)}")


def row_of(page: Page, text: str) -> Locator:
    """The span row showing `text`. Zipkin draws only the rows in view: scroll down to it."""
    row = page.get_by_text(text, exact=True)
    page.mouse.move(400, 700)  # over the span rows
    for _ in range(30):
        if row.count():
            break
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(100)
    return row.first


@pytest.mark.e2e
def test_the_seeds_rollout_opens_in_the_browser(
    dev_environment: dict[str, Any], tmp_path: Path
) -> None:
    url = dev_environment["trace_ui"]
    assert url is not None, "make dev printed no trace UI (is Java 17+ installed?)"
    wait_for_spans(url, {"plan", "provision", "deploy", "ready"})
    with sync_playwright() as playwright:
        # Root in a container has no user namespaces for Chromium's sandbox.
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            # The trace's title is its root span: the rollout of the seed, begun by the planner.
            title = page.get_by_text(
                "kairyu-planner: rollout default/workspace-phi-3-mini", exact=True
            ).first
            expect(title).to_be_visible(timeout=30_000)
            shot = tmp_path / "trace-ui.png"
            page.screenshot(path=str(shot))  # as the user first sees it, before any scrolling
            for row in (
                "kairyu-planner: plan",
                "kairyu-provisioner: provision",
                "kairyu-deployer: deploy",
                "kairyu-deployer: ready",
            ):
                expect(row_of(page, row)).to_be_visible()
            # Every span of one rollout is in this one trace: more than one service took part.
            summary = re.search(r"Services\s+(\d+)", page.inner_text("body"))
            assert summary is not None
            assert int(summary.group(1)) >= 3  # planner, provisioner, deployer
        finally:
            browser.close()
    assert shot.stat().st_size > 0
    if os.environ.get("KAIRYU_UPDATE_SNAPSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
