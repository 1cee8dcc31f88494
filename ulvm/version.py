"""Which code produced a number: the provenance every result record carries.

`code_version()` answers, in this order:

1. inside a git checkout: `git describe --always --dirty` (a tree with uncommitted changes ends in
   "-dirty");
2. elsewhere (a copy without `.git`, e.g. the tree sent to a GPU machine, or an installed package): the
   stamp `ulvm/VERSION.json` that `ulvm version --write` wrote from the checkout. The stamp holds the
   commit and a hash of the package's source files; if the sources no longer match that hash, the copy
   was edited after stamping and the version ends in "-dirty";
3. otherwise "unknown".

`require_clean(version)` is what record writers call: a record of a dirty or unknown tree is refused
unless the caller explicitly allows it (and then says so in the record).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .errors import RunError

PACKAGE = Path(__file__).resolve().parent
STAMP = PACKAGE / "VERSION.json"
UNKNOWN = "unknown"


def source_hash(package: Path = PACKAGE) -> str:
    """SHA-256 over the package's Python sources (relative path + bytes, sorted): what the code is."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_describe(root: Path = PACKAGE.parent) -> str | None:
    """`git describe --always --dirty` of the checkout holding the package, or None outside one."""
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def read_stamp(stamp: Path = STAMP) -> str | None:
    """The stamped commit, with "-dirty" if the sources changed since; None without a stamp."""
    if not stamp.exists():
        return None
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        version, expected = recorded["version"], recorded["source_hash"]
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{stamp}: not a version stamp written by `ulvm version --write` ({error})") from error
    if source_hash(stamp.parent) != expected and not version.endswith("-dirty"):
        return version + "-dirty"
    return version


def code_version() -> str:
    return git_describe() or read_stamp() or UNKNOWN


def write_stamp(stamp: Path = STAMP) -> dict:
    """Record this checkout's commit and source hash in `stamp`, for copies that travel without `.git`."""
    from .io import atomic_write_json

    version = git_describe()
    if version is None:
        raise RunError(f"{PACKAGE.parent}: not a git checkout, so there is no commit to stamp")
    stamp_record = {"version": version, "source_hash": source_hash(stamp.parent)}
    atomic_write_json(stamp, stamp_record)
    return stamp_record


def utc_now() -> str:
    """The time a record is written, in UTC (ISO 8601, to the second)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_clean(version: str) -> bool:
    return version != UNKNOWN and not version.endswith("-dirty")


def require_clean(version: str, allow_dirty: bool, what: str) -> None:
    """Refuse to record `what` from a dirty or unknown tree unless `allow_dirty` was asked for."""
    if not allow_dirty and not is_clean(version):
        raise RunError(f"{what}: produced by code version {version!r}, not a clean commit; commit first "
                       "(or stamp the copy with `ulvm version --write`), or pass --allow-dirty to record "
                       "it anyway (the record then says so)")
