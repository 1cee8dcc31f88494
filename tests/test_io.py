"""ulvm.io: atomic files and folders; a folder ulvm did not make is never deleted."""
import os
import stat

import pytest

from ulvm.io import NotReplaceable, atomic_directory, atomic_write_text, made_by_ulvm


def build(final, text="x", **kwargs):
    with atomic_directory(final, **kwargs) as tmp:
        atomic_write_text(tmp / "sub" / "file.txt", text)
    return final


def test_atomic_directory_replaces_its_own_folder(tmp_path):
    final = build(tmp_path / "out")
    assert made_by_ulvm(final)
    build(final, "y", overwrite=True)
    assert (final / "sub" / "file.txt").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or .old folder left


def test_atomic_directory_never_deletes_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("precious")
    with pytest.raises(NotReplaceable, match=rf"{mine}: not replaced: ulvm did not make this folder"):
        build(mine, overwrite=True)
    assert (mine / "data.csv").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_atomic_directory_keeps_files_added_to_its_folder(tmp_path):
    final = build(tmp_path / "out")
    (final / "sub" / "added_by_me.txt").write_text("mine")
    assert not made_by_ulvm(final)
    with pytest.raises(NotReplaceable):
        build(final, overwrite=True)
    assert (final / "sub" / "added_by_me.txt").read_text() == "mine"


def test_atomic_directory_replaces_an_empty_folder_and_asks_the_caller(tmp_path):
    (tmp_path / "empty").mkdir()
    build(tmp_path / "empty", overwrite=True)
    (tmp_path / "known").mkdir()
    (tmp_path / "known" / "format.txt").write_text("mine")
    with pytest.raises(NotReplaceable):
        build(tmp_path / "known", overwrite=True, replaceable=lambda p: False)
    build(tmp_path / "known", overwrite=True, replaceable=lambda p: (p / "format.txt").is_file())
    assert not (tmp_path / "known" / "format.txt").exists()


def test_atomic_directory_refuses_links_and_files(tmp_path):
    target = build(tmp_path / "target")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(NotReplaceable, match="symbolic link"):
        build(tmp_path / "link", overwrite=True)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NotReplaceable, match="not a folder"):
        build(tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "mine" and (tmp_path / "link").is_symlink()


def test_a_folder_that_appears_while_building_is_not_deleted(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(NotReplaceable):
        with atomic_directory(final, overwrite=True) as tmp:
            atomic_write_text(tmp / "a.txt", "ours")
            final.mkdir()
            (final / "b.txt").write_text("someone else's, written meanwhile")
    assert (final / "b.txt").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.fixture(params=[0o022, 0o007])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_files_and_folders_follow_the_umask(tmp_path, umask):
    final = build(tmp_path / "out")
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((final / "sub").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((final / "sub" / "file.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(atomic_write_text(tmp_path / "alone.txt", "x").stat().st_mode) == 0o666 & ~umask


def test_umask_without_proc_is_read_once_and_restored(monkeypatch, umask):
    from ulvm import io

    monkeypatch.setattr(io, "_umask_from_proc", lambda: None)
    monkeypatch.setattr(io, "_umask_cached", None)
    assert io.current_umask() == umask and os.umask(umask) == umask  # read, and left as it was
    os.umask(0o077)
    assert io.current_umask() == umask  # cached: the process-wide setting is not touched again
    os.umask(umask)


def test_prepared_dataset_is_readable_by_the_group(tmp_path, umask):
    from data_trees import make_folder

    from ulvm.data import prepare

    out = prepare("folder", make_folder(tmp_path / "raw", 10), tmp_path / "out", size=32, folds=0, workers=2)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")] if p.is_file()}
    assert modes == {0o666 & ~umask}
    assert {stat.S_IMODE(p.stat().st_mode) for p in [out, out / "images", out / "masks"]} == {0o777 & ~umask}


def test_writes_succeed_where_permissions_cannot_be_set(tmp_path, monkeypatch):
    """FAT disks and some network shares refuse chmod: the file is still written."""
    from ulvm import io

    def refuse(*args, **kwargs):
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(io.os, "chmod", refuse)
    assert atomic_write_text(tmp_path / "a.txt", "x").read_text() == "x"
    assert (build(tmp_path / "out") / "sub" / "file.txt").read_text() == "x"


def test_an_output_place_that_cannot_be_written_is_one_error_before_any_work(tmp_path, monkeypatch):
    import errno
    import tempfile

    from ulvm.errors import UlvmError
    from ulvm.io import writable_file, writable_folder

    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(UlvmError, match="a_file: exists and is not a folder"):
        writable_folder(tmp_path / "a_file")
    with pytest.raises(UlvmError, match="is a folder; give a file name for the --report"):
        writable_file(tmp_path, "--report")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UlvmError, match=r"out: cannot write here \(Read-only file system\)"):
        writable_folder(tmp_path / "out")
