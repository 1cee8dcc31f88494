"""The rendered book: it builds warning-free, and a real browser shows its math, figures and tables.

The book is built once per session (`book_session.built_book`, from the notebooks executed with the
quick profile). Headless Chromium (Debian package `chromium`; `.ci/run` installs it) loads every page
from a local HTTP server on 127.0.0.1 and is driven through the DevTools protocol (`websocket-client`,
already installed with Jupyter). For each page the test waits for MathJax, then checks in the page
itself: math typeset without errors, every image decoded (naturalWidth > 0), tables present where the
chapter has tables. One screenshot is saved to `figures/generated/book_screenshot.png`.
"""
from __future__ import annotations

import base64
import functools
import http.server
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from book_session import REPO, built_book

from ulvm.io import atomic_write_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--remote-debugging-port=0", "--remote-allow-origins=*",
                  "--window-size=1280,1600"]
# Chapters that must show a table (pandas tables or markdown tables in the notebook).
PAGES_WITH_TABLES = ["01_ssm_theory", "02_mamba_parameters", "03_pvm_layer", "07_ablations", "08_paper_tables",
                     "09_efficiency", "10_comparison", "reproducibility"]
SCREENSHOT_PAGE = "03_pvm_layer"

# Runs in the page: wait for MathJax and for every image, then report what the reader would see.
PAGE_REPORT_JS = """
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await Promise.all([...document.images].map(img => img.complete ? null :
      new Promise(done => { img.onload = img.onerror = done; })));
  const article = document.querySelector('article') || document.body;
  return JSON.stringify({
    title: document.title,
    math_sources: article.querySelectorAll('.math').length,
    math_rendered: article.querySelectorAll('mjx-container').length,
    math_errors: [...article.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error')),
    images: [...article.querySelectorAll('img')].map(img => ({src: img.src, width: img.naturalWidth})),
    tables: article.querySelectorAll('table').length,
  });
})()
"""


@pytest.fixture(scope="module")
def book_html() -> Path:
    return built_book()


@pytest.fixture(scope="module")
def book_server(book_html):
    """Serve the built HTML on 127.0.0.1 (a free port) for the browser."""
    handler = functools.partial(QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Chromium:
    """Headless Chromium with a fresh profile, driven over the DevTools protocol."""

    def __init__(self):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="ulvm-chromium-")
        self.process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(target for target in json.load(response) if target["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                                  suppress_origin=True)
        self.ids = itertools.count(1)
        self.call("Page.enable")

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are skipped)."""
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            time.sleep(0.1)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        if getattr(self, "socket", None):
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    chromium = Chromium()
    yield chromium
    chromium.close()


@pytest.mark.slow
def test_book_builds_without_warnings(book_html):
    assert (book_html / "index.html").is_file()
    for stem in (p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert (book_html / "book" / "executed" / f"{stem}.html").is_file(), f"{stem} not rendered"
    assert (book_html / "book" / "executed" / "reproducibility.html").is_file(), "the reproducibility page"
    assert (book_html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is shipped with the book"


@pytest.mark.slow
def test_pages_in_a_real_browser_render_math_figures_and_tables(book_html, book_server, browser):
    pages = sorted((book_html / "book").rglob("*.html"))
    assert pages
    reports = {}
    for page in pages:
        relative = page.relative_to(book_html).as_posix()
        browser.open(f"{book_server}/{relative}")
        reports[page.stem] = report = json.loads(browser.evaluate(PAGE_REPORT_JS))
        broken = [image["src"] for image in report["images"] if image["width"] == 0]
        assert not broken, f"{relative}: images that did not load: {broken}"
        assert not report["math_errors"], f"{relative}: MathJax TeX errors: {report['math_errors']}"
        if report["math_sources"]:
            assert report["math_rendered"] >= report["math_sources"], f"{relative}: math not typeset: {report}"
        if page.stem == SCREENSHOT_PAGE:
            atomic_write_bytes(REPO / "figures" / "generated" / "book_screenshot.png", browser.screenshot())

    assert reports["01_ssm_theory"]["math_rendered"] > 0, "the theory chapter shows rendered equations"
    assert sum(len(r["images"]) for r in reports.values()) > 0, "the book shows figures"
    for stem in PAGES_WITH_TABLES:
        assert reports[stem]["tables"] > 0, f"{stem}: no table rendered"
    assert (REPO / "figures" / "generated" / "book_screenshot.png").is_file()
