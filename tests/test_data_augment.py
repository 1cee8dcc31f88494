"""Paper normalisation, the Dataset, and the two augmentation paths (NumPy/SciPy and torch batch)."""
import numpy as np
import pytest
import torch
from data_trees import make_folder
from torch.utils.data import DataLoader

from ulvm.data import (
    AugmentParams,
    SegmentationDataset,
    augment_batch,
    draw_params,
    load_prepared,
    paper_normalize,
    prepare,
    seeded_generator,
    split_statistics,
    transform_batch,
    transform_numpy,
    worker_init_fn,
)


def random_batch(seed=0, batch=6, size=64):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    masks = (rng.random((batch, size, size, 1)) < 0.5).astype(np.float32)
    return images, masks


def to_torch(images, masks):  # (batch, H, W, C) -> (batch, C, H, W)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(masks).permute(0, 3, 1, 2).contiguous())


def numpy_path(images, masks, params):
    pairs = [transform_numpy(images[i], masks[i], int(params.k[i]), int(params.flip[i]), int(params.angle[i]))
             for i in range(len(images))]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_dihedral_part_equals_numpy_exactly():
    images, masks = random_batch()
    for k in range(4):
        for flip in (-1, 0, 1):
            params = AugmentParams(np.full(6, k), np.full(6, flip), np.zeros(6, int))  # angle 0: no rotation
            expected_images, expected_masks = numpy_path(images, masks, params)
            got_images, got_masks = transform_batch(*to_torch(images, masks), params)
            assert torch.equal(got_images, torch.from_numpy(expected_images).permute(0, 3, 1, 2))
            assert torch.equal(got_masks, torch.from_numpy(expected_masks).permute(0, 3, 1, 2))


@pytest.mark.parametrize("angle", [20, 33, 45, 61, 79])
def test_rotation_matches_scipy(angle):
    images, masks = random_batch(batch=2, size=256)
    params = AugmentParams(np.array([0, 1]), np.array([-1, 0]), np.array([angle, angle]))
    expected_images, _ = numpy_path(images, masks, params)
    got_images, _ = transform_batch(*to_torch(images, masks), params)
    differ = (got_images.permute(0, 2, 3, 1).numpy() != expected_images).any(-1)
    # identical except where a coordinate is a numerical half-pixel tie (only at 45 degrees)
    assert differ.sum() <= (200 if angle == 45 else 0)


def test_rotation_keeps_masks_binary_aligned_and_zero_filled():
    size = 64
    image = np.zeros((1, size, size, 3), np.float32)
    image[0, 20:40, 24:44] = 200.0
    mask = (image[..., :1] > 0).astype(np.float32)
    params = AugmentParams(np.array([1]), np.array([1]), np.array([37]))
    out_image, out_mask = transform_batch(*to_torch(image, mask), params)
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour: no new values
    assert torch.equal(out_image[:, :1] > 0, out_mask > 0)  # image and mask moved alike
    full, _ = transform_batch(torch.ones(1, 3, size, size), torch.ones(1, 1, size, size), params)
    assert full[0, 0, 0, 0] == 0 and full[0, 0, size // 2, size // 2] == 1  # corners filled with 0


def test_draw_params_follow_the_paper_distribution():
    drawn = draw_params(20000, torch.Generator().manual_seed(0))
    assert all(torch.is_tensor(values) for values in (drawn.k, drawn.flip, drawn.angle))  # left on the device
    params = AugmentParams(drawn.k.numpy(), drawn.flip.numpy(), drawn.angle.numpy())
    flipped, rotated = params.flip >= 0, params.angle > 0
    assert abs(flipped.mean() - 0.5) < 0.02 and abs(rotated.mean() - 0.5) < 0.02
    assert set(params.angle[rotated]) == set(range(20, 80))
    assert set(params.k[flipped]) == {0, 1, 2, 3} and set(params.flip[flipped]) == {0, 1}
    assert np.all(params.k[~flipped] == 0)
    numpy_params = draw_params(1000, np.random.default_rng(0))
    assert set(numpy_params.angle[numpy_params.angle > 0]) <= set(range(20, 80))


def test_tensor_and_array_parameters_give_the_same_batch():
    images, masks = to_torch(*random_batch())
    drawn = draw_params(images.shape[0], torch.Generator().manual_seed(5))
    as_arrays = AugmentParams(drawn.k.numpy(), drawn.flip.numpy(), drawn.angle.numpy())
    for got, expected in zip(transform_batch(images, masks, drawn), transform_batch(images, masks, as_arrays)):
        assert torch.equal(got, expected)


def test_augment_batch_is_seeded():
    images, masks = to_torch(*random_batch())
    a = augment_batch(images, masks, torch.Generator().manual_seed(3))
    b = augment_batch(images, masks, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], images)


def test_paper_normalisation_statistics_have_no_effect():
    """z-score then per-image min-max == per-image min-max: the split statistics cancel out."""
    images = np.random.default_rng(1).integers(10, 240, (4, 16, 16, 3)).astype(np.uint8)
    mean, std = split_statistics(images)
    assert mean == pytest.approx(images.mean()) and std == pytest.approx(images.astype(np.float64).std())
    paper = paper_normalize(images, mean, std)
    plain = paper_normalize(images, 0.0, 1.0)
    assert paper.dtype == np.float32 and paper.min() == 0 and paper.max() == pytest.approx(255)
    np.testing.assert_allclose(paper, plain, atol=1e-3)
    per_image = [(x - x.min()) / (x.max() - x.min()) * 255 for x in images.astype(np.float64)]
    np.testing.assert_allclose(paper, np.stack(per_image), atol=1e-3)
    tensor = paper_normalize(torch.from_numpy(images).permute(0, 3, 1, 2), mean, std)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), paper, atol=1e-3)
    assert np.all(paper_normalize(np.full((8, 8, 3), 7, np.uint8), 5.0, 2.0) == 0)  # constant image


def test_normalisation_identity_on_real_images(realdata):
    from PIL import Image
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64)))
                       for p in sorted((realdata / "PH2" / "images").glob("*.png"))[:8]])
    mean, std = split_statistics(images)
    assert 100 < mean < 200 and 20 < std < 80  # real dermoscopy: bright skin, moderate contrast
    np.testing.assert_allclose(paper_normalize(images, mean, std), paper_normalize(images, 0, 1), atol=1e-3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    src = make_folder(tmp_path_factory.mktemp("raw") / "raw", 12, size=(64, 64))
    return load_prepared(prepare("folder", src, tmp_path_factory.mktemp("p") / "p", size=64,
                                 counts=(8, 2, 2), folds=0, workers=1))


def test_dataset_items_are_the_papers(prepared):
    dataset = SegmentationDataset(prepared, "train")
    image, mask = dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32
    assert float(image.min()) == 0 and float(image.max()) == pytest.approx(255)
    row = dataset.rows[0]
    assert torch.allclose(mask[0], torch.from_numpy(prepared.masks[row] / 255.0).float())
    expected = paper_normalize(prepared.images[row], dataset.mean, dataset.std)
    assert torch.allclose(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_dataset_augmentation_is_seeded_in_workers(prepared):
    def epoch(seed, workers):
        dataset = SegmentationDataset(prepared, "train", augment=True, seed=seed)
        loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers,
                            worker_init_fn=worker_init_fn, generator=seeded_generator(seed))
        return torch.cat([images for images, _ in loader])
    assert torch.equal(epoch(0, 0), epoch(0, 0))
    assert not torch.equal(epoch(0, 0), epoch(1, 0))
    assert torch.equal(epoch(5, 2), epoch(5, 2))


def test_augmented_items_keep_image_and_mask_aligned(prepared):
    dataset = SegmentationDataset(prepared, "train", augment=True, seed=0)
    for index in range(len(dataset)):
        image, mask = dataset[index]
        lesion = mask[0] > 0.5
        # the synthetic lesion is dark: inside the mask the image is darker than outside (non-zero) skin
        skin = (~lesion) & (image.mean(0) > 0)
        assert image.mean(0)[lesion].mean() < image.mean(0)[skin].mean()


def test_training_split_tensors_equal_the_dataset(prepared):
    """The training loop's in-memory split (normalised once) gives the paper's per-image items."""
    from ulvm.config import Config
    from ulvm.data.tensors import split_tensors

    dataset = SegmentationDataset(prepared, "train")
    config = Config.profile("paper", input_size=prepared.images.shape[1])
    images, masks, ids = split_tensors(prepared, "train", config, torch.device("cpu"))
    assert len(ids) == len(dataset)
    for i in range(4):
        image, mask = dataset[i]
        assert torch.allclose(images[i], image, atol=1e-4) and torch.equal(masks[i], mask)


def test_split_tensors_normalised_in_parts_equal_the_split_at_once(prepared, monkeypatch):
    from ulvm.config import Config
    from ulvm.data import tensors

    config = Config.profile("paper", input_size=prepared.images.shape[1])
    whole = tensors.split_tensors(prepared, "train", config, torch.device("cpu"))
    monkeypatch.setattr(tensors, "NORMALIZE_AT_ONCE", 3)            # 8 training images: parts of 3, 3, 2
    parts = tensors.split_tensors(prepared, "train", config, torch.device("cpu"))
    assert torch.equal(parts[0], whole[0]) and torch.equal(parts[1], whole[1]) and parts[2] == whole[2]
    raw = tensors.split_tensors(prepared, "train", config, torch.device("cpu"), normalize=False)[0]
    expected = torch.from_numpy(prepared.images[prepared.indices("train")]).float().permute(0, 3, 1, 2)
    assert torch.equal(raw, expected)
