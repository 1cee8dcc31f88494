"""Atomic writes: a reader, or a run killed mid-write, never sees half a file or half a folder.

Every file the package writes goes through here: write to a temporary name in the same folder, flush to
disk, then `os.replace` (atomic on POSIX). Folders are built under a temporary name and renamed at the end.

Replacing a folder deletes the old one, so it is only ever done to a folder ulvm made: every folder built
by `atomic_directory` carries a small marker (`.ulvm-folder.json`) listing what ulvm put in it, and an
existing folder is replaced only if it holds nothing else (or the caller recognises its own format, or
it is empty). A user's folder given by mistake is refused, never deleted.

A temporary folder is named `.NAME.HOST.PID.XXXXXXXX.tmp` (`.old` for the one being replaced), so that
a run killed midway (SIGKILL, power cut) leaves a folder the next run for the same target can recognise
and remove: only one of ulvm's own names for that target, on this host, whose process is gone.

Files and folders get the permissions the umask asks for (0o666 / 0o777 less the umask), as with
`open()` and `mkdir`: `tempfile` creates them private (0600 / 0700), which a lab's shared data and runs
cannot be read through.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UlvmError

OWNER_MARKER = ".ulvm-folder.json"
# The host name as it may appear in a file name (it tells folders of other machines sharing a disk apart).
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"

log = logging.getLogger(__name__)

_umask_lock = threading.Lock()
_umask_cached: int | None = None


def _umask_from_proc() -> int | None:
    """The umask as Linux reports it (since 4.7), read without changing it; None where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def current_umask() -> int:
    """The process's umask.

    Elsewhere than Linux it can only be read by setting it, which is process-wide: that is done once,
    under a lock, and cached, and the value set meanwhile is 0o077, so a file another thread creates in
    that instant is private rather than open to all.
    """
    global _umask_cached
    umask = _umask_from_proc()
    if umask is not None:
        return umask
    with _umask_lock:
        if _umask_cached is None:
            _umask_cached = os.umask(0o077)
            os.umask(_umask_cached)
        return _umask_cached


def _usual_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a file (folder) made by `tempfile` the mode `open()` (`mkdir`) would have given it."""
    try:
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
    except PermissionError:  # a file system without Unix permissions (FAT, some network shares)
        pass


class NotReplaceable(UlvmError):
    """An existing folder that ulvm did not make (or that holds files ulvm did not put there)."""


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer (ours or a library's) to fill; when the block
    succeeds it becomes `path` with the umask's mode, atomically; when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _usual_mode(tmp)  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def writable_folder(folder: str | os.PathLike) -> Path:
    """`folder`, created if missing and checked writable (a file is made in it and removed), before any work
    is done: a `UlvmError` naming it when it is a file, or cannot be written (no permission, read-only disk)."""
    folder = Path(folder)
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        raise UlvmError(f"{folder}: exists and is not a folder; give a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ulvm-write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UlvmError(f"{folder}: cannot write here ({error.strerror or error})") from None
    return folder


def writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """`path` checked before any work to be a file name that can be written: not a folder, in a folder
    that can be written (created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise UlvmError(f"{path}: is a folder; give a file name for the {what}")
    writable_folder(path.parent)
    return path


def json_dumps(obj: Any) -> str:
    """The one JSON style of the project: sorted keys, 2-space indent, final newline (byte-stable)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json_dumps(obj))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _tree(root: Path) -> set[str]:
    """Every file and folder below `root`, as relative POSIX paths (folders end with '/')."""
    found = set()
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        found.update(f"{(base / d).as_posix()}/" for d in dirs)
        found.update((base / f).as_posix() for f in files)
    return found


def made_by_ulvm(folder: str | os.PathLike) -> bool:
    """True if `folder` was built by `atomic_directory` and holds only what ulvm put in it."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / OWNER_MARKER).read_text(encoding="utf-8"))["paths"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(recorded, list) and _tree(folder) - {OWNER_MARKER} <= set(recorded)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent: int, poll: bool = False) -> None:
    """Make this process end when process `parent` ends, however it ends (SIGKILL and OOM kills too).

    For a child that its parent cannot stop when the parent is killed: a pool worker of `ulvm prepare`, a
    `ulvm train` of `ulvm sweep` (call it in the child: a pool initializer, or `preexec_fn`). On Linux the
    kernel signals the child when its parent dies (PR_SET_PDEATHSIG; it survives `exec`). Elsewhere, or
    with `poll` (for a process already running, e.g. a Dask worker, whose parent may be an ancestor), a
    thread checks twice a second (not across an `exec`: the new program does not keep the thread).
    """
    if sys.platform.startswith("linux") and not poll:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if not pid_alive(parent):  # it died before prctl took effect
            os._exit(1)
        return

    def watch():
        while pid_alive(parent):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.{HOST}.{os.getpid()}."


def remove_stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders a killed run left beside `final`; return those removed.

    Only names `atomic_directory` gives for this very target on this host, and only if the process named
    in them is gone (a live one, or one of another host, may still be writing). Temporary folders of
    older ulvm versions carry no process id: they are left, with a warning.
    """
    final = Path(final)
    ours = re.compile(rf"\.{re.escape(final.name)}\.{re.escape(HOST)}\.(\d+)\.[a-z0-9_]+\.(tmp|old)")
    older = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.tmp")
    removed = []
    if not final.parent.is_dir():
        return removed
    for entry in final.parent.iterdir():
        match = ours.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by a killed run (process %s is gone)", entry, match[1])
            removed.append(entry)
        elif older.fullmatch(entry.name) and entry.is_dir():
            log.warning("%s: perhaps left by a killed run of an older ulvm; remove it by hand if no ulvm is "
                        "writing %s", entry, final)
    return removed


def check_replaceable(final: str | os.PathLike, replaceable: Callable[[Path], bool] | None = None) -> None:
    """Raise `NotReplaceable` unless the existing `final` may be deleted and replaced.

    Replaceable: an empty folder; with `replaceable` given, a folder it accepts (the caller knows its
    own format, e.g. a prepared dataset's manifest); otherwise a folder `made_by_ulvm`. Never a file or
    a symbolic link.
    """
    final = Path(final)
    if final.is_symlink() or not final.is_dir():
        kind = "a symbolic link" if final.is_symlink() else "not a folder"
        raise NotReplaceable(f"{final}: not replaced: it is {kind}")
    if not any(final.iterdir()):
        return
    ours = replaceable(final) if replaceable is not None else made_by_ulvm(final)
    if not ours:
        raise NotReplaceable(f"{final}: not replaced: ulvm did not make this folder (or it holds files ulvm "
                             f"did not write); move it away or choose another folder")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False,
                     replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; rename it to `final` only if the block succeeds.

    On any error (or Ctrl-C) the temporary folder is removed and `final` is left as it was. An existing
    `final` is an error, or with `overwrite` is replaced, but only if `check_replaceable(final,
    replaceable)` allows it (checked before and again after the block: nothing ulvm did not make is
    ever deleted). The new folder gets a marker listing its contents, so a later run may replace it.
    """
    final = Path(final)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")
        check_replaceable(final, replaceable)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    try:
        _usual_mode(tmp, folder=True)  # mkdtemp made it 0700
        yield tmp
        atomic_write_json(tmp / OWNER_MARKER, {"made_by": "ulvm", "paths": sorted(_tree(tmp))})
        if final.exists() or final.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")
            check_replaceable(final, replaceable)  # again: it may have changed while the block ran
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".old", dir=final.parent))
            os.replace(final, old)  # onto the fresh empty folder: never onto a name someone else owns
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def foreign_entries(folder: str | os.PathLike, ours: Callable[[Path], bool]) -> list[str]:
    """The names of the entries of `folder` that `ours(entry)` does not recognise as written by ulvm
    (sorted; folders end with '/'). What a command that writes into an existing folder checks first:
    `ulvm prepare --overwrite` (a prepared dataset) and `ulvm train --out` (a run folder) refuse a folder
    holding anything else, so that no file of the user's is replaced or deleted."""
    return sorted(entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else "")
                  for entry in Path(folder).iterdir() if not ours(entry))


class LockHeld(UlvmError):
    """Another process holds the lock (`exclusive(..., wait=False)`)."""


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """One process at a time inside the block (an advisory `flock` on `lock_path`).

    `wait=True`: others wait their turn. `wait=False`: another process inside the block is an error,
    `LockHeld`, naming the lock file and the holder's process id (the holder writes it into the file).
    The kernel releases the lock when the holder exits, however it exits (SIGKILL too), so a stale lock
    file never blocks anyone. Where there is no `fcntl` (Windows) the block runs unguarded.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LockHeld(f"{lock_path}: held by process {holder}") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} on {HOST}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
