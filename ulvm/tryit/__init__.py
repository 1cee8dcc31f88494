"""The book's "Try it" page and widget: the shipped model on a reader's own image, where the reader reads.

- `build`: what the page needs beside its Markdown (`book/try_it.md`), built into a git-ignored folder the
  book copies into its HTML: onnxruntime-web from the npm registry, `ulvm.onnx` exported from the shipped
  weights, the page's script and synthetic samples (`ulvm try-it`, run by `make book`).
- `browser`: the page driven in headless Chromium with Playwright: an image in, the page's mask out, and
  the page's weight and speed as a record (`book/results/bench/browser.json`).
- `widget`: the same in JupyterLab, with `ulvm.predict` (chapter 06).
"""
from .build import SITE_DIR, build_site, install_runtime

__all__ = ["SITE_DIR", "build_site", "install_runtime"]
