"""What the PVM layers look at: the Δ / gate / Seg-Grad-CAM hooks, `ulvm explain`, the border check."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ulvm.model import UltraLightVMUNet
from ulvm.model.explain import PVM_STAGES, explain, pvm_layer, seg_grad_cam

# 64² input: encoder4 runs on 8×8 tokens, encoder5 on 4×4, encoder6 and decoder1-2 on 2×2, decoder3 on 4×4
GRIDS = {"encoder4": 8, "encoder5": 4, "encoder6": 2, "decoder1": 2, "decoder2": 2, "decoder3": 4}


def small_model(parallel=4):
    torch.manual_seed(0)
    return UltraLightVMUNet(parallel=parallel, backend="parallel").eval()


def lesion_image(size=256, radius=70, inside=60.0, outside=200.0):
    y, x = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    image = torch.full((1, 3, size, size), outside)
    image[:, :, (y - size / 2) ** 2 + (x - size / 2) ** 2 < radius ** 2] = inside
    return image


@pytest.mark.parametrize("parallel", [1, 4])
def test_maps_have_one_delta_and_gate_per_chunk_on_each_stage_grid(parallel):
    model = small_model(parallel)
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model(images)
    result = explain(model, images)
    assert set(result["stages"]) == set(PVM_STAGES)
    for stage, maps in result["stages"].items():
        side = GRIDS[stage]
        assert maps["delta"].shape == maps["gate"].shape == (2, parallel, side, side)
        assert maps["gradcam"].shape == (2, side, side) and (maps["gradcam"] >= 0).all()
        assert (maps["delta"] > 0).all()                                   # Δ = softplus(...) > 0
    torch.testing.assert_close(result["probability"], expected)           # the hooks change nothing
    assert all(pvm_layer(model, stage).mamba.scan_recorder is None for stage in PVM_STAGES)   # removed after
    assert all(p.grad is None for p in model.parameters())                # weights' gradients untouched


def test_the_official_per_chunk_loop_records_the_same_maps():
    model, images = small_model(4), torch.rand(2, 3, 64, 64) * 255
    batched = explain(model, images)["stages"]
    for stage in PVM_STAGES:
        pvm_layer(model, stage).batch_chunks = False
    looped = explain(model, images)["stages"]
    for stage in PVM_STAGES:
        torch.testing.assert_close(looped[stage]["delta"], batched[stage]["delta"])
        torch.testing.assert_close(looped[stage]["gate"], batched[stage]["gate"])


def test_delta_maps_change_with_the_input_and_only_with_it():
    from ulvm.deploy.pretrained import load_pretrained

    model = load_pretrained("isic2017", backend="parallel")      # trained: its Δ depends on the tokens
    first, second = lesion_image(64, radius=18), lesion_image(64, radius=10, inside=120.0)
    a, b, again = (explain(model, x)["stages"] for x in (first, second, first))
    for stage in PVM_STAGES:
        assert (a[stage]["delta"] - b[stage]["delta"]).abs().max() > 1e-4 * a[stage]["delta"].mean()
        torch.testing.assert_close(a[stage]["delta"], again[stage]["delta"])


def test_seg_grad_cam_of_a_constant_image_is_flat():
    constant = torch.full((2, 5, 6, 6), 3.0)
    cam = seg_grad_cam(constant, torch.randn(2, 5, 6, 6))
    torch.testing.assert_close(cam, cam[:, :1, :1].expand_as(cam))        # the formula adds no structure
    # The shipped network: on a constant image the encoder stages' maps are flat away from the borders
    # (zero padding) and the scan's first rows; on an image with a lesion they are not.
    from ulvm.deploy.pretrained import load_pretrained

    model = load_pretrained("isic2017", backend="parallel")
    for image, flat in ((torch.zeros(1, 3, 256, 256), True), (lesion_image(), False)):
        stages = explain(model, image, region="all")["stages"]
        for stage in ("encoder4", "encoder5"):
            cam = stages[stage]["gradcam"][0]
            interior = cam[2:-2, 2:-2]
            spread = float((interior - interior[0]).abs().max() / cam.abs().max())
            assert (spread < 1e-4) == flat, (stage, spread)


def test_border_band_marks_the_cells_the_border_runs_through():
    from ulvm.deploy.explain import border_band

    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    band = border_band(mask, (4, 4))[0]
    assert band.sum() == 0                     # the lesion fills whole 2×2 cells: no cell holds both
    band = border_band(mask, (2, 2))[0]
    assert band.all()                          # each 4×4 cell holds lesion and skin
    mask[..., 2:5, 2:5] = 0
    mask[..., 3:6, 3:6] = 1
    assert border_band(mask, (4, 4))[0].sum() > 0


def test_ulvm_explain_writes_maps_and_refuses_what_it_did_not_write(tmp_path, capsys):
    from ulvm.cli import main

    image = tmp_path / "photo.png"
    array = np.full((96, 128, 3), 200, np.uint8)
    array[30:70, 40:90] = (90, 60, 40)
    Image.fromarray(array).save(image)
    out = tmp_path / "maps"
    assert main(["explain", str(image), "--out", str(out)]) == 0
    manifest = json.loads((out / "photo_explain.json").read_text())
    assert len(manifest["files"]) == 3 * len(PVM_STAGES)
    delta = Image.open(out / "photo_encoder4_delta.png")
    assert delta.size == (128 * 4, 96) and delta.mode == "L"          # 4 chunks side by side, at the photo's size
    assert Image.open(out / "photo_decoder3_gradcam.png").size == (128, 96)
    assert main(["explain", str(image), "--out", str(out)]) == 0        # its own files: replaced
    (out / "photo_encoder5_gate.png").write_bytes(b"mine")
    assert main(["explain", str(image), "--out", str(out)]) == 2
    assert "photo_encoder5_gate.png: exists and was not written by ulvm explain" in capsys.readouterr().err
    assert (out / "photo_encoder5_gate.png").read_bytes() == b"mine"
    (tmp_path / "notes_explain.json").write_text("{}")
    (tmp_path / "notes.png").write_bytes(b"not an image")
    assert main(["explain", str(tmp_path / "notes.png"), "--out", str(tmp_path)]) == 2
    assert "notes_explain.json: exists and was not written by ulvm explain" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.jpg"), "--out", str(out)]) == 2
    assert "missing.jpg: no such image file" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["explain", str(tmp_path / "broken.png"), "--out", str(out)]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_a_model_without_pvm_layers_is_refused_by_name():
    from ulvm.deploy.explain import explainable
    from ulvm.errors import UlvmError

    with pytest.raises(UlvmError, match="unet.pt: not an UltraLight VM-UNet"):
        explainable(torch.nn.Conv2d(3, 1, 1), "unet.pt")
