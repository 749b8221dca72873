"""fetch: only 127.0.0.1 and file:// URLs here, never the internet."""

import gzip
import hashlib
import importlib
import io
import os
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cnnkit.data import ChecksumError, FetchError, UnsafeArchiveError, fetch, load_dataset, safe_extract
from cnnkit.data.fetch import Resource

fetchmod = importlib.import_module("cnnkit.data.fetch")  # the module: cnnkit.data.fetch is the function

from .fakes import write_cifar10, write_mnist

FMNIST = "/usr/share/datasets/fashion-mnist"


class Server:
    """A local HTTP server in a thread: serves ``files`` (URL path -> bytes) and records each request."""

    def __init__(self):
        self.files, self.requests, self.truncate = {}, [], set()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests.append(self.path)
                body = state.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                cut = self.path in state.truncate
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if cut else body)  # then the connection closes

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)

    def add_folder(self, prefix, folder):
        for p in Path(folder).iterdir():
            self.files[f"{prefix}/{p.name}"] = p.read_bytes()


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


def resources_for(folder):
    return [Resource(p.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
            for p in sorted(Path(folder).iterdir())]


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Generated MNIST files, registered as the 'mnist' source with their own hashes."""
    src = tmp_path / "src"
    want = write_mnist(src, seed=5)
    monkeypatch.setitem(fetchmod.SOURCES, "mnist", dict(files=resources_for(src), archive=False, mirrors=[]))
    return src, want


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_http_download_verifies_and_is_reused(server, fake_mnist, tmp_path):
    src, want = fake_mnist
    server.add_folder("/mnist", src)
    out = fetch("mnist", root=tmp_path / "out", base_url=server.url + "/mnist/", progress=False)
    assert out == str(tmp_path / "out")
    assert listing(out) == sorted(p.name for p in src.iterdir())  # no temp files left
    ds = load_dataset("mnist", "test", root=out)
    np.testing.assert_array_equal(ds.images[:, 0], want["test"][0])
    assert len(server.requests) == 4
    fetch("mnist", root=out, base_url=server.url + "/mnist/", progress=False)
    assert len(server.requests) == 4  # files with the right hash are not fetched again


def test_next_mirror_when_one_fails(server, fake_mnist, tmp_path, monkeypatch):
    src, _ = fake_mnist
    server.add_folder("/good", src)
    monkeypatch.setitem(fetchmod.SOURCES["mnist"], "mirrors", [server.url + "/gone/", server.url + "/good/"])
    fetch("mnist", root=tmp_path / "out", progress=False)
    assert sum(r.startswith("/gone/") for r in server.requests) == 4
    assert len(load_dataset("mnist", root=tmp_path / "out")) == 12


def test_hash_mismatch_deletes_the_file(server, fake_mnist, tmp_path, monkeypatch):
    src, _ = fake_mnist
    server.add_folder("/mnist", src)
    res = fetchmod.SOURCES["mnist"]["files"]
    bad = Resource(res[0].filename, "0" * 64, res[0].size)  # right size, other hash
    monkeypatch.setitem(fetchmod.SOURCES["mnist"], "files", [bad] + res[1:])
    with pytest.raises(ChecksumError) as info:
        fetch("mnist", root=tmp_path / "out", base_url=server.url + "/mnist", progress=False)
    msg = str(info.value)
    assert f"/mnist/{bad.filename}: SHA-256 mismatch: expected {'0' * 64}, found " in msg
    assert hashlib.sha256((src / bad.filename).read_bytes()).hexdigest() in msg and "deleted" in msg
    assert listing(tmp_path / "out") == []


def test_real_hashes_refuse_other_bytes(server, tmp_path):
    write_mnist(tmp_path / "src")  # right names, wrong content for the recorded fashion-mnist hashes
    server.add_folder("/f", tmp_path / "src")
    with pytest.raises(ChecksumError, match="wrong size .*expected 26421880 bytes"):
        fetch("fashion-mnist", root=tmp_path / "out", base_url=server.url + "/f/", progress=False)
    assert listing(tmp_path / "out") == []


def test_truncated_http_transfer(server, fake_mnist, tmp_path):
    src, _ = fake_mnist
    server.add_folder("/mnist", src)
    server.truncate.add("/mnist/t10k-images-idx3-ubyte.gz")  # Content-Length promises more than is sent
    # http.client returns the short body (our size check says so) or, in some versions, raises IncompleteRead
    with pytest.raises(FetchError, match=r"t10k-images-idx3-ubyte.gz: every source failed:\n  - http://\S+/mnist/"
                       r"t10k-images-idx3-ubyte.gz: (truncated transfer: expected \d+ bytes \(Content-Length\), "
                       r"received \d+; the partial file was deleted|IncompleteRead)"):
        fetch("mnist", root=tmp_path / "out", base_url=server.url + "/mnist/", progress=False)
    assert "t10k-images-idx3-ubyte.gz" not in listing(tmp_path / "out")
    assert not [f for f in listing(tmp_path / "out") if f.endswith(".part")]


def test_truncated_file_url(fake_mnist, tmp_path):
    src, _ = fake_mnist
    name = "train-images-idx3-ubyte.gz"
    full = (src / name).read_bytes()
    (src / name).write_bytes(full[:-100])
    with pytest.raises(ChecksumError, match=f"wrong size .*expected {len(full)} bytes, found {len(full) - 100}"):
        fetch("mnist", root=tmp_path / "out", base_url=src.as_uri(), progress=False)
    assert name not in listing(tmp_path / "out")


def test_interrupted_download_leaves_nothing(fake_mnist, tmp_path, monkeypatch):
    src, _ = fake_mnist
    real_urlopen = fetchmod.urllib.request.urlopen

    class Interrupting:
        def __init__(self, resp):
            self.resp, self.headers, self.calls = resp, resp.headers, 0

        def read(self, n):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt  # Ctrl-C after the first block
            return self.resp.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.resp.close()

    monkeypatch.setattr(fetchmod.urllib.request, "urlopen", lambda url, timeout: Interrupting(real_urlopen(url)))
    monkeypatch.setattr(fetchmod, "CHUNK", 64)
    with pytest.raises(KeyboardInterrupt):
        fetch("mnist", root=tmp_path / "out", base_url=src.as_uri(), progress=False)
    assert listing(tmp_path / "out") == []


@pytest.mark.parametrize("sha", [None, "deadbeef", "Z" * 64])
def test_unknown_hash_is_refused(server, tmp_path, monkeypatch, sha):
    server.files["/x/a.gz"] = b"data"
    monkeypatch.setitem(fetchmod.SOURCES, "mnist", dict(files=[Resource("a.gz", sha)], archive=False, mirrors=[]))
    with pytest.raises(ChecksumError, match="a.gz: no verified SHA-256 is recorded.*refusing"):
        fetch("mnist", root=tmp_path / "out", base_url=server.url + "/x/", progress=False)
    assert server.requests == []


def make_tar(path, members):
    """members: (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name, data=b"x"):
    return tarfile.TarInfo(name), data


def link_member(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("member, problem", [
    (file_member("../evil.txt"), "a '..' component"),
    (file_member("cifar-10-batches-bin/../../evil.txt"), "a '..' component"),
    (file_member("/tmp/cnnkit-evil.txt"), "an absolute path"),
    (link_member("cifar-10-batches-bin/link", "/etc/passwd", tarfile.SYMTYPE), "a link"),
    (link_member("cifar-10-batches-bin/hard", "../x", tarfile.LNKTYPE), "a link"),
    (link_member("cifar-10-batches-bin/fifo", "", tarfile.FIFOTYPE), "a special file"),
])
def test_safe_extract_refuses_unsafe_members(tmp_path, member, problem):
    archive = make_tar(tmp_path / "a.tar.gz", [file_member("cifar-10-batches-bin/ok.bin"), member])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=f"unsafe member .*found {problem}.*; nothing was extracted"):
        safe_extract(archive, dest)
    assert listing(dest) == []  # not even the safe member
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/cnnkit-evil.txt")


def cifar_archive(tmp_path, extra=()):
    tree = tmp_path / "tree"
    x, y, xt, yt, _ = write_cifar10(tree)
    archive = tmp_path / "serve" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
        for info, data in extra:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive, (x, y, xt, yt)


def register_cifar(monkeypatch, archive):
    data = archive.read_bytes()
    res = Resource(archive.name, hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setitem(fetchmod.SOURCES, "cifar10", dict(files=[res], archive=True, mirrors=[]))


def test_cifar_archive_fetched_and_unpacked(tmp_path, monkeypatch):
    archive, (x, y, xt, yt) = cifar_archive(tmp_path)
    register_cifar(monkeypatch, archive)
    out = fetch("cifar10", root=tmp_path / "out", base_url=archive.parent.as_uri(), progress=False)
    assert listing(out) == ["cifar-10-batches-bin"]  # the archive is removed after unpacking
    np.testing.assert_array_equal(load_dataset("cifar10", root=out).images, x)
    np.testing.assert_array_equal(load_dataset("cifar10", "test", root=out).labels, yt)
    out2 = fetch("cifar10", root=tmp_path / "out2", base_url=archive.parent.as_uri(), progress=False,
                 keep_archive=True)
    assert listing(out2) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]


def test_fetch_refuses_archive_with_parent_member(tmp_path, monkeypatch):
    archive, _ = cifar_archive(tmp_path, extra=[file_member("../evil.txt", b"pwned")])
    register_cifar(monkeypatch, archive)  # the hash matches: only the extraction check stands in the way
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="unsafe member '../evil.txt'"):
        fetch("cifar10", root=out, base_url=archive.parent.as_uri(), progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert "cifar-10-batches-bin" not in listing(out)


def upstream_gzip(debian_gz: Path, mtime: int) -> bytes:
    """Debian's file with the gzip header the upstream file has: FNAME set, the original mtime."""
    raw = debian_gz.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # Debian's copy: deflate, no flags
    name = debian_gz.name[:-3].encode() + b"\0"
    return b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + name + raw[10:]


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")
def test_recorded_fashion_mnist_hashes_match_real_bytes(tmp_path):
    # The upstream files are Debian's deflate streams with the original header; mtimes found by search.
    mtimes = {"train": 1504176606, "t10k": 1504176627}
    readme_md5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                  "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                  "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}
    src = tmp_path / "upstream"
    src.mkdir()
    for res in fetchmod.SOURCES["fashion-mnist"]["files"]:
        data = upstream_gzip(Path(FMNIST) / res.filename, mtimes[res.filename.split("-")[0]])
        assert hashlib.md5(data).hexdigest() == readme_md5[res.filename]  # the Fashion-MNIST README's MD5
        assert len(data) == res.size and hashlib.sha256(data).hexdigest() == res.sha256
        assert gzip.decompress(data) == gzip.decompress((Path(FMNIST) / res.filename).read_bytes())
        (src / res.filename).write_bytes(data)
    out = fetch("fashion-mnist", root=tmp_path / "out", base_url=src.as_uri(), progress=False)  # real registry
    ds = load_dataset("fashion-mnist", "test", root=out)
    assert ds.class_counts().tolist() == [1000] * 10


def test_command_line(fake_mnist, tmp_path, capsys, monkeypatch):
    src, _ = fake_mnist
    assert fetchmod.main(["mnist", "--root", str(tmp_path / "out"), "--base-url", src.as_uri()]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    monkeypatch.setitem(fetchmod.SOURCES["mnist"], "files", [Resource("t10k-labels-idx1-ubyte.gz", "1" * 64)])
    assert fetchmod.main(["mnist", "--root", str(tmp_path / "o2"), "--base-url", src.as_uri()]) == 1
    assert "SHA-256 mismatch" in capsys.readouterr().err
