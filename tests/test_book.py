"""The rendered book: it builds warning-free, and a real browser shows its math, figures and tables.

The book is built once per session (`book_session.built_book`, from the notebooks executed with the
quick profile). The system's headless Chromium (Debian package `chromium`; `.ci/run` installs it), driven
by Playwright (`ulvm.tryit.browser`), loads every page from a local HTTP server on 127.0.0.1. For each page
the test waits for MathJax, then checks in the page itself: math typeset without errors, every image
decoded (naturalWidth > 0), tables present where the chapter has tables; the Try it page loads its model.
One screenshot is saved to `figures/generated/book_screenshot.png`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from book_session import REPO, built_book

from ulvm.io import atomic_write_bytes
from ulvm.tryit.browser import chromium, chromium_executable, served
from ulvm.tryit.build import MODEL_FILE, PAGE_FOLDER, RUNTIME_FILES, SCRIPT_FILE

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
    """The built HTML over HTTP on 127.0.0.1 (a free port)."""
    with served(book_html) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright", reason="Playwright is in the dev extra: pip install -e '.[dev]'")
    if chromium_executable() is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    with chromium() as launched:
        page = launched.new_page(viewport={"width": 1280, "height": 1600})
        yield page


@pytest.mark.slow
def test_book_builds_without_warnings(book_html):
    assert (book_html / "index.html").is_file()
    for stem in (p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert (book_html / "book" / "executed" / f"{stem}.html").is_file(), f"{stem} not rendered"
    assert (book_html / "book" / "executed" / "reproducibility.html").is_file(), "the reproducibility page"
    assert (book_html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is shipped with the book"
    shipped = {p.name for p in (book_html / PAGE_FOLDER).iterdir() if p.is_file()}
    assert shipped == {MODEL_FILE, SCRIPT_FILE, *RUNTIME_FILES}, "the Try it page gets its files and no others"


@pytest.mark.slow
def test_pages_in_a_real_browser_render_math_figures_and_tables(book_html, book_server, browser):
    pages = sorted((book_html / "book").rglob("*.html"))
    assert pages
    reports = {}
    for page in pages:
        relative = page.relative_to(book_html).as_posix()
        browser.goto(f"{book_server}/{relative}", wait_until="load")
        reports[page.stem] = report = json.loads(browser.evaluate(PAGE_REPORT_JS))
        broken = [image["src"] for image in report["images"] if image["width"] == 0]
        assert not broken, f"{relative}: images that did not load: {broken}"
        assert not report["math_errors"], f"{relative}: MathJax TeX errors: {report['math_errors']}"
        if report["math_sources"]:
            assert report["math_rendered"] >= report["math_sources"], f"{relative}: math not typeset: {report}"
        if page.stem == SCREENSHOT_PAGE:
            atomic_write_bytes(REPO / "figures" / "generated" / "book_screenshot.png", browser.screenshot())
        if page.stem == "try_it":          # the page's script loads onnxruntime-web and the model
            browser.wait_for_function("['ready', 'error'].includes(document.getElementById('tryit-status')"
                                      ".dataset.state)", timeout=120_000)
            status = browser.text_content("#tryit-status")
            assert browser.get_attribute("#tryit-status", "data-state") == "ready", f"{relative}: {status}"

    assert reports["01_ssm_theory"]["math_rendered"] > 0, "the theory chapter shows rendered equations"
    assert sum(len(r["images"]) for r in reports.values()) > 0, "the book shows figures"
    for stem in PAGES_WITH_TABLES:
        assert reports[stem]["tables"] > 0, f"{stem}: no table rendered"
    assert (REPO / "figures" / "generated" / "book_screenshot.png").is_file()
