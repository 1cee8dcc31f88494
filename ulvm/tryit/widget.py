"""Try it in JupyterLab: upload an image, `ulvm.predict` segments it, the notebook shows the overlay.

    from ulvm.tryit.widget import try_it
    try_it()                   # in JupyterLab: a file picker; executed by papermill: a synthetic example

A live front end (JupyterLab, Jupyter Notebook) starts its kernels through a Jupyter server, which names
the notebook in the kernel's environment (`JPY_SESSION_NAME`); papermill does not. With no front end to
click, a widget would render as nothing in the book, so `try_it` shows the same output for a synthetic
photo instead.
"""
from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

from ..data.prepare import png_bytes
from ..deploy.prediction import as_rgb, predict
from ..engine.inference import overlay
from ..errors import DataError, UlvmError


def segmented(path: str | os.PathLike, weights="isic2017") -> tuple[bytes, str]:
    """`path` segmented by `ulvm.predict`: the overlay as PNG bytes (outline in red) and a one-line summary."""
    started = time.perf_counter()
    mask = predict(path, weights) > 127
    seconds = time.perf_counter() - started
    rgb = as_rgb(path)
    summary = (f"{Path(path).name}: {rgb.shape[1]} × {rgb.shape[0]} pixels; lesion {int(mask.sum()):,} pixels "
               f"({100 * mask.mean():.1f}% of the image); ulvm.predict took {seconds:.2f} s on this machine")
    return png_bytes(overlay(rgb, mask)), summary


def _show(png: bytes, summary: str) -> None:
    from IPython.display import Image, Markdown, display

    display(Markdown(summary), Image(data=png, width=min(640, _width(png))))


def _width(png: bytes) -> int:
    from PIL import Image

    return Image.open(io.BytesIO(png)).width


def try_it(weights="isic2017", live: bool | None = None, example: str | os.PathLike | None = None):
    """A FileUpload and an Output (JupyterLab): each uploaded image is segmented and shown. With no live
    front end (`live` None: detected, see the module's doc) the output for `example` (default: a synthetic
    photo, `ulvm.tryit.browser.synthetic_photo`) is shown instead, and None is returned."""
    live = "JPY_SESSION_NAME" in os.environ if live is None else live
    if not live:
        with tempfile.TemporaryDirectory(prefix="ulvm-try-it-") as scratch:
            if example is None:
                from .browser import synthetic_photo

                example = synthetic_photo(Path(scratch))
            _show(*segmented(example, weights))
        return None

    import ipywidgets

    upload = ipywidgets.FileUpload(accept="image/*", multiple=False, description="Choose an image")
    output = ipywidgets.Output()

    def on_upload(change) -> None:
        if not change["new"]:
            return
        item = change["new"][0]
        output.clear_output()
        with output, tempfile.TemporaryDirectory(prefix="ulvm-try-it-") as scratch:
            path = Path(scratch) / Path(item["name"]).name        # predict reads the file as `ulvm predict` does
            path.write_bytes(bytes(item["content"]))
            try:
                _show(*segmented(path, weights))
            except (DataError, UlvmError) as error:     # the message names the file by its scratch path
                print(str(error).replace(str(path), item["name"]))

    upload.observe(on_upload, names="value")
    return ipywidgets.VBox([upload, output])
