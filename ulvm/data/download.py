"""Downloading and safely extracting the official datasets (`ulvm download isic2017|isic2018|ph2`).

The paper (§4.1) uses the ISIC 2017 and ISIC 2018 challenge training sets, which the ISIC archive serves
as zip files, and PH2, which its authors distribute by hand. What this module guarantees:
- streaming with a progress bar into `<file>.part`; an interrupted download RESUMES where it stopped
  (HTTP `Range` request; a server that ignores ranges restarts it from zero);
- the size is checked against the server's; the MD5 against the official one (ISIC publishes them), for
  a fresh download and for an archive found in `downloads/` alike (a wrong one is moved aside, never
  deleted); the SHA-256 and MD5 of what was received are recorded in `raw/<name>/download.json`;
- after extraction the folder must hold the dataset's layout (ISIC or PH2 image and mask pairs), or
  nothing is kept;
- extraction refuses members with absolute paths, `..` components (zip-slip), links and devices, and
  builds the folder under a temporary name: an interrupted extraction leaves nothing half-written;
- idempotent: a second call finds `download.json` and does nothing.
Only the standard library speaks HTTP. Layout under `--root` (default `data/`): `downloads/<file>.zip`,
`raw/<name>/...`. The book's data chapter (`notebooks/04_data.ipynb`) lists the commands.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..io import atomic_directory, atomic_write_json
from ..progress import progress_bar
from .layouts import isic_samples, ph2_samples

log = logging.getLogger(__name__)

ISIC_BASE_URL = "https://isic-challenge-data.s3.amazonaws.com"
PH2_HOME = "https://www.fc.up.pt/addi/ph2%20database.html"
MARKER = "download.json"
# What reading a damaged (truncated or corrupted) zip or tar archive raises.
DAMAGED_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, gzip.BadGzipFile, lzma.LZMAError,
                          EOFError)


@dataclass(frozen=True)
class RemoteFile:
    """One archive of a dataset: its path below the base URL; size, SHA-256 and MD5 where known."""
    path: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


# The official training archives the paper uses (images and ground-truth masks), with the MD5s the ISIC
# challenge publishes for them: an archive (downloaded, from a mirror, or found in downloads/) is used only
# if its MD5 is the official one. The SHA-256 of what arrived is recorded too.
ARCHIVES = {
    "isic2017": (RemoteFile("2017/ISIC-2017_Training_Data.zip", md5="a14a7e622c67a358797ae59abb8a0b0c"),
                 RemoteFile("2017/ISIC-2017_Training_Part1_GroundTruth.zip", md5="77fdbeb6fbec4139937224416b250f4c")),
    "isic2018": (RemoteFile("2018/ISIC2018_Task1-2_Training_Input.zip", md5="8b5be801f37b58ccf533df2928a5906b"),
                 RemoteFile("2018/ISIC2018_Task1_Training_GroundTruth.zip", md5="ee5e5db7771d48fa2613abc7cb5c24e2")),
}

PH2_INSTRUCTIONS = f"""PH2 cannot be downloaded automatically: its authors (Universidade do Porto, ADDI project)
distribute it by hand for research use. To use it:
  1. request and download the archive (PH2Dataset.rar) from {PH2_HOME}
  2. extract it (e.g. `unrar x PH2Dataset.rar` or `7z x PH2Dataset.rar`; .zip and .tar archives are
     also accepted directly);
  3. run `ulvm download ph2 --from PATH` with the extracted folder (or a .zip/.tar archive), then
     `ulvm prepare ph2 --src PATH --out data/prepared/ph2`."""


def _content_range_total(header: str | None, offset: int, url: str) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (header or "").strip())
    if not match or int(match.group(1)) != offset:
        raise DataError(f"{url}: server answered a range request with Content-Range {header!r} "
                        f"(expected bytes {offset}-...)")
    return None if match.group(3) == "*" else int(match.group(3))


def file_digests(path: Path) -> dict[str, str]:
    """{"sha256", "md5"} of a file, read once."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def fetch(url: str, dest: str | os.PathLike, *, expected_size: int | None = None,
          expected_sha256: str | None = None, expected_md5: str | None = None, attempts: int = 5,
          timeout: float = 60, progress: bool = True, retry_pause: float = 2.0) -> dict:
    """Download `url` to `dest`, resuming `dest.part` if present. Returns {"url", "size", "sha256", "md5"}.

    A dropped connection is retried (resuming) up to `attempts` times, after a pause that doubles from
    `retry_pause` seconds (at most 60 s): a busy server gets time to recover. A wrong size or checksum
    is a DataError; the bad partial file is removed so that the next call starts afresh.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = None
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status == 206:
                    total = _content_range_total(response.headers.get("Content-Range"), offset, url)
                else:  # fresh start, or a server that ignores Range: start from zero
                    offset = 0
                    length = response.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                if expected_size is not None and total is not None and total != expected_size:
                    part.unlink(missing_ok=True)
                    raise DataError(f"{url}: server reports {total} bytes, expected {expected_size}")
                with open(part, "ab" if offset else "wb") as out, \
                        progress_bar(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                             disable=not progress, leave=False) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
            received = part.stat().st_size
            if total is not None and received < total:  # http.client returns b"" on an early close
                raise ConnectionError(f"connection closed after {received} of {total} bytes")
            break
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset and (error.headers.get("Content-Range") or "").strip() == f"bytes */{offset}":
                total = offset
                break  # the partial file was already complete (killed before its rename)
            raise DataError(f"{url}: HTTP {error.code} {error.reason}") from None
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError,
                urllib.error.URLError) as error:
            have = part.stat().st_size if part.exists() else 0
            log.warning("%s: connection lost at %d bytes (%s); attempt %d of %d, resuming",
                        url, have, error, attempt, attempts)
            if attempt == attempts:
                raise DataError(f"{url}: download failed after {attempts} attempts ({error}); run the "
                                f"command again to resume from {have} bytes") from None
            time.sleep(min(retry_pause * 2 ** (attempt - 1), 60.0))
    size = part.stat().st_size
    for wanted, what in ((total, "the server announced"), (expected_size, "expected")):
        if wanted is not None and size != wanted:
            part.unlink(missing_ok=True)
            raise DataError(f"{url}: received {size} bytes, {what} {wanted}; the partial file was "
                            f"removed, run the command again")
    digests = file_digests(part)
    for name, label, wanted in (("sha256", "SHA-256", expected_sha256), ("md5", "MD5", expected_md5)):
        if wanted is not None and digests[name] != wanted:
            part.unlink(missing_ok=True)          # our own partial file
            raise DataError(f"{url}: {label} {digests[name]} differs from the official {wanted}: not the "
                            "expected archive (or damaged in transit); nothing was kept")
    os.replace(part, dest)
    return {"url": url, "size": size, **digests}


def _verified_cached(archive: Path, remote: RemoteFile, url: str) -> dict:
    """An archive already in downloads/, checked against the official MD5. One that differs is moved aside
    (never deleted: it may not be ours), and the error says where, so that the next run downloads afresh."""
    digests = file_digests(archive)
    if remote.md5 is not None and digests["md5"] != remote.md5:
        aside = archive.with_name(archive.name + ".rejected")
        for n in range(1, 1000):
            if not (aside.exists() or aside.is_symlink()):
                break
            aside = archive.with_name(f"{archive.name}.rejected{n}")
        os.replace(archive, aside)
        raise DataError(f"{archive}: MD5 {digests['md5']} is not the official {remote.md5} (another file, or a "
                        f"damaged download): moved aside to {aside.name}; run the command again to download it "
                        "afresh (delete the moved file when you no longer need it)")
    return {"url": url, "size": archive.stat().st_size, **digests}


def check_layout(name: str, folder: Path, archives: list[Path]) -> int:
    """The number of (image, mask) pairs the extracted `folder` holds in dataset `name`'s layout; a
    DataError naming the archives when it holds none (a zip of something else)."""
    try:
        return len(ph2_samples(folder) if name == "ph2" else isic_samples(folder))
    except DataError as error:
        raise DataError(f"{', '.join(map(str, archives))}: extracted, but not a {name} dataset ({error}); "
                        "nothing was kept") from None


def _check_member_name(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise DataError(f"{archive}: refusing unsafe member {name!r} (absolute path or '..': it would "
                        f"be written outside the extraction folder)")


def check_archive(archive: str | os.PathLike) -> None:
    """Refuse an archive with absolute or `..` member paths, links or device files (DataError)."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member_name(info.filename, archive)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise DataError(f"{archive}: refusing symbolic link member {info.filename!r}")
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member_name(member.name, archive)
                    if member.issym() or member.islnk():
                        raise DataError(f"{archive}: refusing link member {member.name!r}")
                    if not (member.isfile() or member.isdir()):
                        raise DataError(f"{archive}: refusing special member {member.name!r}")
        elif archive.suffix.lower() == ".rar":
            raise DataError(f"{archive}: .rar archives cannot be read with Python's standard library; "
                            f"extract it (`unrar x` or `7z x`) and pass the folder")
        else:
            raise DataError(f"{archive}: not a zip or tar archive (or a damaged one)")
    except DAMAGED_ARCHIVE_ERRORS as error:
        raise DataError(f"{archive}: damaged archive ({error}); download it again") from None


def extract_into(archives, folder: str | os.PathLike) -> None:
    """Check every archive first (`check_archive`), then extract them all into `folder`."""
    archives = [Path(a) for a in ([archives] if isinstance(archives, (str, os.PathLike)) else archives)]
    for archive in archives:
        check_archive(archive)
    for archive in archives:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(folder)
            else:
                with tarfile.open(archive) as tf:
                    tf.extractall(folder, filter="data")
        except DAMAGED_ARCHIVE_ERRORS as error:  # e.g. a bad CRC: its central directory was fine
            raise DataError(f"{archive}: damaged archive ({error}); download it again") from None


def _replaceable_raw(raw: Path) -> bool:
    """Only an empty folder is replaced (one with the marker is returned as it is, never rebuilt)."""
    return raw.is_dir() and not raw.is_symlink() and not any(raw.iterdir())


def _refuse_foreign(raw: Path) -> None:
    """A raw folder without our marker is someone's files: refuse before downloading anything."""
    if (raw.exists() or raw.is_symlink()) and not _replaceable_raw(raw):
        raise DataError(f"{raw}: exists but has no {MARKER}, so `ulvm download` did not make it; it is "
                        f"never replaced. Move it away (or pass it to `ulvm prepare --src`)")


def download(name: str, root: str | os.PathLike = "data", *, source: str | os.PathLike | None = None,
             base_url: str = ISIC_BASE_URL, progress: bool = True) -> Path:
    """Fetch and extract dataset `name` under `root`; return the raw folder to pass to `prepare`.

    isic2017 / isic2018: downloaded from `base_url` (the ISIC archive, or a mirror with the same paths).
    ph2: `source` is the archive or folder you obtained by hand (see PH2_INSTRUCTIONS); a folder is
    used in place (checked, not copied).
    """
    root = Path(root)
    raw = root / "raw" / name
    if (raw / MARKER).is_file():
        log.info("%s: already downloaded and extracted in %s", name, raw)
        return raw
    if name == "ph2":
        if source is None:
            raise DataError(PH2_INSTRUCTIONS)
        source = Path(source)
        if source.is_dir():
            count = len(ph2_samples(source))  # checks the layout: a clear error if it is not PH2
            log.info("PH2 folder %s: %d images found, used in place", source, count)
            return source
        if not source.is_file():
            raise DataError(f"{source}: no such archive or folder")
        _refuse_foreign(raw)
        records = [{"file": source.name, "size": source.stat().st_size, **file_digests(source)}]
        archives = [source]
    elif name in ARCHIVES:
        _refuse_foreign(raw)
        records, archives = [], []
        for remote in ARCHIVES[name]:
            archive = root / "downloads" / PurePosixPath(remote.path).name
            url = f"{base_url.rstrip('/')}/{remote.path}"
            if archive.is_file():
                record = _verified_cached(archive, remote, url)
            else:
                record = fetch(url, archive, expected_size=remote.size, expected_sha256=remote.sha256,
                               expected_md5=remote.md5, progress=progress)
            records.append(record)
            archives.append(archive)
    else:
        raise DataError(f"unknown dataset {name!r} (isic2017, isic2018 or ph2)")
    # a killed extraction leaves nothing behind; only an empty folder is replaced
    with atomic_directory(raw, overwrite=True, replaceable=_replaceable_raw) as tmp:
        extract_into(archives, tmp)
        pairs = check_layout(name, tmp, archives)
        atomic_write_json(tmp / MARKER, {"dataset": name, "files": records, "pairs": pairs})
    return raw
