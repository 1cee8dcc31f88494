"""Which .pt2 packages may be loaded: a package is compiled code, and loading it runs that code.

A `.pt2` package (`ulvm export --format pt2`) holds a shared library that AOTInductor loads and calls: a
package from someone else can do anything the user can. Unlike a checkpoint (read with
`torch.load(..., weights_only=True)`, which runs nothing), it is only loaded when it is trusted:

* `ulvm export --format pt2` records the SHA-256 of each package it writes in a per-user trust list,
  `$XDG_CACHE_HOME/ulvm/trusted_packages.json` (default `~/.cache/...`; `ULVM_TRUSTED_PACKAGES` names
  another file), so a package built on this machine by this user loads as before;
* any other package is refused, naming the file, unless the caller says it trusts it (`--trust-package`,
  `trust=True`), which also records its digest.

A package changed after it was recorded (its `.so` swapped) has another digest and is refused again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UlvmError
from ..io import atomic_write_json, exclusive

ENV_FILE = "ULVM_TRUSTED_PACKAGES"


def trust_file() -> Path:
    """The per-user trust list: `$ULVM_TRUSTED_PACKAGES`, else `$XDG_CACHE_HOME/ulvm/trusted_packages.json`."""
    if os.environ.get(ENV_FILE):
        return Path(os.environ[ENV_FILE])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ulvm" / "trusted_packages.json"


def package_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _trusted() -> dict[str, str]:
    """digest -> the path it was recorded for (the list's own path is in messages, never its content)."""
    try:
        listed = json.loads(trust_file().read_text(encoding="utf-8"))["packages"]
        return {str(k): str(v) for k, v in listed.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def record_trusted(path: str | os.PathLike) -> str:
    """Add a package's digest to the trust list (atomically, one writer at a time); returns the digest."""
    digest = package_digest(path)
    target = trust_file()
    with exclusive(target.with_name(target.name + ".lock")):
        packages = _trusted()
        packages[digest] = str(Path(path).resolve())
        atomic_write_json(target, {"what": "SHA-256 of .pt2 packages this user built or trusts: ulvm loads "
                                           "only these (a package is code)", "packages": packages})
    return digest


def check_trusted(path: str | os.PathLike, trust: bool = False) -> None:
    """Refuse, naming the file, a package that is not in the trust list, unless `trust` (then recorded)."""
    if trust:
        record_trusted(path)
        return
    if package_digest(path) not in _trusted():
        raise UlvmError(f"{path}: not loaded: a .pt2 package is compiled code that runs when it is loaded, and this "
                        f"one was not built by `ulvm export` for this user (its SHA-256 is not in {trust_file()}). "
                        "If you trust whoever made it, pass --trust-package (trust=True in Python)")
