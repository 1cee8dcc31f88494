"""The BCE + Dice loss equals the official BceDiceLoss (written out here from its definition)."""
import torch

from ulvm.engine.losses import bce_dice_loss, bce_dice_per_image


def _official_bce_dice(pred, target, wb=1.0, wd=1.0, smooth=1.0):
    size = pred.size(0)
    pred_, target_ = pred.view(size, -1), target.view(size, -1)
    bce = torch.nn.BCELoss()(pred_, target_)
    dice_score = (2 * (pred_ * target_).sum(1) + smooth) / (pred_.sum(1) + target_.sum(1) + smooth)
    return wb * bce + wd * (1 - dice_score.sum() / size)


def test_matches_the_official_formula_on_soft_targets():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(5, 1, 16, 16, generator=generator)
    targets = torch.rand(5, 1, 16, 16, generator=generator)
    assert torch.allclose(bce_dice_loss(probs, targets), _official_bce_dice(probs, targets), atol=1e-6)
    weighted = bce_dice_loss(probs, targets, bce_weight=0.3, dice_weight=2.0, smooth=0.5)
    assert torch.allclose(weighted, _official_bce_dice(probs, targets, 0.3, 2.0, 0.5), atol=1e-6)


def test_per_image_loss_does_not_depend_on_the_batch():
    probs = torch.rand(4, 1, 8, 8)
    targets = (torch.rand(4, 1, 8, 8) > 0.5).float()
    alone = torch.cat([bce_dice_per_image(probs[i:i + 1], targets[i:i + 1]) for i in range(4)])
    assert torch.allclose(bce_dice_per_image(probs, targets), alone)


def test_perfect_prediction_has_near_zero_loss_and_gradients_flow():
    targets = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = (targets * 2 - 1) * 20
    logits.requires_grad_(True)
    loss = bce_dice_loss(torch.sigmoid(logits), targets)
    loss.backward()
    assert loss.item() < 0.05 and logits.grad is not None


def test_nan_probabilities_give_a_nan_loss_instead_of_an_error():
    probs = torch.rand(2, 1, 4, 4)
    probs[1, 0, 0, 0] = float("nan")
    loss = bce_dice_per_image(probs, torch.rand(2, 1, 4, 4), dice_weight=0.0)
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])
