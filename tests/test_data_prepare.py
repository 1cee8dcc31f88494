"""Preparation of every layout into the one prepared format; manifest reproducibility; loading."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_trees import make_folder, make_isic_tree
from PIL import Image

from ulvm.cli import main as cli_main
from ulvm.data import load_prepared, prepare
from ulvm.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_isic2017_tree_prepares_with_superpixels_ignored(tmp_path):
    src = make_isic_tree(tmp_path / "raw", 12, year=2017)
    out = prepare("isic2017", src, tmp_path / "prepared", size=64, counts=(8, 1, 3), folds=2, workers=1)
    data = load_prepared(out)
    assert len(data) == 12 and all(i.startswith("ISIC_") and "superpixels" not in i for i in data.ids)
    assert data.images.shape == (12, 64, 64, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (12, 64, 64) and data.masks.dtype == np.uint8
    assert [len(data.indices(s)) for s in ("train", "val", "test")] == [8, 1, 3]
    sizes = {tuple(s["source_size"]) for s in data.manifest["samples"]}
    assert len(sizes) == 5  # the varying source sizes are recorded
    # bilinear masks have soft edges, kept as they are (thresholded at use)
    assert len(np.unique(data.masks)) > 2 and data.masks.min() == 0 and data.masks.max() == 255


def test_isic_paper_counts_need_the_full_set(tmp_path):
    src = make_isic_tree(tmp_path / "raw", 5, year=2018)
    with pytest.raises(DataError, match=r"1815.*needs 2594 images, found 5"):
        prepare("isic2018", src, tmp_path / "out", size=32)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_isic2017_full_size_tree_gets_the_paper_split(tmp_path):
    src = make_isic_tree(tmp_path / "raw", 2000, year=2017)
    data = load_prepared(prepare("isic2017", src, tmp_path / "out", size=32, folds=0))
    assert {s: len(data.indices(s)) for s in data.split_names()} == {"train": 1250, "val": 150, "test": 600}


def test_manifest_is_byte_identical_and_complete(tmp_path):
    src = make_folder(tmp_path / "raw", 12, mask_suffix="_segmentation")
    out = tmp_path / "prepared"
    prepare("folder", src, out, size=32, counts=(8, 2, 2), folds=2, workers=1)
    first = (out / "manifest.json").read_bytes()
    prepare("folder", src, out, size=32, counts=(8, 2, 2), folds=2, workers=2, overwrite=True)
    assert (out / "manifest.json").read_bytes() == first  # same inputs + seed => same bytes
    manifest = json.loads(first)
    assert manifest["command"].startswith("ulvm prepare folder --src ")
    assert "--counts 8 2 2" in manifest["command"]
    sample = manifest["samples"][0]
    assert sample["image"] == "images/case000.png" and sample["mask"] == "masks/case000_segmentation.png"
    assert len(sample["image_sha256"]) == 64 and sample["source_size"] == [40, 30]
    prepare("folder", src, out, size=32, counts=(8, 2, 2), folds=2, seed=1, overwrite=True, workers=1)
    assert json.loads((out / "manifest.json").read_bytes())["split"] != manifest["split"]


def test_cli_prepare_records_its_command(tmp_path, capsys):
    src = make_folder(tmp_path / "raw", 10)
    out = tmp_path / "prepared"
    assert cli_main(["prepare", "folder", "--src", str(src), "--out", str(out), "--size", "32",
                     "--counts", "6", "2", "2", "--folds", "0", "--workers", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == (f"ulvm prepare folder --src {src} --out {out} --size 32 --seed 42 "
                                   f"--folds 0 --counts 6 2 2")
    assert "train 6, val 2, test 2" in capsys.readouterr().out
    # a second run refuses to overwrite, with a one-line error and exit status 2
    assert cli_main(["prepare", "folder", "--src", str(src), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_recorded_command_reproduces_the_preparation(tmp_path, capsys):
    """All images as test (PH2's default shape) and a non-default fold validation share survive the trip
    through the command line the manifest records."""
    import shlex

    src = make_folder(tmp_path / "raw", 12)
    first = tmp_path / "first"
    prepare("folder", src, first, size=32, counts={"test": 12}, folds=2, fold_val_fraction=0.25, workers=1)
    manifest = json.loads((first / "manifest.json").read_text())
    words = shlex.split(manifest["command"])
    assert words[:2] == ["ulvm", "prepare"] and "--fold-val-fraction" in words
    words[words.index("--out") + 1] = str(tmp_path / "again")
    assert cli_main(words[1:] + ["--workers", "1"]) == 0
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["split"] == manifest["split"] and again["folds"] == manifest["folds"]


def test_all_test_needs_no_counts_skips_folds_and_reproduces(tmp_path, capsys, caplog):
    """An external test set (e.g. PH2): --all-test instead of exact `--counts 0 0 N`; no folds, no fold
    warning; the recorded command re-runs to the same manifest."""
    import logging
    import shlex

    src = make_folder(tmp_path / "raw", 12)
    first = tmp_path / "first"
    with caplog.at_level(logging.WARNING):
        assert cli_main(["prepare", "folder", "--src", str(src), "--out", str(first), "--size", "32",
                         "--all-test", "--workers", "1"]) == 0
    assert "folds" not in caplog.text
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["split"] == {"counts": {"test": 12}, "test": [f"case{i:03d}" for i in range(12)]}
    assert manifest["folds"] == [] and manifest["fold_val_fraction"] is None
    assert manifest["notes"] == ["every image in the test split (--all-test): no folds"]
    assert manifest["command"] == f"ulvm prepare folder --src {src} --out {first} --size 32 --seed 42 --all-test"
    assert "test 12; 0 folds" in capsys.readouterr().out
    words = shlex.split(manifest["command"])
    words[words.index("--out") + 1] = str(tmp_path / "again")
    assert cli_main(words[1:] + ["--workers", "2"]) == 0
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert {**again, "command": None} == {**manifest, "command": None}
    refused = ["prepare", "folder", "--src", str(src), "--out", str(tmp_path / "x"), "--all-test"]
    with pytest.raises(SystemExit):  # argparse: --counts and --all-test exclude each other
        cli_main(refused + ["--counts", "0", "0", "12"])
    assert "argument --counts: not allowed with argument --all-test" in capsys.readouterr().err
    assert cli_main(refused + ["--folds", "3"]) == 2
    assert "--all-test) puts every image in the test split, with no folds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_folds_and_paper_split_views(tmp_path):
    src = make_folder(tmp_path / "raw", 20)
    data = load_prepared(prepare("folder", src, tmp_path / "p", size=32, folds=4, workers=1))
    assert data.split_names() == ["train", "val", "test"] and data.folds == 4
    for k in range(4):
        rows = [data.indices(s, fold=k) for s in data.split_names(fold=k)]
        assert sorted(np.concatenate(rows).tolist()) == list(range(20))
    with pytest.raises(DataError, match="no fold 4"):
        data.indices("train", fold=4)
    assert data.diagnosis is None
    assert len(data.manifest_hash) == 64 and len(data.content_hash) == 64


def test_load_prepared_errors(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}.*not a prepared dataset"):
        load_prepared(tmp_path)
    src = make_folder(tmp_path / "raw", 10)
    out = prepare("folder", src, tmp_path / "p", size=32, folds=0, workers=1)
    image = out / "images" / "case003.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(image)
    with pytest.raises(DataError, match="case003.png: pixels differ"):
        load_prepared(out)
    Image.new("L", (16, 16)).save(out / "masks" / "case005.png")
    with pytest.raises(DataError, match=r"masks/case005.png: prepared file is 16x16, the manifest says 32x32"):
        load_prepared(out, verify=False)


def test_ph2_official_layout_sample(realdata, tmp_path):
    src = realdata / "PH2_original_layout_sample"
    data = load_prepared(prepare("ph2", src, tmp_path / "ph2", workers=1))
    assert data.ids == ["IMD002", "IMD155", "IMD437"]
    assert data.split_names() == ["test"] and data.folds == 0  # too few for folds: noted, not an error
    assert data.manifest["notes"]
    assert data.diagnosis == ["atypical nevus"] * 3  # PH2_dataset.txt: clinical diagnosis 1 for all three
    # 1-bit and 24-bit BMP masks read alike: lesion = 255
    assert all(m.max() == 255 and m.min() == 0 for m in data.masks)


def test_ph2_flat_folder_matches_official_layout(realdata, tmp_path):
    """The flat PNG copy (masks named *_lesion) and the official BMP layout give the same pixels."""
    subset = tmp_path / "flat"
    (subset / "images").mkdir(parents=True)
    (subset / "masks").mkdir()
    for key in ("IMD002", "IMD155", "IMD437"):
        shutil.copy(realdata / "PH2" / "images" / f"{key}.png", subset / "images")
        shutil.copy(realdata / "PH2" / "masks" / f"{key}_lesion.png", subset / "masks")
    shutil.copy(realdata / "PH2" / "PH2_dataset.txt", subset)
    flat = load_prepared(prepare("folder", subset, tmp_path / "flat_p", counts=(1, 1, 1), folds=0, workers=1))
    official = load_prepared(prepare("ph2", realdata / "PH2_original_layout_sample", tmp_path / "off_p",
                                     workers=1))
    assert flat.ids == official.ids
    assert np.array_equal(flat.images, official.images) and np.array_equal(flat.masks, official.masks)
    assert flat.diagnosis == official.diagnosis


def test_prepare_help_explains_every_argument(capsys, monkeypatch):
    import argparse

    from ulvm.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    prepare_parser = subcommands.choices["prepare"]
    for action in prepare_parser._actions:
        assert action.help and len(action.help) > 15, f"{action.option_strings or action.dest}: no help text"
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside the phrases looked for
    with pytest.raises(SystemExit):
        cli_main(["prepare", "--help"])
    text = capsys.readouterr().out
    for words in ("KIND", "--all-test", "--min-size PIXELS", "a multiple of 32", "refused, never deleted",
                  "examples:", "Empty masks"):
        assert words in text


def test_the_content_hash_covers_the_folds_and_a_split_hash_compares_the_test_split_alone(tmp_path):
    src = make_folder(tmp_path / "raw", 12)
    with_folds = load_prepared(prepare("folder", src, tmp_path / "folds", counts={"test": 12}, folds=2, workers=1))
    all_test = load_prepared(prepare("folder", src, tmp_path / "all", all_test=True, workers=1))
    assert with_folds.folds == 2 and all_test.folds == 0
    assert with_folds.content_hash != all_test.content_hash                  # the same pixels, other folds
    assert with_folds.split_sha256("test") == all_test.split_sha256("test")
    assert with_folds.content_scheme == all_test.content_scheme == 1 == all_test.manifest["content_scheme"]
    assert with_folds.split_sha256("test", fold=0) != with_folds.split_sha256("test")


def _recorded_content_hash(*folders: str) -> str:
    """The one data content hash of the book's committed records in `folders` (book/results/...)."""
    hashes = {json.loads(path.read_text())["data"]["content_hash"]
              for folder in folders for path in (REPO / "book" / "results" / folder).glob("*.json")}
    assert len(hashes) == 1, f"{folders}: records disagree on their data: {hashes}"
    return hashes.pop()


@pytest.mark.slow
def test_the_shared_datasets_prepare_to_the_data_the_books_records_name(realdata, tmp_path):
    """A change of `ulvm prepare` that silently changes what the shared datasets prepare to fails here: a
    reader's fresh preparation must compare with the book's records. PH2 as the book prepares it (all test, 5
    folds; `ulvm prepare ph2`, as `ulvm reproduce --profile paper`) and ISIC2017 (1250/150/600, seed 42)."""
    ph2 = load_prepared(prepare("ph2", realdata / "PH2", tmp_path / "ph2", workers=2), verify=False)
    assert ph2.content_hash == _recorded_content_hash("isic2017/test_ph2", "baselines/test_ph2",
                                                      "ph2_transfer/test_ph2")
    # the same images as an external test set with no folds: another content hash, the same test split
    flat = load_prepared(prepare("folder", realdata / "PH2", tmp_path / "ph2_all", all_test=True, workers=2),
                         verify=False)
    assert flat.content_hash != ph2.content_hash and flat.split_sha256("test") == ph2.split_sha256("test")
    if not (realdata / "ISIC2017").is_dir():
        pytest.skip(f"no ISIC2017 in {realdata}")
    isic = load_prepared(prepare("isic2017", realdata / "ISIC2017", tmp_path / "isic2017", workers=2), verify=False)
    assert isic.content_hash == _recorded_content_hash("isic2017/test_isic2017", "baselines/test_isic2017",
                                                       "ph2_transfer/test_isic2017")


def test_official_split_on_a_synthetic_isic_folder(tmp_path, capsys):
    src = make_isic_tree(tmp_path / "raw", 12, year=2017)
    out = tmp_path / "prepared"
    assert cli_main(["prepare", "isic2017", "--src", str(src), "--out", str(out), "--size", "32",
                 "--counts", "6", "2", "4", "--split", "official", "--folds", "0", "--workers", "1"]) == 0
    assert "official, contiguous" in capsys.readouterr().out
    data = load_prepared(out)
    ids = sorted(data.ids)
    assert [data.ids[i] for i in data.indices("train")] == ids[:6]
    assert [data.ids[i] for i in data.indices("val")] == ids[6:8]
    assert [data.ids[i] for i in data.indices("test")] == ids[8:]
    assert "--split official" in data.manifest["command"]
    with pytest.raises(DataError, match="unknown split method 'random'"):
        prepare("isic2017", src, tmp_path / "other", size=32, split_method="random")


def test_ids_that_differ_only_in_letter_case_are_refused(tmp_path):
    """`images/Lesion.png` and `images/lesion.png` are one file on macOS and Windows disks (issue 30)."""
    from PIL import Image

    from ulvm.data.layouts import folder_samples

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        for name in ("Lesion", "lesion"):
            Image.new("L" if folder == "masks" else "RGB", (8, 8)).save(tmp_path / folder / f"{name}.png")
    with pytest.raises(DataError, match="ids must differ in more than letter case"):
        folder_samples(tmp_path)
