"""Pooled metrics agree with scikit-learn's confusion matrix; per-image metrics and the bootstrap CI."""
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from ulvm.metrics import bootstrap_ci, confusion, confusion_counts, per_image_metrics, pooled_metrics


def _sklearn_metrics(probs, targets, threshold):
    """The official test loop: flatten everything, threshold both, one confusion matrix."""
    y_pred = (np.asarray(probs).reshape(-1) >= threshold).astype(int)
    y_true = (np.asarray(targets).reshape(-1) >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "dsc": 2 * tp / (2 * tp + fp + fn), "iou": tp / (tp + fp + fn),
            "acc": (tp + tn) / (tp + tn + fp + fn), "se": tp / (tp + fn), "sp": tn / (tn + fp),
            "precision": tp / (tp + fp)}


@pytest.mark.parametrize("threshold", [0.5, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_metrics_match_sklearn_on_random_soft_inputs(seed, threshold):
    rng = np.random.default_rng(seed)
    probs = rng.random((5, 1, 24, 20)).astype(np.float32)
    targets = rng.random((5, 1, 24, 20)).astype(np.float32)   # soft ground truth
    targets[0, 0, :3, :3] = 0.5                                # the gt boundary counts as lesion
    expected = _sklearn_metrics(probs, targets, threshold)

    counts = confusion(probs, targets, threshold)
    assert counts == {k: int(expected[k]) for k in ("tp", "fp", "fn", "tn")}
    for got in (pooled_metrics(probs, targets, threshold),
                pooled_metrics(torch.from_numpy(probs), torch.from_numpy(targets), threshold),
                pooled_metrics(counts),
                pooled_metrics(confusion_counts(probs, targets, threshold))):
        for name in ("dsc", "iou", "acc", "se", "sp", "precision"):
            assert got[name] == pytest.approx(expected[name], rel=1e-12), name


def test_pooling_is_not_the_mean_of_per_image_dsc():
    # A large well-segmented lesion and a small missed one: pooled DSC is high, the per-image mean is not.
    targets = np.zeros((2, 32, 32), np.float32)
    targets[0, 4:28, 4:28] = 1.0
    targets[1, 10:12, 10:12] = 1.0
    probs = targets.copy()
    probs[1] = 0.0
    per_image = per_image_metrics(probs, targets)
    assert per_image["dsc"].tolist() == [1.0, 0.0]
    assert pooled_metrics(probs, targets)["dsc"] == pytest.approx(2 * 576 / (2 * 576 + 4))


def test_empty_prediction_and_ground_truth_is_perfect_and_undefined_ratios_are_nan():
    zeros = np.zeros((1, 8, 8))
    image = per_image_metrics(zeros, zeros)
    assert image["dsc"].tolist() == [1.0] and image["iou"].tolist() == [1.0]
    pooled = pooled_metrics(zeros, zeros)
    assert pooled["acc"] == 1.0 and pooled["sp"] == 1.0
    assert np.isnan(pooled["se"]) and np.isnan(pooled["precision"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_bootstrap_ci_is_seeded_and_brackets_the_pooled_value():
    rng = np.random.default_rng(3)
    probs = rng.random((30, 16, 16))
    targets = np.clip(probs + rng.normal(0, 0.3, probs.shape), 0, 1)
    counts = confusion_counts(probs, targets)
    pooled = pooled_metrics(counts)["dsc"]
    low, high = bootstrap_ci(counts, n_boot=500, seed=7)
    assert low < pooled < high
    assert (low, high) == bootstrap_ci(counts, n_boot=500, seed=7)
    assert (low, high) != bootstrap_ci(counts, n_boot=500, seed=8)
    # one image only: every replicate is that image, the interval collapses
    assert bootstrap_ci(counts[:1], n_boot=50) == pytest.approx((pooled_metrics(counts[:1])["dsc"],) * 2)
