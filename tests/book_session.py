"""The book's expensive steps, done at most once per pytest session and shared by the test files.

`tests/test_notebooks.py` and `tests/test_book.py` both need the notebooks executed (quick profile) and
the book built from them. Module state is shared by every test file of one pytest process, so each step
runs once whichever file asks first; a failure is remembered and re-raised, not retried.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ulvm.report.reproduce import reproduce
from ulvm.tryit import build_site

REPO = Path(__file__).resolve().parents[1]
_done: dict[str, object] = {}


def _once(name, step):
    if name not in _done:
        start = time.perf_counter()
        try:
            _done[name] = step()
        except BaseException as error:  # remembered, so a second test does not pay for it again
            _done[name] = error
        print(f"\n[book_session] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if isinstance(_done[name], BaseException):
        raise _done[name]
    return _done[name]


def executed_notebooks():
    """Execute every notebook with the quick profile through `ulvm reproduce` (into book/executed/)."""
    return _once("execute notebooks", lambda: reproduce("quick", root=REPO))


def built_book() -> Path:
    """Build the book (warnings are errors) from the executed notebooks and the Try it page's files (as
    `make book` does); return the HTML folder."""
    def build() -> Path:
        executed_notebooks()
        build_site(REPO)
        out = Path(tempfile.mkdtemp(prefix="ulvm-book-"))
        jupyter_book = Path(sys.executable).with_name("jupyter-book")
        proc = subprocess.run([str(jupyter_book), "build", str(REPO), "--path-output", str(out),
                               "-W", "--keep-going"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"jupyter-book build failed (exit {proc.returncode}):\n"
                                 f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        return out / "_build" / "html"
    return _once("build book", build)
