"""The bad-input suite: each bad input gives a DataError naming the file and the problem (or a logged
fix-up), and never leaves a half-written prepared dataset behind."""
import json
import logging

import numpy as np
import pytest
from data_trees import make_folder
from PIL import Image

from ulvm.data import prepare
from ulvm.errors import DataError


@pytest.fixture
def raw(tmp_path):
    return make_folder(tmp_path / "raw", 10)


def prepare_small(src, out, **kwargs):
    kwargs.setdefault("folds", 0)
    return prepare("folder", src, out, size=32, counts=(6, 2, 2), workers=1, **kwargs)


def assert_fails_cleanly(src, out, match, **kwargs):
    with pytest.raises(DataError, match=match):
        prepare_small(src, out, **kwargs)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp folder


def test_truncated_image(raw, tmp_path):
    path = raw / "images" / "case004.png"
    path.write_bytes(path.read_bytes()[:200])
    assert_fails_cleanly(raw, tmp_path / "out", r"case004.png: cannot read image")


def test_not_an_image(raw, tmp_path):
    (raw / "images" / "case004.png").write_text("hello")
    assert_fails_cleanly(raw, tmp_path / "out", r"case004.png: cannot read image")


def test_mask_size_differs(raw, tmp_path):
    Image.new("L", (20, 20)).save(raw / "masks" / "case002.png")
    assert_fails_cleanly(raw, tmp_path / "out", r"case002.png: mask size 20x20 differs from its image size 40x30")


def test_soft_mask_rejected_unless_allowed(raw, tmp_path):
    mask = np.asarray(Image.open(raw / "masks" / "case001.png")).copy()
    mask[5, 5] = 128
    Image.fromarray(mask).save(raw / "masks" / "case001.png")
    assert_fails_cleanly(raw, tmp_path / "out", r"case001.png: mask has values other than 0 and 255")
    out = prepare_small(raw, tmp_path / "soft", allow_soft_masks=True)
    notes = json.loads((out / "manifest.json").read_text())["samples"][1]["notes"]
    assert any("soft mask accepted" in note for note in notes)


def test_palette_mask_with_lesion_at_index_0(raw, tmp_path):
    """A palette PNG whose index 0 is WHITE (lesion): read through colours, not raw indices."""
    mask = np.asarray(Image.open(raw / "masks" / "case003.png"))
    palette_mask = Image.fromarray(np.where(mask == 255, 0, 1).astype(np.uint8), mode="P")
    palette_mask.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    palette_mask.save(raw / "masks" / "case003.png")
    out = prepare_small(raw, tmp_path / "out")
    reference = prepare_small(make_folder(tmp_path / "raw2", 10), tmp_path / "ref")
    assert (out / "masks" / "case003.png").read_bytes() == (reference / "masks" / "case003.png").read_bytes()


def test_two_colour_palette_mask_is_mapped_by_luminance(raw, tmp_path, caplog):
    mask = np.asarray(Image.open(raw / "masks" / "case003.png"))
    palette_mask = Image.fromarray(np.where(mask == 255, 1, 0).astype(np.uint8), mode="P")
    palette_mask.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)  # red lesion on black
    palette_mask.save(raw / "masks" / "case003.png")
    with caplog.at_level(logging.INFO):
        out = prepare_small(raw, tmp_path / "out")
    assert "two-colour palette mask" in caplog.text
    assert np.asarray(Image.open(out / "masks" / "case003.png")).max() == 255


def test_zero_one_mask_is_scaled_and_logged(raw, tmp_path, caplog):
    mask = np.asarray(Image.open(raw / "masks" / "case000.png"))
    Image.fromarray((mask // 255).astype(np.uint8)).save(raw / "masks" / "case000.png")
    with caplog.at_level(logging.INFO):
        prepare_small(raw, tmp_path / "out")
    assert "case000.png: mask values {0, 1} scaled to {0, 255}" in caplog.text


def test_inverted_mask(raw, tmp_path):
    mask = np.asarray(Image.open(raw / "masks" / "case005.png"))
    Image.fromarray(255 - mask).save(raw / "masks" / "case005.png")
    assert_fails_cleanly(raw, tmp_path / "out", r"case005.png: mask looks inverted")
    prepare_small(raw, tmp_path / "accepted", check_inverted=False)  # the documented way out


def test_colour_mask(raw, tmp_path):
    mask = np.asarray(Image.open(raw / "masks" / "case005.png"))
    Image.fromarray(np.stack([mask, mask // 2, mask], -1)).save(raw / "masks" / "case005.png")
    assert_fails_cleanly(raw, tmp_path / "out", r"case005.png: colour mask")


def test_grey_24bit_mask_is_fine(raw, tmp_path):
    mask = np.asarray(Image.open(raw / "masks" / "case005.png"))
    Image.fromarray(np.stack([mask] * 3, -1)).save(raw / "masks" / "case005.png")
    prepare_small(raw, tmp_path / "out")


def test_image_without_mask_and_mask_without_image(raw, tmp_path):
    (raw / "masks" / "case007.png").unlink()
    assert_fails_cleanly(raw, tmp_path / "out", r"1 image without mask: .*case007.png")
    (raw / "images" / "case008.png").rename(raw / "other.png")
    (raw / "images" / "case007.png").unlink()
    assert_fails_cleanly(raw, tmp_path / "out", r"1 mask without image: .*case008.png")


def test_grayscale_and_rgba_images_are_converted_and_logged(raw, tmp_path, caplog):
    image = Image.open(raw / "images" / "case001.png")
    image.convert("L").save(raw / "images" / "case001.png")
    rgba = image.convert("RGBA")
    rgba.putpixel((0, 0), (1, 2, 3, 0))
    rgba.save(raw / "images" / "case002.png")
    with caplog.at_level(logging.INFO):
        out = prepare_small(raw, tmp_path / "out")
    assert "case001.png: L image converted to RGB" in caplog.text
    assert "case002.png: RGBA image with transparent pixels; alpha dropped" in caplog.text
    samples = json.loads((out / "manifest.json").read_text())["samples"]
    assert samples[1]["notes"] == ["case001.png: L image converted to RGB"]


def test_empty_split_and_empty_folder(raw, tmp_path):
    with pytest.raises(DataError, match="empty split 'val'"):   # named, but empty ((8, 0, 2) means: no val)
        prepare("folder", raw, tmp_path / "out", size=32, counts={"train": 8, "val": 0, "test": 2}, workers=1)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError, match=rf"{empty}: no images or masks found"):
        prepare("folder", empty, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_duplicate_stems(raw, tmp_path):
    Image.open(raw / "images" / "case001.png").convert("RGB").save(raw / "images" / "case001.jpg")
    assert_fails_cleanly(raw, tmp_path / "out", r"case001.*duplicate image id 'case001'")


def test_missing_folders_and_unknown_kind(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match=r"images: folder not found"):
        prepare("folder", tmp_path / "src", tmp_path / "out")  # (an --out inside --src is refused first)
    with pytest.raises(DataError, match="unknown dataset kind 'isic2019'"):
        prepare("isic2019", tmp_path, tmp_path / "out")


def test_mask_suffix_detection_and_mismatch(tmp_path):
    src = make_folder(tmp_path / "lesion", 10, mask_suffix="_lesion")
    prepare_small(src, tmp_path / "out")
    odd = make_folder(tmp_path / "odd", 10, mask_suffix="-label")
    with pytest.raises(DataError, match="no mask name matches an image name"):
        prepare_small(odd, tmp_path / "out2")
    prepare_small(odd, tmp_path / "out3", mask_suffix="-label")


def test_several_ph2_tables_must_agree(tmp_path):
    from ulvm.data.layouts import _ph2_diagnoses_below

    header = "|| Name || Histological Diagnosis || Clinical Diagnosis ||\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "PH2_dataset.txt").write_text(header + "|| IMD002 || || 1 ||\n")
    (tmp_path / "b" / "PH2_dataset.txt").write_text(header + "|| IMD002 || || 1 ||\n")
    assert _ph2_diagnoses_below(tmp_path) == {"IMD002": "atypical nevus"}       # copies that agree: fine
    (tmp_path / "b" / "PH2_dataset.txt").write_text(header + "|| IMD002 || || 2 ||\n")
    with pytest.raises(DataError, match=r"b/PH2_dataset.txt: its diagnoses differ from those of .*a/PH2_dataset"):
        _ph2_diagnoses_below(tmp_path)


def png16(array: np.ndarray) -> bytes:
    """A 16-bit grey (H, W) or RGB (H, W, 3) PNG written by hand (Pillow cannot write 16-bit RGB)."""
    import struct
    import zlib

    height, width = array.shape[:2]
    colour_type = 0 if array.ndim == 2 else 2
    rows = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_16bit_grey_image_is_scaled_by_its_range_not_white(raw, tmp_path, caplog):
    """A 12-bit-in-16 grey image (values 0..4095) became all white (clipped at 255) before."""
    from ulvm.data.checks import read_image

    grey = np.asarray(Image.open(raw / "images" / "case001.png").convert("L")).astype(np.uint16)
    Image.fromarray(grey * 16 + 7).save(raw / "images" / "case001.png")  # Pillow writes I;16 as 16-bit
    assert Image.open(raw / "images" / "case001.png").mode.startswith("I")
    image, notes = read_image(raw / "images" / "case001.png")
    low, high = int(grey.min()), int(grey.max())
    expected = np.round((grey.astype(float) - low) * 255 / (high - low)).astype(np.uint8)
    assert np.array_equal(image[..., 0], expected) and np.array_equal(image[..., 2], expected)
    assert "16-bit grey image scaled to 8 bits by its range" in notes[0]
    with caplog.at_level(logging.INFO):
        prepare_small(raw, tmp_path / "out")
    assert "case001.png: 16-bit grey image scaled" in caplog.text


def test_16bit_rgb_png_is_read_and_scaled(raw, tmp_path):
    from ulvm.data.checks import read_image

    rgb = np.asarray(Image.open(raw / "images" / "case002.png")).astype(np.uint16)
    (raw / "images" / "case002.png").write_bytes(png16(rgb * 257))  # the full 16-bit scale
    image, notes = read_image(raw / "images" / "case002.png")
    stretched = np.round((rgb - rgb.min()) * 255.0 / (rgb.max() - rgb.min())).astype(np.uint8)
    assert np.array_equal(image, stretched) and "16-bit RGB image" in notes[0]
    twelve_bit = rgb * 16 + np.arange(16, dtype=np.uint16)[rgb % 16]  # low bits that Pillow alone drops
    (raw / "images" / "case002.png").write_bytes(png16(twelve_bit))
    image, _ = read_image(raw / "images" / "case002.png")
    low, high = int(twelve_bit.min()), int(twelve_bit.max())
    assert np.array_equal(image, np.round((twelve_bit - low) * 255.0 / (high - low)).astype(np.uint8))
    prepare_small(raw, tmp_path / "out")


@pytest.mark.parametrize("lesion, background", [(65535, 0), (255, 0), (1, 0)])
def test_16bit_binary_masks_read_as_0_255(raw, tmp_path, lesion, background):
    mask = np.asarray(Image.open(raw / "masks" / "case003.png"))
    wide = np.where(mask == 255, lesion, background).astype(np.uint16)
    Image.fromarray(wide).save(raw / "masks" / "case003.png")
    assert Image.open(raw / "masks" / "case003.png").mode.startswith("I")
    out = prepare_small(raw, tmp_path / "out")
    reference = prepare_small(make_folder(tmp_path / "raw2", 10), tmp_path / "ref")
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "case003.png")),
                          np.asarray(Image.open(reference / "masks" / "case003.png")))


def test_16bit_soft_mask_follows_the_8bit_rules(raw, tmp_path):
    """A soft 16-bit mask is soft: refused unless allowed, then lesion = at least half the range."""
    from ulvm.data.checks import read_mask

    mask = np.asarray(Image.open(raw / "masks" / "case004.png"))
    wide = np.where(mask == 255, 65535, 0).astype(np.uint16)
    wide[5, 5], wide[5, 6] = 40000, 20000
    Image.fromarray(wide).save(raw / "masks" / "case004.png")
    assert_fails_cleanly(raw, tmp_path / "out", r"case004.png: mask has values other than 0 and 255")
    read, notes = read_mask(raw / "masks" / "case004.png", (40, 30), allow_soft=True)
    assert read[5, 5] >= 128 > read[5, 6] and set(np.unique(read)) == {0, 78, 156, 255}
    assert "16-bit mask scaled to 8 bits by the full scale" in notes[0]


def test_empty_masks_and_small_images_are_listed_and_warned(tmp_path, caplog):
    raw = make_folder(tmp_path / "raw", 10, size=(64, 48))
    Image.new("L", (64, 48)).save(raw / "masks" / "case002.png")                  # all black: no lesion
    image, mask = (Image.open(raw / kind / "case006.png").resize((10, 10)) for kind in ("images", "masks"))
    image.save(raw / "images" / "case006.png")
    mask.point(lambda v: 255 if v >= 128 else 0).save(raw / "masks" / "case006.png")
    with caplog.at_level(logging.WARNING):
        out = prepare_small(raw, tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["empty_masks"] == ["case002"] and manifest["small_images"] == ["case006"]
    assert "1 empty masks (no lesion pixel): case002. Legitimate where a dataset has images without" in caplog.text
    assert "1 images smaller than 32x32 are upscaled: case006" in caplog.text
    assert manifest["samples"][2]["lesion_pixels"] == 0 and manifest["samples"][3]["lesion_pixels"] > 0


def test_min_size_refuses_small_images_naming_the_file(tmp_path, capsys):
    from ulvm.cli import main as cli_main

    raw = make_folder(tmp_path / "raw", 10, size=(64, 48))
    Image.open(raw / "images" / "case006.png").resize((40, 10)).save(raw / "images" / "case006.png")
    Image.new("L", (40, 10)).save(raw / "masks" / "case006.png")
    assert_fails_cleanly(raw, tmp_path / "out", r"case006.png: image is 40x10 pixels, its shorter side is "
                                                 r"below --min-size 32", min_size=32)
    out = tmp_path / "cli"
    args = ["prepare", "folder", "--src", str(raw), "--out", str(out), "--size", "32", "--counts", "6", "2", "2",
            "--folds", "0", "--workers", "1", "--min-size"]
    assert cli_main(args + ["11"]) == 2 and "case006.png: image is 40x10" in capsys.readouterr().err
    assert cli_main(args + ["10"]) == 0
    assert json.loads((out / "manifest.json").read_text())["command"].endswith("--min-size 10")
