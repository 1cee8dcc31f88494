"""Chapter 06's Try it widget: an upload is segmented by `ulvm.predict`; in a batch run, an example instead."""
from __future__ import annotations

import datetime
import io
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from ulvm.data.synthetic import sample
from ulvm.tryit.widget import try_it

pytest.importorskip("ipywidgets")


@pytest.fixture
def shown():
    import IPython.display

    items = []
    with mock.patch.object(IPython.display, "display", lambda *objects: items.extend(objects)):
        yield items


def upload(widget, name: str, content: bytes) -> None:
    widget.children[0].value = ({"name": name, "type": "image/png", "size": len(content),
                                 "content": memoryview(content), "last_modified": datetime.datetime.now()},)


def test_batch_run_shows_a_synthetic_example(shown):
    assert try_it(live=False) is None
    summary, image = shown
    assert "synthetic_photo.png: 767 × 576 pixels; lesion" in summary.data
    overlay = np.asarray(Image.open(io.BytesIO(image.data)))
    assert overlay.shape == (576, 767, 3) and ((overlay == (255, 0, 0)).all(axis=2)).any(), "a red outline"


def test_an_upload_is_segmented_and_a_bad_file_is_named(shown, capsys):
    widget = try_it(live=True)
    buffer = io.BytesIO()
    Image.fromarray(sample(3)[0]).save(buffer, format="PNG")
    upload(widget, "mine.png", buffer.getvalue())
    assert "mine.png: 256 × 256 pixels; lesion" in shown[0].data
    upload(widget, "notes.jpg", b"not an image")
    assert "notes.jpg: cannot read image" in capsys.readouterr().out
