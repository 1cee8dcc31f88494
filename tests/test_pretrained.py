"""The shipped trained model loads offline, in eval mode, and segments."""
import pytest
import torch

import ulvm
from ulvm.deploy.pretrained import available, model_card
from ulvm.errors import UlvmError


def test_the_isic2017_model_loads_in_eval_mode_with_its_config():
    model = ulvm.load_pretrained("isic2017")
    assert "isic2017" in available() and not model.training
    assert model.config.parallel == 4 and model.config.bridge and model.config.epochs == 250
    assert sum(p.numel() for p in model.parameters()) == 49_457
    with torch.no_grad():
        probs = model(torch.rand(1, 3, 256, 256) * 255)
    assert probs.shape == (1, 1, 256, 256) and 0 <= probs.min() and probs.max() <= 1
    assert "non-commercial research" in model_card("isic2017")


def test_an_unknown_name_lists_the_shipped_ones():
    with pytest.raises(UlvmError, match="unknown pretrained model 'isic2018'; shipped: isic2017"):
        ulvm.load_pretrained("isic2018")
