"""The web page end to end in headless Chromium (Debian's ``chromium`` package, driven by Playwright).

A uvicorn server on 127.0.0.1 (free port, in a thread) serves the two tiny models; the test
uploads the real street photo through the page, waits for the results table and keeps a
screenshot at ``<repo>/test-artifacts/serve.png``. Skipped, with the reason, when Chromium or
Playwright is missing (``apt-get install -y chromium``; never ``playwright install``).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACT = REPO / "test-artifacts" / "serve.png"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny_runs):
    uvicorn = pytest.importorskip("uvicorn")
    from fashionvision.app.server import by_kind, create_app
    from fashionvision.inference.predictor import load_predictor

    models = by_kind([load_predictor(tiny_runs["detector"]), load_predictor(tiny_runs["segmenter"])])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(models, conf=0.001), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_upload_photo_through_the_page(browser, server_url, shared_data, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server_url)
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model option").all_inner_texts()[0].startswith("both")
    page.set_input_files("#file", str(shared_data / "fashionpedia-sample" / "input.jpg"))
    page.select_option("#model", "both")
    page.click("#submit")
    page.wait_for_selector("table.items[data-model=segmenter]", timeout=60_000)
    tables = page.locator("table.items")
    assert tables.count() == 2
    assert page.locator("table.items[data-model=detector] tr").count() > 1  # header + items
    assert page.locator("table.items[data-model=segmenter] tr").count() > 1
    assert page.locator(".result img").count() == 2
    assert page.locator("#error").inner_text() == ""
    assert "input.jpg" in page.locator("#status").inner_text()
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=False)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACT)
    page.close()


def test_page_shows_the_refusal_of_a_non_image(browser, server_url, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    page = browser.new_page()
    page.goto(server_url)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(text))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "'notes.txt' is not a usable image" in page.locator("#error").inner_text()
    assert page.locator("table.items").count() == 0
    page.close()
