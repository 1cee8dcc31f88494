"""`ulvm predict` / `ulvm.predict` on images of any size and format, and `ulvm export` to ONNX."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ulvm
from ulvm.cli import main
from ulvm.deploy.prediction import predict_files
from ulvm.errors import UlvmError


def _dermoscopy_like(height, width, seed=0):
    """A dark irregular blob on skin-coloured noise, and its mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    blob = ((rows - height / 2) / (height / 4)) ** 2 + ((cols - width / 2) / (width / 5)) ** 2 < 1
    image = rng.normal((200, 160, 140), 12, (height, width, 3))
    image[blob] = rng.normal((90, 60, 50), 12, (int(blob.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), blob


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """One image per format the CLI must take: JPEG, BMP, grey PNG, RGBA PNG, 16-bit grey PNG, odd sizes."""
    folder = tmp_path_factory.mktemp("photos")
    image, _ = _dermoscopy_like(301, 457)
    Image.fromarray(image).save(folder / "a.jpg", quality=90)
    Image.fromarray(image[:200, :150]).save(folder / "b.bmp")
    Image.fromarray(image.mean(axis=2).astype(np.uint8)).save(folder / "c_grey.png")
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])).save(folder / "d_rgba.png")
    Image.fromarray((image.mean(axis=2) * 64).astype(np.uint16)).save(folder / "e_16bit.png")
    (folder / "notes.txt").write_text("not an image")     # ignored: not an image suffix
    return folder


def test_masks_come_back_at_the_original_size_for_every_format(photos, tmp_path):
    report = predict_files([photos], tmp_path / "out", "isic2017", overlay_images=True, device="cpu",
                           progress=False)
    assert not report.failed and len(report.written) == 10
    for source in sorted(photos.glob("[a-e]*")):
        mask = np.asarray(Image.open(tmp_path / "out" / f"{source.stem}_mask.png"))
        assert mask.shape == Image.open(source).size[::-1]
        assert set(np.unique(mask)) <= {0, 255}
        overlay = Image.open(tmp_path / "out" / f"{source.stem}_overlay.png")
        assert overlay.size == Image.open(source).size and overlay.mode == "RGB"


def test_the_cli_skips_unreadable_files_names_them_and_fails_at_the_end(photos, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["predict", str(photos / "a.jpg"), str(broken), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "skipped" in captured.err and "broken.png" in captured.err
    assert "predicted 1 image(s)" in captured.out and "1 failed" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".ulvm-predict.json", "a_mask.png"]  # no half file


def test_the_python_api_takes_arrays_pil_images_and_paths(photos):
    image, blob = _dermoscopy_like(180, 240, seed=3)
    masks = ulvm.predict([image, Image.fromarray(image), photos / "a.jpg"], device="cpu")
    assert [m.shape for m in masks] == [(180, 240), (180, 240), (301, 457)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert ulvm.predict(image, device="cpu").shape == (180, 240)          # one image in, one mask out


def test_masks_are_scored_against_expert_masks_named_like_the_images(tmp_path):
    """`--truth FOLDER --report JSON`: each mask against its expert mask (found by name, suffix detected);
    an image without one, or with one of another size, is predicted but not scored, and says why."""
    photos, truth = tmp_path / "photos", tmp_path / "truth"
    for i, (height, width) in enumerate([(230, 310), (200, 260), (180, 240), (150, 150)]):
        image, blob = _dermoscopy_like(height, width, seed=i)
        photos.mkdir(exist_ok=True), truth.mkdir(exist_ok=True)
        Image.fromarray(image).save(photos / f"p{i}.jpg", quality=92)
        if i < 3:   # p3 has no expert mask; p2's is of another size
            Image.fromarray(blob.astype(np.uint8) * 255 if i < 2 else np.zeros((10, 10), np.uint8)).save(
                truth / f"p{i}_mask.png")
    report = tmp_path / "report.json"
    assert main(["predict", str(photos), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress",
                 "--truth", str(truth), "--report", str(report)]) == 0
    record = json.loads(report.read_text())
    agreement = record["agreement"]
    assert agreement["images"] == 2 and set(agreement["per_image_dsc"]) == {"p0", "p1"}
    assert 0 <= agreement["pooled"]["dsc"] <= 1 and record["predicted"] == 4 and record["seconds"] > 0
    assert "no expert mask for it" in record["unscored"][str(photos / "p3.jpg")]
    assert "size" in record["unscored"][str(photos / "p2.jpg")]
    assert record["code_version"] and record["device"] == "cpu"
    (tmp_path / "other").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "other" / "q0_mask.png")
    with pytest.raises(UlvmError, match="other: no mask's name is an input image's name"):
        predict_files([photos / "p0.jpg"], tmp_path / "out2", truth=tmp_path / "other", progress=False)
    assert not (tmp_path / "out2").exists()                # refused before anything was written


def test_unknown_weights_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(UlvmError, match="no such weights file or run folder, and not a shipped model"):
        ulvm.predict(np.zeros((8, 8, 3), np.uint8), weights=tmp_path / "nope.pt")
    with pytest.raises(UlvmError, match="no images found"):
        predict_files([tmp_path], tmp_path / "out", progress=False)


def test_the_shipped_model_segments_real_ph2_photos_at_their_size(realdata, tmp_path):
    """PH2 was never seen in training (the model's external test set): 12 photos, ~765x574, as a user has them."""
    images = sorted((realdata / "PH2" / "images").glob("*.png"))[::17]
    report = predict_files(images, tmp_path, "isic2017", device="cpu", progress=False,
                           truth=realdata / "PH2" / "masks")             # IMDxxx_lesion.png, the original size
    assert not report.failed and not report.unscored
    for image in images:
        predicted = np.asarray(Image.open(tmp_path / f"{image.stem}_mask.png")) > 127
        truth = np.asarray(Image.open(realdata / "PH2" / "masks" / f"{image.stem}_lesion.png")) > 127
        assert predicted.shape == truth.shape
        dsc = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert report.agreement()["per_image_dsc"][image.stem] == pytest.approx(dsc, abs=1e-6)
    assert report.agreement()["mean_dsc"] > 0.85       # the model's pooled PH2 DSC at 256²: 0.905


def test_export_writes_an_onnx_file_that_runs_without_ulvm(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", "--out", str(out), "--size", "64"]) == 0
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            f"s = ort.InferenceSession({str(out)!r}, providers=['CPUExecutionProvider'])\n"
            "y = s.run(None, {'image': np.random.rand(2, 3, 64, 64).astype(np.float32) * 255})[0]\n"
            "assert y.shape == (2, 1, 64, 64) and 'ulvm' not in sys.modules and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_photo_stored_turned_gets_its_mask_upright_as_viewers_show_it(tmp_path):
    """Phone cameras store the sensor's pixels and an EXIF orientation (6: turn 90° clockwise to view)."""
    from ulvm.data.checks import read_image

    image, _ = _dermoscopy_like(120, 200)                       # stored: 120 rows x 200 columns
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    shown = np.rot90(np.asarray(Image.open(tmp_path / "phone.jpg")), k=-1)   # what a viewer shows: 200 x 120

    upright, notes = read_image(tmp_path / "phone.jpg", upright=True)
    np.testing.assert_array_equal(upright, shown)
    assert "EXIF orientation (6)" in notes[-1]
    stored, notes = read_image(tmp_path / "phone.jpg")            # `ulvm prepare`: the pixels as stored
    assert stored.shape == (120, 200, 3) and "not applied" in notes[-1]

    mask = ulvm.predict(tmp_path / "phone.jpg", device="cpu")
    assert mask.shape == (200, 120) and mask.any()
    np.testing.assert_array_equal(mask, ulvm.predict(shown, device="cpu"))
    np.testing.assert_array_equal(ulvm.predict(Image.open(tmp_path / "phone.jpg"), device="cpu"), mask)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The shipped weights through `ulvm export --format pt2` at 64² (compiling: about a minute)."""
    import torch

    from ulvm.ssm import REGISTRY
    with torch.no_grad():
        reason = REGISTRY["cpp"].why_unavailable(torch.zeros(()))
    if reason:
        pytest.skip(f"the 'cpp' scan cannot be built here ({reason}); a 'chunked' package compiles for minutes")
    path = tmp_path_factory.mktemp("pt2") / "isic2017_64.pt2"
    assert main(["export", "--weights", "isic2017", "--out", str(path), "--size", "64"]) == 0
    return path


def test_a_pt2_package_predicts_in_a_fresh_process_what_the_checkpoint_predicts(package, photos, tmp_path):
    """`ulvm predict --weights x.pt2` in a new process: the operator is loaded before the package, masks
    come back at the original size, the same as the checkpoint's at the package's input size."""
    import torch

    from ulvm.deploy.package import load_pt2

    model = load_pt2(package)
    assert model.metadata["scan"] == "cpp" and not list(package.parent.glob(".*.tmp"))
    assert model.metadata["memory_format"] == "channels_last"        # fed channels-last, whatever it is given
    images = torch.rand(3, 3, 64, 64)                  # compiled for one image: a batch goes image by image
    with torch.no_grad():
        one_by_one = torch.cat([model(image[None]) for image in images])
        assert model.metadata["batch"] == "1" and torch.equal(model(images), one_by_one)
    done = subprocess.run([sys.executable, "-m", "ulvm", "predict", str(photos), "--weights", str(package),
                           "--out", str(tmp_path), "--device", "cpu", "--no-progress",
                           "--report", str(tmp_path / "report.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "report.json").read_text())["package"]["input_size"] == "64"
    for image in sorted(photos.glob("[a-e]*")):
        mask = np.asarray(Image.open(tmp_path / f"{image.stem}_mask.png"))
        expected = ulvm.predict(image, device="cpu", size=64)
        assert mask.shape == expected.shape and (mask == expected).mean() > 0.999, image.name


def test_a_pt2_package_refuses_what_it_cannot_do_with_a_clear_error(package, tmp_path, monkeypatch, capsys):
    import torch

    from ulvm.deploy.package import load_pt2
    from ulvm.deploy.prediction import load_weights

    model = load_pt2(package)
    for wrong in (torch.zeros(1, 3, 32, 32), torch.zeros(0, 3, 64, 64)):
        with pytest.raises(UlvmError, match=r"takes CPU float32 images \(B, 3, 64, 64\), B >= 1"):
            model(wrong)
    with pytest.raises(UlvmError, match="runs on the CPU in float32 only"):
        load_weights(package, "cuda")
    with pytest.raises(UlvmError, match="the scan is compiled into the package"):
        load_weights(package, "cpu", backend="parallel")
    (tmp_path / "notes.pt2").write_text("not a package")
    with pytest.raises(UlvmError, match=r"notes.pt2: not loaded: a .pt2 package is compiled code"):
        load_pt2(tmp_path / "notes.pt2")                      # not built here: not even read
    with pytest.raises(UlvmError, match=r"notes.pt2: not a readable .pt2 package"):
        load_pt2(tmp_path / "notes.pt2", trust=True)
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    with pytest.raises(UlvmError, match=r"built with torch .*, this is torch 9.9.9; .* export it again here"):
        load_pt2(package)
    assert main(["export", "--out", str(tmp_path / "m.pt2"), "--quantize", "int8"]) == 2
    assert main(["export", "--format", "pt2", "--out", str(tmp_path / "m.onnx")]) == 2
    assert main(["export", "--weights", str(package), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--quantize and --opset are for --format onnx" in err and "must end in .pt2" in err
    assert "is already compiled; export from the checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt2"]       # nothing written


# --- issue 30: never a user's file replaced, never a mask segmented, every bad input a message -------------


def _photo(path, height=120, width=160, seed=0):
    Image.fromarray(_dermoscopy_like(height, width, seed)[0]).save(path)
    return path


def test_predict_into_its_own_input_folder_replaces_no_expert_mask_and_segments_no_mask(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.png")
    _photo(folder / "b.png", seed=1)
    (folder / "b_mask.png").write_bytes(b"the expert's own mask")
    run = ["predict", str(folder), "--out", str(folder), "--device", "cpu", "--no-progress", "--overlay"]
    assert main(run) == 1                                      # b could not be written: not everything was done
    err = capsys.readouterr().err
    assert "b_mask.png exists and ulvm predict did not write it" in err and "not segmented as a photo" in err
    assert (folder / "b_mask.png").read_bytes() == b"the expert's own mask"
    assert sorted(p.name for p in folder.iterdir()) == [".ulvm-predict.json", "a.png", "a_mask.png", "a_overlay.png",
                                                        "b.png", "b_mask.png"]
    first = (folder / "a_mask.png").read_bytes()
    assert main(run) == 1                                      # a second run: no cascade, its own files replaced
    assert sorted(p.name for p in folder.iterdir())[-1] == "b_mask.png" and len(list(folder.iterdir())) == 6
    assert (folder / "a_mask.png").read_bytes() == first
    (folder / "a_mask.png").write_bytes(b"edited by hand")    # changed since ulvm wrote it: the user's now
    assert main(run) == 1 and (folder / "a_mask.png").read_bytes() == b"edited by hand"


def test_unreadable_files_with_batch_size_1_fail_at_the_end_and_the_good_ones_are_written(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = _photo(tmp_path / "good.png")
    common = ["--device", "cpu", "--no-progress", "--batch-size", "1"]
    assert main(["predict", str(broken), str(good), "--out", str(tmp_path / "o1"), *common]) == 1
    assert (tmp_path / "o1" / "good_mask.png").is_file()
    assert main(["predict", str(broken), "--out", str(tmp_path / "o2"), *common]) == 1       # only unreadable ones
    assert "broken.png: cannot read image" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--threshold", "nan"], "threshold nan: must be a number strictly between 0 and 1"),
    (["--threshold", "2"], "threshold 2.0: must be"), (["--threshold", "-1"], "threshold -1.0: must be"),
    (["--batch-size", "0"], "batch size 0: must be a whole number >= 1"), (["--batch-size", "-1"], "batch size -1"),
    (["--device", "tpu"], "device 'tpu': unknown"),
    (["--out", "{tmp}/a_file"], "a_file: exists and is not a folder"),
    (["--report", "{tmp}"], "is a folder; give a file name for the --report")])
def test_meaningless_predict_arguments_are_one_line_errors_before_any_work(tmp_path, capsys, flags, message):
    good = _photo(tmp_path / "good.png")
    (tmp_path / "a_file").write_text("mine")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert main(["predict", str(good), "--out", str(tmp_path / "out"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "good_mask.png").exists() and (tmp_path / "a_file").read_text() == "mine"


def test_odd_photos_are_refused_or_warned_about_by_name(tmp_path, capsys, monkeypatch):
    _photo(tmp_path / "tiny.png", 1, 1)
    image = Image.fromarray(_dermoscopy_like(64, 64)[0])
    image.save(tmp_path / "anim.gif", save_all=True, append_images=[image.rotate(90)])
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "case").mkdir()
    _photo(tmp_path / "case" / "lesion.png")
    common = ["--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"]
    assert main(["predict", str(tmp_path / "case"), str(_photo(tmp_path / "Lesion.png")), *common]) == 2
    assert "share the name 'Lesion' (letter case aside)" in capsys.readouterr().err    # they collide on macOS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)     # 64x64 = 4096 pixels: "huge"
    with _no_pillow_warning():
        assert main(["predict", str(tmp_path / "tiny.png"), str(tmp_path / "anim.gif"), str(tmp_path / "loop.png"),
                     *common]) == 1
    err = capsys.readouterr().err
    assert "tiny.png: 1x1 pixels is too small to segment (at least 32x32)" in err
    assert "anim.gif: " in err and "2 frames (an animated or multi-page file): only the first is segmented" in err
    assert "megapixels: read at full size" in err and "DecompressionBomb" not in err
    assert "loop.png: cannot read image" in err and "symbolic links" in err


def _no_pillow_warning():
    import warnings

    class Guard:
        def __enter__(self):
            self.catcher = warnings.catch_warnings(record=True)
            self.seen = self.catcher.__enter__()
            warnings.simplefilter("always")

        def __exit__(self, *exc):
            self.catcher.__exit__(*exc)
            assert not [w for w in self.seen if issubclass(w.category, Image.DecompressionBombWarning)]
    return Guard()


def test_predict_fails_when_most_images_go_unscored(tmp_path, capsys):
    photos, truth = tmp_path / "photos", tmp_path / "truth"
    photos.mkdir()
    truth.mkdir()
    for name in ("a", "b", "c"):
        _photo(photos / f"{name}.png")
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(truth / "a_lesion.png")
    code = main(["predict", str(photos), "--out", str(tmp_path / "out"), "--truth", str(truth), "--device", "cpu",
                 "--no-progress"])
    assert code == 1 and "2 of 3 predicted image(s) have no usable expert mask" in capsys.readouterr().err


def test_pixel_batches_bound_the_pixels_read_at_once():
    from ulvm.deploy.prediction import pixel_batches

    assert list(pixel_batches([10, 10, 10, 10, 10], 8, 25)) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert list(pixel_batches([100, 1, 1], 8, 25)) == [slice(0, 1), slice(1, 3)]     # a huge one alone
    assert list(pixel_batches([1, 1, 1], 2, 25)) == [slice(0, 2), slice(2, 3)]
