"""The book's Try it page in a real browser: its mask is `ulvm.predict`'s, and bad input gets a message.

The page's files are built by the function the book build calls (`ulvm.tryit.build_site`: the ONNX export
of the shipped weights, onnxruntime-web from book/web/node_modules, the script) into a temporary folder,
beside a bare page holding the markup of `book/try_it.md` (`minimal_site`), so this test does not need the
notebooks executed. The system's Chromium runs it, driven by Playwright; images are synthetic.
"""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from book_session import REPO
from PIL import Image

from ulvm import predict
from ulvm.errors import UlvmError

pytest.importorskip("playwright", reason="Playwright is in the dev extra: pip install -e '.[dev]'")
from ulvm.tryit import build_site  # noqa: E402
from ulvm.tryit.browser import (  # noqa: E402
    agreement,
    chromium_executable,
    minimal_site,
    synthetic_photo,
    try_it_page,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if chromium_executable() is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    site = tmp_path_factory.mktemp("site")
    try:
        build_site(REPO, out=site)
    except UlvmError as error:
        if shutil.which("npm") is None:
            pytest.skip(f"onnxruntime-web not installed and no npm to install it: {error}")
        raise
    minimal_site(REPO, site)
    with try_it_page(site) as loaded:
        yield loaded


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg"])
def test_page_mask_is_ulvm_predicts(page, tmp_path, name):
    path = synthetic_photo(tmp_path, name, (600, 450))
    result = page.segment(path)
    assert result.state == "done", result.message
    expected = predict(path) > 127
    assert result.mask.shape == expected.shape == (450, 600)        # the mask lies on the photo
    scores = agreement(result.mask, expected)
    assert scores["equal_fraction"] >= 0.995 and scores["dice"] >= 0.995, scores
    assert expected.sum() > 1000, "the synthetic lesion is found at all"
    assert result.numbers["area"] == int(result.mask.sum())          # the area the page shows
    assert "Nothing left your machine" in result.message


@pytest.mark.parametrize("shape", [(120, 160), (450, 600)])
def test_page_resize_is_pils_bit_for_bit(page, shape):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.BILINEAR))
    np.testing.assert_array_equal(page.pil_resize(rgb, (256, 256)), expected)


def encoded(size, kind: str, color=(200, 150, 120)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=kind)
    return buffer.getvalue()


def test_bad_input_gets_a_message_and_the_page_still_works(page, tmp_path):
    bad = {
        "notes.jpg": (b"this is a text file, not a JPEG\n", "not an image this browser can read"),
        "dot.png": (encoded((1, 1), "PNG"), "1 × 1 pixels is too small"),
        "huge.jpg": (encoded((12000, 9000), "JPEG"),     # JPEG: a 12000 x 9000 PNG takes 15 s to write
                     "12000 × 9000 pixels (108 megapixels) is more than this page handles"),
    }
    for name, (content, message) in bad.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = page.segment(path)
        assert result.state == "error" and message in result.message and name in result.message, result.message
        assert page.page.is_hidden("#tryit-result"), "no stale mask is shown beside the message"
    after = synthetic_photo(tmp_path, "after.png", (300, 225))
    assert [page.segment(after).state for _ in range(2)] == ["done", "done"], "the same file chosen twice runs twice"
