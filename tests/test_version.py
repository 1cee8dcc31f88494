"""Provenance: which code produced a record, in a checkout and in a copy without .git."""
import json
import shutil
import subprocess

import pytest

from ulvm import version
from ulvm.errors import RunError


def test_a_copy_without_git_reads_its_stamp_and_notices_edits(tmp_path, monkeypatch):
    package = tmp_path / "ulvm"
    shutil.copytree(version.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "VERSION.json"))
    stamp = package / "VERSION.json"
    assert version.read_stamp(stamp) is None                             # no stamp: nothing to say
    stamp.write_text(json.dumps({"version": "abc1234", "source_hash": version.source_hash(package)}))
    assert version.read_stamp(stamp) == "abc1234"
    (package / "engine" / "train.py").write_text((package / "engine" / "train.py").read_text() + "\n# edited\n")
    assert version.read_stamp(stamp) == "abc1234-dirty"
    stamp.write_text("{}")
    with pytest.raises(RunError, match="VERSION.json: not a version stamp"):
        version.read_stamp(stamp)


def test_code_version_prefers_git_then_the_stamp_then_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(version, "git_describe", lambda: None)
    monkeypatch.setattr(version, "STAMP", tmp_path / "VERSION.json")
    assert version.code_version() == "unknown"
    (tmp_path / "VERSION.json").write_text(json.dumps({"version": "abc1234", "source_hash": "0"}))
    monkeypatch.setattr(version, "read_stamp", lambda: "abc1234")
    assert version.code_version() == "abc1234"
    monkeypatch.setattr(version, "git_describe", lambda: "def5678-dirty")
    assert version.code_version() == "def5678-dirty"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_describe_of_a_checkout(tmp_path):
    (tmp_path / "f").write_text("x")
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "f")
    clean = version.git_describe(tmp_path)
    assert clean and version.is_clean(clean)
    (tmp_path / "f").write_text("y")
    assert version.git_describe(tmp_path) == clean + "-dirty"
    assert version.git_describe(tmp_path / "nowhere") is None


def test_require_clean():
    version.require_clean("abc1234", False, "x")
    version.require_clean("unknown", True, "x")
    with pytest.raises(RunError, match="x: produced by code version 'unknown'"):
        version.require_clean("unknown", False, "x")
