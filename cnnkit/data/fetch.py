"""Download the standard data sets, verified by SHA-256: ``fetch(name) -> folder``.

``fetch("fashion-mnist")`` puts the files in ``$CNNKIT_DATA/fashion-mnist`` (or
``~/.cache/cnnkit/fashion-mnist``, or ``root``) and returns that folder, which is
where ``load_dataset`` looks. From the command line: ``cnnkit data fetch NAME``
(``cnnkit.cli``); :func:`main` here is the same command on its own.

Sources (tried in order; ``base_url`` replaces them all, e.g. a local mirror or a
``file://`` folder):

- Fashion-MNIST: the zalandoresearch/fashion-mnist GitHub repository's raw files,
  then the project's S3 bucket. Same bytes at both.
- MNIST: the CVDF mirror on Google Cloud Storage (TensorFlow's), then PyTorch's
  ossci-datasets S3 mirror (yann.lecun.com no longer serves the files reliably).
- CIFAR-10/100: the **binary** tarballs at www.cs.toronto.edu/~kriz/, unpacked here.

Every file has its SHA-256 and size written below, and a download is kept only if
both match: bytes go to a temporary file beside the target, are hashed while they
arrive, and are renamed into place (``os.replace``) only after the check. A
mismatch, a truncated transfer or an interruption leaves no file behind. A file
with no known hash is refused (fail closed); there is no switch to skip the check.

Tar archives are unpacked by :func:`safe_extract`, which refuses absolute paths,
``..`` components, links and special files before writing anything.

Where the hashes come from (see each entry): TensorFlow Datasets' recorded URL
checksums (``tensorflow_datasets/url_checksums/*.txt``), which TFDS verifies on
every download. The four Fashion-MNIST values were also checked against real bytes
here: Debian's ``dataset-fashion-mnist`` ships the same deflate streams with the
gzip header's name and time stripped; restoring them reproduces files whose SHA-256
equal the values below and whose MD5 equal those in the Fashion-MNIST README
(``tests/data/test_fetch.py`` repeats that check).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass

from .datasets import _canonical, _locate, default_root

__all__ = ["FetchError", "ChecksumError", "UnsafeArchiveError", "Resource", "SOURCES", "fetch", "download",
           "safe_extract", "sha256_file", "main"]

CHUNK = 1 << 20
TIMEOUT_S = 60


class FetchError(OSError):
    """A download failed: the message names the URL or file and what went wrong."""


class ChecksumError(FetchError):
    """A downloaded file's size or SHA-256 differs from the recorded one (the file was deleted)."""


class UnsafeArchiveError(FetchError):
    """A tar member would land outside the target folder (absolute path, ``..``, link, device)."""


@dataclass(frozen=True)
class Resource:
    filename: str
    sha256: str | None  # None: no verified hash is known, so the file is refused
    size: int | None = None  # bytes, when known


FASHION_MNIST = [  # TFDS url_checksums/fashion_mnist.txt; checked against Debian's bytes (module docstring)
    Resource("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
    Resource("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
    Resource("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
    Resource("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
]
MNIST = [  # TFDS url_checksums/mnist.txt (the CVDF mirror); the ossci mirror serves the same bytes
    Resource("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
    Resource("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
    Resource("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
    Resource("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
]

SOURCES = {
    "fashion-mnist": dict(files=FASHION_MNIST, archive=False, mirrors=[
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]),
    "mnist": dict(files=MNIST, archive=False, mirrors=[
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/"]),
    "cifar10": dict(archive=True, mirrors=["https://www.cs.toronto.edu/~kriz/"], files=[  # TFDS cifar10.txt
        Resource("cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                 170052171)]),
    "cifar100": dict(archive=True, mirrors=["https://www.cs.toronto.edu/~kriz/"], files=[  # TFDS cifar100.txt
        Resource("cifar-100-binary.tar.gz", "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                 168513733)]),
}


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_hash_known(res: Resource) -> None:
    s = res.sha256
    if not (isinstance(s, str) and len(s) == 64 and all(c in "0123456789abcdef" for c in s)):
        raise ChecksumError(f"{res.filename}: no verified SHA-256 is recorded for this file: expected 64 lowercase "
                            f"hex digits, found {s!r}; refusing to download an unverifiable file")


def _join(base: str, filename: str) -> str:
    return base.rstrip("/") + "/" + filename


def _download_one(url: str, dest: str, res: Resource, progress: bool) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify size and hash, then rename into place."""
    from tqdm import tqdm

    folder = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".part", dir=folder)
    try:
        h, got = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            total = res.size if res.size is not None else length
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=res.filename,
                      disable=not progress, leave=False) as bar:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    got += len(block)
                    if res.size is not None and got > res.size:
                        raise ChecksumError(f"{url}: the download is larger than recorded: expected {res.size} "
                                            f"bytes, found more than that; the partial file was deleted")
                    h.update(block)
                    out.write(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if length is not None and got != length:
            raise FetchError(f"{url}: truncated transfer: expected {length} bytes (Content-Length), "
                             f"received {got}; the partial file was deleted")
        if res.size is not None and got != res.size:
            raise ChecksumError(f"{url}: wrong size (truncated or a different file): expected {res.size} bytes, "
                                f"found {got}; the file was deleted")
        digest = h.hexdigest()
        if digest != res.sha256:
            raise ChecksumError(f"{url}: SHA-256 mismatch: expected {res.sha256}, found {digest}; "
                                f"the file was deleted")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download(res: Resource, mirrors, dest: str, progress: bool = True) -> str:
    """Fetch ``res`` from the first mirror that answers, into ``dest`` (atomic, verified).

    A mirror that cannot be reached (connection refused, HTTP error, interrupted
    transfer) is skipped for the next one. A size or hash mismatch raises
    :class:`ChecksumError` at once: a mirror serving different bytes is not retried
    around. A file already at ``dest`` with the right hash is kept as it is.
    """
    _check_hash_known(res)
    if os.path.isfile(dest) and sha256_file(dest) == res.sha256:
        return dest
    failures = []
    for base in mirrors:
        url = _join(base, res.filename)
        try:
            _download_one(url, dest, res, progress)
            return dest
        except ChecksumError:
            raise
        except FetchError as e:  # already names the URL
            failures.append(f"  - {e}")
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            failures.append(f"  - {url}: {type(e).__name__}: {reason}")
    raise FetchError(f"{res.filename}: every source failed:\n" + "\n".join(failures))


def _member_problem(m: tarfile.TarInfo) -> str | None:
    name = m.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a '..' component"
    if m.issym() or m.islnk():
        return f"a link (to {m.linkname!r})"
    if not (m.isfile() or m.isdir()):
        return "a special file (device, fifo)"
    return None


def safe_extract(archive, dest) -> list[str]:
    """Unpack the tar file ``archive`` into ``dest``; returns the top-level names it created.

    Every member is checked before anything is written: absolute paths, ``..``
    components, symbolic and hard links and special files raise
    :class:`UnsafeArchiveError` naming the archive and the member. Files are written
    by this function (never ``TarFile.extract``) into a staging folder inside
    ``dest``, then moved into place, replacing earlier copies.
    """
    archive, dest = os.fspath(archive), os.fspath(dest)
    os.makedirs(dest, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise FetchError(f"{archive}: not a readable tar archive: {type(e).__name__}: {e}") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            problem = _member_problem(m)
            if problem:
                raise UnsafeArchiveError(f"{archive}: unsafe member {m.name!r}: expected a regular file or folder "
                                         f"inside the target, found {problem}; nothing was extracted")
        stage = tempfile.mkdtemp(prefix=".extract-", dir=dest)
        try:
            real_stage = os.path.realpath(stage)
            tops = []
            for m in members:
                rel = posixpath.normpath(m.name.replace("\\", "/"))
                if rel in (".", ""):
                    continue
                target = os.path.realpath(os.path.join(stage, *rel.split("/")))
                if os.path.commonpath([real_stage, target]) != real_stage:  # defence in depth
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} resolves outside the target")
                top = rel.split("/")[0]
                if top not in tops:
                    tops.append(top)
                if m.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                src = tar.extractfile(m)
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            for top in tops:
                final = os.path.join(dest, top)
                if os.path.isdir(final) and not os.path.islink(final):
                    shutil.rmtree(final)
                elif os.path.lexists(final):
                    os.remove(final)
                os.replace(os.path.join(stage, top), final)
            return tops
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def fetch(name: str, root=None, base_url: str | None = None, progress: bool = True,
          keep_archive: bool = False) -> str:
    """Download data set ``name`` into ``root`` (default ``$CNNKIT_DATA/<name>`` or ``~/.cache/cnnkit/<name>``).

    Returns the folder, ready for ``load_dataset(name, root=folder)``. Files already
    there with the right hash (or an archive already unpacked there) are not fetched
    again. ``base_url`` replaces the official hosts (a mirror, ``http://127.0.0.1:PORT/``
    or ``file:///path/``); the recorded hashes still apply. An archive is deleted
    after unpacking unless ``keep_archive``.
    """
    key = _canonical(name)
    src = SOURCES[key]
    dest = os.fspath(root) if root is not None else default_root(key)
    os.makedirs(dest, exist_ok=True)
    mirrors = [base_url] if base_url is not None else src["mirrors"]
    for res in src["files"]:
        _check_hash_known(res)
    if src["archive"]:
        if all(_locate(dest, key, split)[0] for split in ("train", "test")):
            return dest
        for res in src["files"]:
            path = download(res, mirrors, os.path.join(dest, res.filename), progress)
            safe_extract(path, dest)
            if not keep_archive:
                os.remove(path)
        missing = [f"{split}: {_locate(dest, key, split)[1]}" for split in ("train", "test")
                   if not _locate(dest, key, split)[0]]
        if missing:
            raise FetchError(f"{dest}: the archive did not hold the expected files: " + "; ".join(missing))
        return dest
    for res in src["files"]:
        download(res, mirrors, os.path.join(dest, res.filename), progress)
    return dest


def main(argv=None) -> int:
    """``cnnkit data fetch NAME [--root DIR] [--base-url URL]``: download, verify, print the folder."""
    ap = argparse.ArgumentParser(prog="cnnkit data fetch", description="Download a data set, verified by SHA-256.")
    ap.add_argument("name", choices=sorted(SOURCES))
    ap.add_argument("--root", default=None, help="target folder (default: $CNNKIT_DATA/NAME or ~/.cache/cnnkit/NAME)")
    ap.add_argument("--base-url", default=None, help="download from this host or file:// folder instead")
    ap.add_argument("--keep-archive", action="store_true", help="keep the CIFAR tarball after unpacking")
    args = ap.parse_args(argv)
    try:
        path = fetch(args.name, args.root, args.base_url, keep_archive=args.keep_archive)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
