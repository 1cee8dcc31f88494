"""The downloader against a local HTTP server on 127.0.0.1: resume, dropped connections, wrong sizes,
malicious archives, idempotence; and PH2's by-hand route."""
import hashlib
import importlib
import io
import os
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from data_trees import make_isic_tree

from ulvm.data import check_archive, download, fetch, load_prepared, prepare
from ulvm.data.download import PH2_INSTRUCTIONS
from ulvm.errors import DataError


class Handler(BaseHTTPRequestHandler):
    """Serves server.files; server.drop_first_after / server.ignore_range / server.always_drop misbehave."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = None
        if server.always_drop or (server.drop_first_after and len(server.requests) == 1):
            cut = server.drop_first_after or len(body) // 2
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def pauses(monkeypatch):
    """The pauses `fetch` takes between attempts, recorded instead of slept."""
    import importlib
    import types

    taken = []   # (ulvm.data.download the module; ulvm.data.download the attribute is the function)
    monkeypatch.setattr(importlib.import_module("ulvm.data.download"), "time",
                        types.SimpleNamespace(sleep=taken.append))
    return taken


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests = {}, []
    httpd.drop_first_after, httpd.ignore_range, httpd.always_drop = None, False, False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


PAYLOAD = os.urandom(300_000)


def test_plain_download_records_size_and_sha256(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    record = fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert record["size"] == len(PAYLOAD) and record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert not (tmp_path / "a.bin.part").exists()


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:123_456])
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False)
    assert server.requests == [("/a.bin", "bytes=123456-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_partial_file_is_accepted(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)  # killed after the last byte, before the rename
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_dropped_connection_mid_file_resumes(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.drop_first_after = 100_000
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests[0] == ("/a.bin", None)
    assert server.requests[1][1] is not None and int(server.requests[1][1][6:-1]) >= 1  # resumed, not restarted


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"garbage that must not stay in front")
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_wrong_size_and_wrong_checksum_are_errors(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(DataError, match=rf"a.bin: server reports {len(PAYLOAD)} bytes, expected 1000"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", expected_size=1000, progress=False)
    with pytest.raises(DataError, match="SHA-256 .* differs"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", expected_sha256="0" * 64, progress=False)
    assert not list(tmp_path.iterdir())  # neither the file nor a bad partial is kept


def test_connection_that_keeps_dropping_fails_but_keeps_the_partial(server, tmp_path, pauses):
    server.files["/a.bin"] = PAYLOAD
    server.always_drop, server.drop_first_after = True, 10_000
    with pytest.raises(DataError, match="failed after 3 attempts.*run the command again to resume"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", attempts=3, progress=False)
    assert (tmp_path / "a.bin.part").stat().st_size == 30_000  # 3 x 10 kB, kept for the next run
    assert pauses == [2.0, 4.0]                                 # between attempts, doubling; none after the last
    server.always_drop = False
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DataError, match=r"/missing.zip: HTTP 404"):
        fetch(f"{server.url}/missing.zip", tmp_path / "m.zip", progress=False)


def zip_folder(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def serve_as_official(server, monkeypatch, files: dict[str, bytes]) -> None:
    """Serve `files` (path below the base URL -> bytes) and take their MD5s as the official ones."""
    import dataclasses

    module = importlib.import_module("ulvm.data.download")
    server.files.update({f"/{path}": data for path, data in files.items()})
    archives = {name: tuple(dataclasses.replace(remote, md5=hashlib.md5(files[remote.path]).hexdigest())
                            if remote.path in files else remote for remote in remotes)
                for name, remotes in module.ARCHIVES.items()}
    monkeypatch.setattr(module, "ARCHIVES", archives)


def isic2017_zips(tmp_path, n=10) -> dict[str, bytes]:
    tree = make_isic_tree(tmp_path / "tree", n, year=2017)
    return {"2017/ISIC-2017_Training_Data.zip": zip_folder(tree / "ISIC-2017_Training_Data"),
            "2017/ISIC-2017_Training_Part1_GroundTruth.zip": zip_folder(tree / "ISIC-2017_Training_Part1_GroundTruth")}


def test_isic_download_extract_prepare_and_idempotence(server, tmp_path, monkeypatch):
    serve_as_official(server, monkeypatch, isic2017_zips(tmp_path))
    root = tmp_path / "data"
    raw = download("isic2017", root, base_url=server.url, progress=False)
    assert (raw / "download.json").is_file() and len(server.requests) == 2
    assert download("isic2017", root, base_url=server.url, progress=False) == raw
    assert len(server.requests) == 2  # idempotent: the second call fetched nothing
    data = load_prepared(prepare("isic2017", raw, root / "prepared" / "isic2017", size=32,
                                 counts=(6, 2, 2), folds=0, workers=1))
    assert len(data) == 10


def malicious_zip(kind) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ISIC-2017_Training_Data/ISIC_0000000.jpg", b"x")
        if kind == "dotdot":
            zf.writestr("../../evil.txt", b"pwned")
        elif kind == "absolute":
            zf.writestr("/tmp/evil.txt", b"pwned")
        else:
            link = zipfile.ZipInfo("ISIC-2017_Training_Data/link")
            link.external_attr = (0o120777 << 16)
            zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize("kind, match", [("dotdot", "unsafe member '../../evil.txt'"),
                                         ("absolute", "unsafe member '/tmp/evil.txt'"),
                                         ("symlink", "symbolic link member")])
def test_malicious_archives_are_refused(server, tmp_path, kind, match, monkeypatch):
    """Even archives with the official MD5 (a mirror's, or the official server compromised)."""
    serve_as_official(server, monkeypatch, {"2017/ISIC-2017_Training_Data.zip": malicious_zip(kind),
                                            "2017/ISIC-2017_Training_Part1_GroundTruth.zip": malicious_zip("none")})
    root = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=match):
        download("isic2017", root, base_url=server.url, progress=False)
    assert not (root / "raw").exists() or not any((root / "raw").iterdir())
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()


def test_malicious_tar_is_refused(tmp_path):
    for name, build in [("link", lambda tf: tf.addfile(_tar_link("data/link", "/etc/passwd"))),
                        ("dotdot", lambda tf: tf.addfile(tarfile.TarInfo("../evil"), io.BytesIO(b"")))]:
        path = tmp_path / f"{name}.tar"
        with tarfile.open(path, "w") as tf:
            build(tf)
        with pytest.raises(DataError, match=rf"{name}.tar: refusing"):
            check_archive(path)


def test_damaged_archives_are_data_errors(tmp_path):
    """A corrupted zip (bad CRC) or a truncated tar.gz: a DataError naming the archive, nothing extracted."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("PH2Dataset/a.txt", b"lesion " * 100)
    data = bytearray(buffer.getvalue())
    data[data.index(b"lesion")] ^= 0xFF  # the central directory stays valid: only extraction notices
    (tmp_path / "crc.zip").write_bytes(bytes(data))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo("PH2Dataset/a.bin")
        payload = os.urandom(100_000)
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    (tmp_path / "cut.tar.gz").write_bytes(buffer.getvalue()[:50_000])
    for name in ("crc.zip", "cut.tar.gz"):
        root = tmp_path / f"data_{name}"
        with pytest.raises(DataError, match=rf"{name}: damaged archive"):
            download("ph2", root, source=tmp_path / name)
        assert not (root / "raw").exists() or not any((root / "raw").iterdir())


def _tar_link(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_ph2_needs_a_hand_download(tmp_path):
    with pytest.raises(DataError) as error:
        download("ph2", tmp_path)
    assert str(error.value) == PH2_INSTRUCTIONS and "ulvm download ph2 --from" in PH2_INSTRUCTIONS
    rar = tmp_path / "PH2Dataset.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x00")
    with pytest.raises(DataError, match="rar archives cannot be read"):
        download("ph2", tmp_path, source=rar)


def test_ph2_from_folder_and_from_zip(realdata, tmp_path):
    sample = realdata / "PH2_original_layout_sample"
    assert download("ph2", tmp_path / "a", source=sample) == sample  # a folder is used in place
    archive = tmp_path / "PH2Dataset.zip"
    archive.write_bytes(zip_folder(sample / "PH2Dataset"))
    raw = download("ph2", tmp_path / "b", source=archive)
    assert len(load_prepared(prepare("ph2", raw, tmp_path / "b" / "prepared", workers=1))) == 3
    (tmp_path / "not_ph2").mkdir()
    with pytest.raises(DataError, match="no PH2 images found"):
        download("ph2", tmp_path / "c", source=tmp_path / "not_ph2")


def test_a_raw_folder_not_made_by_download_is_never_replaced(server, tmp_path):
    raw = tmp_path / "data" / "raw" / "isic2017"
    raw.mkdir(parents=True)
    (raw / "my_copy.jpg").write_bytes(b"mine")
    with pytest.raises(DataError, match=rf"{raw}: exists but has no download.json"):
        download("isic2017", tmp_path / "data", base_url=server.url, progress=False)
    assert (raw / "my_copy.jpg").read_bytes() == b"mine" and not server.requests  # refused before downloading


def test_the_official_md5s_are_checked_and_a_wrong_archive_is_never_used(server, tmp_path):
    """A 131-byte zip from a mirror was accepted as isic2017 (issue 30): the official MD5s decide."""
    from ulvm.data.download import ARCHIVES

    assert [remote.md5 for remote in ARCHIVES["isic2017"]] == ["a14a7e622c67a358797ae59abb8a0b0c",
                                                               "77fdbeb6fbec4139937224416b250f4c"]
    assert [remote.md5 for remote in ARCHIVES["isic2018"]] == ["8b5be801f37b58ccf533df2928a5906b",
                                                               "ee5e5db7771d48fa2613abc7cb5c24e2"]
    not_isic = _small_zip({"readme.txt": b"not ISIC"})
    server.files["/2017/ISIC-2017_Training_Data.zip"] = not_isic
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"MD5 [0-9a-f]{32} differs from the official a14a7e62"):
        download("isic2017", root, base_url=server.url, progress=False)
    assert not (root / "raw" / "isic2017").exists() and not list((root / "downloads").iterdir())


def test_a_cached_archive_with_a_wrong_md5_is_moved_aside_not_deleted(server, tmp_path):
    downloads = tmp_path / "data" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "ISIC-2017_Training_Data.zip").write_bytes(b"someone's file")
    with pytest.raises(DataError, match=r"ISIC-2017_Training_Data.zip: MD5 .* moved aside to "
                                        r"ISIC-2017_Training_Data.zip.rejected; run the command again"):
        download("isic2017", tmp_path / "data", base_url=server.url, progress=False)
    assert (downloads / "ISIC-2017_Training_Data.zip.rejected").read_bytes() == b"someone's file"
    assert not (downloads / "ISIC-2017_Training_Data.zip").exists() and not server.requests


def test_an_archive_without_the_datasets_layout_is_refused_after_extraction(server, tmp_path, monkeypatch):
    serve_as_official(server, monkeypatch, {"2017/ISIC-2017_Training_Data.zip": _small_zip({"a.txt": b"x"}),
                                            "2017/ISIC-2017_Training_Part1_GroundTruth.zip": _small_zip({})})
    with pytest.raises(DataError, match="extracted, but not a isic2017 dataset"):
        download("isic2017", tmp_path / "data", base_url=server.url, progress=False)
    assert not (tmp_path / "data" / "raw" / "isic2017").exists()
    archive = tmp_path / "PH2Dataset.zip"
    archive.write_bytes(_small_zip({"holiday/photo.jpg": b"not PH2"}))
    with pytest.raises(DataError, match="PH2Dataset.zip: extracted, but not a ph2 dataset .*no PH2 images found"):
        download("ph2", tmp_path / "data", source=archive)
    assert not (tmp_path / "data" / "raw" / "ph2").exists()


def _small_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()
