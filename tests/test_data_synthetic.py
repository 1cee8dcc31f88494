"""The synthetic default dataset: deterministic, exact masks, idempotent default, learnable."""
import numpy as np
import pytest
from PIL import Image

from ulvm.data import default_dataset, load_prepared, prepare, synthetic
from ulvm.data.synthetic import generate, sample


def test_samples_are_deterministic_and_seeded():
    a_image, a_mask = sample(7, seed=0)
    b_image, b_mask = sample(7, seed=0)
    assert np.array_equal(a_image, b_image) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(sample(7, seed=1)[0], a_image)
    assert a_image.shape == (256, 256, 3) and a_image.dtype == np.uint8
    assert set(np.unique(a_mask)) == {0, 255}


def test_masks_are_one_plausible_lesion():
    for index in range(20):
        image, mask = sample(index, size=128)
        lesion = mask > 0
        assert 0.01 < lesion.mean() < 0.6  # one lesion, never the whole image
        border = np.concatenate([lesion[0], lesion[-1], lesion[:, 0], lesion[:, -1]])
        assert not border.any()  # centred: the inverted-mask check stays meaningful
        assert image[lesion].mean() < image[~lesion].mean()  # pigmented: darker than the skin


def test_generate_writes_the_custom_layout(tmp_path):
    out = generate(tmp_path / "synth", n=3, size=64)
    image = Image.open(out / "images" / "synth_0002.png")
    mask = Image.open(out / "masks" / "synth_0002.png")
    assert image.mode == "RGB" and mask.mode == "L" and image.size == (64, 64)
    assert np.array_equal(np.asarray(image), sample(2, size=64)[0])


def test_default_dataset_is_prepared_once(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "DEFAULT_COUNT", 20)  # the logic, on a small set (full size: slow test)
    monkeypatch.setattr(synthetic, "DEFAULT_COUNTS", {"train": 12, "val": 2, "test": 6})
    prepared = default_dataset(tmp_path)
    assert prepared == tmp_path / "prepared" / "synthetic"
    stamp = (prepared / "manifest.json").stat().st_mtime_ns
    assert default_dataset(tmp_path) == prepared
    assert (prepared / "manifest.json").stat().st_mtime_ns == stamp  # idempotent: nothing rewritten
    assert load_prepared(prepared).manifest["command"] == (
        f"ulvm prepare folder --src {tmp_path}/raw/synthetic --out {tmp_path}/prepared/synthetic "
        f"--size 256 --seed 42 --folds 5 --counts 12 2 6")


def test_default_dataset_built_once_by_concurrent_processes(tmp_path, monkeypatch):
    """Two processes asking for the default data at the same moment: one builds it, the other waits."""
    import multiprocessing

    monkeypatch.setattr(synthetic, "DEFAULT_COUNT", 20)   # forked children inherit the small set
    monkeypatch.setattr(synthetic, "DEFAULT_COUNTS", {"train": 12, "val": 2, "test": 6})
    calls, real_generate = tmp_path / "generate_calls", synthetic.generate

    def counted_generate(*args, **kwargs):
        with open(calls, "a") as log:
            log.write("generate\n")
        return real_generate(*args, **kwargs)
    monkeypatch.setattr(synthetic, "generate", counted_generate)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=default_dataset, args=(tmp_path,)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0, 0]
    assert calls.read_text().splitlines() == ["generate"]          # built once; the other process waited
    assert len(load_prepared(tmp_path / "prepared" / "synthetic").ids) == 20
    assert not [p.name for p in (tmp_path / "prepared").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_default_dataset_full_size(tmp_path):
    data = load_prepared(default_dataset(tmp_path))
    assert {s: len(data.indices(s)) for s in data.split_names()} == {"train": 120, "val": 20, "test": 60}
    assert data.folds == 5


def test_synthetic_lesions_are_learnable(tmp_path):
    """Even a per-pixel logistic regression on colour, fitted on training images, segments held-out
    images far better than chance; the network does much better (the engine's tests train on it)."""
    from sklearn.linear_model import LogisticRegression

    data = load_prepared(prepare("folder", generate(tmp_path / "raw", n=40, size=64), tmp_path / "p",
                                 size=64, counts=(30, 2, 8), folds=0, workers=1))

    def pixels(split):
        rows = data.indices(split)
        return data.images[rows].reshape(-1, 3) / 255.0, data.masks[rows].reshape(-1) >= 128
    model = LogisticRegression(max_iter=200).fit(*pixels("train"))
    x, truth = pixels("test")
    predicted = model.predict(x)
    dsc = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert dsc > 0.6
