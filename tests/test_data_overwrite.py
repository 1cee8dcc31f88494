"""`ulvm prepare --overwrite` replaces a prepared dataset made by ulvm, and nothing else (issue 13)."""
import json

import pytest
from data_trees import make_folder

from ulvm.cli import main as cli_main
from ulvm.data import load_prepared, prepare
from ulvm.errors import DataError


def prepare_small(src, out, **kwargs):
    return prepare("folder", src, out, size=32, counts=(6, 2, 2), folds=0, workers=1, **kwargs)


def test_overwrite_replaces_a_prepared_dataset(tmp_path):
    src = make_folder(tmp_path / "raw", 10)
    out = prepare_small(src, tmp_path / "out")
    prepare_small(src, out, overwrite=True, seed=1)
    assert load_prepared(out).manifest["seed"] == 1


def test_overwrite_refuses_a_folder_of_the_users_own_files(tmp_path):
    src = make_folder(tmp_path / "raw", 10)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work")
    with pytest.raises(DataError, match=rf"{mine}: not replaced: it is not a prepared dataset"):
        prepare_small(src, mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "raw"]  # no temp folder left


def test_overwrite_refuses_a_prepared_dataset_holding_other_files(tmp_path):
    src = make_folder(tmp_path / "raw", 10)
    out = prepare_small(src, tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not replaced"):
        prepare_small(src, out, overwrite=True)
    (out / "notes.txt").unlink()
    (out / "images" / "extra.png").write_bytes(b"mine")
    with pytest.raises(DataError, match="not replaced"):
        prepare_small(src, out, overwrite=True)
    assert (out / "images" / "extra.png").read_bytes() == b"mine"


def test_overwrite_refuses_a_foreign_manifest_and_a_file(tmp_path):
    src = make_folder(tmp_path / "raw", 10)
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "someone-else", "ids": []}))
    with pytest.raises(DataError, match="not replaced"):
        prepare_small(src, other, overwrite=True)
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(DataError, match="not replaced"):
        prepare_small(src, a_file, overwrite=True)
    assert (other / "manifest.json").is_file() and a_file.read_text() == "mine"


def test_overwrite_accepts_an_older_prepared_dataset_without_the_marker(tmp_path):
    """Datasets prepared before ulvm.io added its folder marker are recognised by their manifest."""
    src = make_folder(tmp_path / "raw", 10)
    out = prepare_small(src, tmp_path / "out")
    (out / ".ulvm-folder.json").unlink()
    prepare_small(src, out, overwrite=True, seed=3)
    assert load_prepared(out).manifest["seed"] == 3


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_out_overlapping_src_is_refused_naming_both(tmp_path, capsys, where):
    src = make_folder(tmp_path / "raw", 10)
    out = {"same": src, "inside": src / "prepared", "parent": tmp_path}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for overwrite in ([], ["--overwrite"]):
        assert cli_main(["prepare", "folder", "--src", str(src), "--out", str(out), "--size", "32",
                         "--counts", "6", "2", "2", "--folds", "0", "--workers", "1", *overwrite]) == 2
        message = capsys.readouterr().err
        assert f"--out {out}" in message and f"--src {src}" in message
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # the raw data is intact


def test_out_overlap_is_found_through_relative_paths_and_links(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "raw", 10)
    (tmp_path / "link").symlink_to(src)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="--out link is --src raw"):
        prepare("folder", "raw", "link", overwrite=True)
    assert len(list((src / "images").iterdir())) == 10
