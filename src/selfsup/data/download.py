"""Download MNIST, Fashion-MNIST and CIFAR-10 with checksums, resume and retries.

Each file is written to `NAME.part`, resumed with an HTTP Range request when a `.part` exists,
checked against its md5 and only then renamed to `NAME`, so a final name always holds a
verified file. Set SELFSUP_DATA_MIRROR=URL to fetch `URL/<kind>/<file>` instead of the origin.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from selfsup.errors import DataError, SelfSupError

MIRROR_ENV = "SELFSUP_DATA_MIRROR"
CIFAR_DIRNAME = "cifar-10-batches-bin"
BACKOFF_S = 1.0  # first retry waits this long, then doubles
TIMEOUT_S = 30.0
# A server that keeps trickling bytes never hits TIMEOUT_S (it limits each read, not the
# download): fewer than STALL_MIN_BYTES in STALL_WINDOW_S counts as a cut connection.
STALL_WINDOW_S = 60.0
STALL_MIN_BYTES = 64 * 1024
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    """Where a data set lives and the md5 of each file (values published by the authors)."""

    base_url: str
    files: dict[str, str]


REMOTES: dict[str, Remote] = {
    "mnist": Remote(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": Remote(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": Remote(
        "https://www.cs.toronto.edu/~kriz/",
        {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
    ),
}
_CIFAR_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _progress(description: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n_bytes)` callback: a rich bar on a terminal, silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def _cannot_write(path: Path, error: OSError) -> DataError:
    """A local write failed (read-only folder, full disk): no retry or other server helps."""
    return DataError(
        f"cannot write {path} ({error.strerror or error}); make {path.parent} writable, free "
        "some space, or give another DIR"
    )


def _stream_to_part(url: str, part: Path) -> None:
    """Fetch `url` into `part`, continuing from its current size; ConnectionError if cut short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "selfsup"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(url, headers=headers)
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is not a prefix of this file: start over
            part.unlink()
            raise ConnectionError("server refused to resume; restarting the download") from exc
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        mode = "ab" if offset else "wb"
        try:
            f = part.open(mode)
        except OSError as exc:
            raise _cannot_write(part, exc) from exc
        # Local write errors become DataError, which the caller does not retry: only errors
        # of the connection (OSError from response.read) are worth another attempt.
        with f, _progress(part.stem, total, offset) as advance:
            window_start, window_bytes = time.monotonic(), 0
            # read1: what has arrived, so a trickle is seen between reads, not inside one.
            while chunk := response.read1(_CHUNK):
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise _cannot_write(part, exc) from exc
                advance(len(chunk))
                window_bytes += len(chunk)
                elapsed = time.monotonic() - window_start
                if elapsed >= STALL_WINDOW_S:
                    if window_bytes < STALL_MIN_BYTES:
                        raise ConnectionError(
                            f"the server sent only {window_bytes} bytes in {elapsed:.0f} s"
                        )
                    window_start, window_bytes = time.monotonic(), 0
            try:
                f.flush()
            except OSError as exc:
                raise _cannot_write(part, exc) from exc
    size = part.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")


def fetch_file(url: str, dest: Path, md5: str, retries: int = 3) -> Path:
    """Download `url` to `dest` unless it already holds a file with this md5."""
    if dest.is_file():
        if file_md5(dest) == md5:
            return dest
        try:
            dest.unlink()  # stale or damaged copy: fetch it again
        except OSError as exc:
            raise _cannot_write(dest, exc) from exc
    part = dest.with_name(dest.name + ".part")
    error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _stream_to_part(url, part)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise DataError(
                    f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL, "
                    f"or set {MIRROR_ENV} to a mirror that has the file"
                ) from exc
            error = exc
        except (OSError, http.client.HTTPException) as exc:
            error = exc
        if attempt < retries:
            time.sleep(BACKOFF_S * 2**attempt)
    else:
        resumes = f": {part.name} resumes where it stopped" if part.exists() else ""
        raise DataError(
            f"could not download {url} after {retries + 1} attempts ({error}); check the network "
            f"or {MIRROR_ENV} and rerun{resumes}"
        )
    actual = file_md5(part)
    if actual != md5:
        part.unlink()
        raise DataError(
            f"{dest.name} from {url} has md5 {actual}, expected {md5}; the download was corrupt "
            f"or the mirror serves a different file: retry, or check the URL / {MIRROR_ENV}"
        )
    os.replace(part, dest)
    return dest


def _safe_extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        # Older Pythons lack extraction filters: allow only plain files and folders inside dest.
        for member in tar.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise DataError(f"{archive} holds an unsafe entry '{member.name}'; not extracting")
        tar.extractall(dest)  # noqa: S202 - members checked above


def _extract_cifar(archive: Path, root: Path) -> Path:
    """Extract into a temporary folder, then move the batches folder into place in one step."""
    staging = root / ".cifar-10-extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _safe_extract(archive, staging)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(
            f"could not extract {archive} ({exc}); delete it and download again"
        ) from exc
    final = root / CIFAR_DIRNAME
    if not (staging / CIFAR_DIRNAME).is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{archive} has no {CIFAR_DIRNAME}/ folder; is it cifar-10-binary.tar.gz?")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging / CIFAR_DIRNAME, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def _check_base_url(base: str, source: str) -> None:
    """Refuse a mirror that is no URL ("my-mirror/datasets", "host:port") up front: urllib
    would raise a bare ValueError, or fail it as a connection error four times over."""
    try:
        parts = urllib.parse.urlsplit(base)
        ok = parts.scheme == "file" or (parts.scheme in ("http", "https") and bool(parts.hostname))
    except ValueError:  # e.g. an unclosed [IPv6 address
        ok = False
    if not ok:
        raise DataError(
            f"{source} {base!r} is not an http:// or https:// URL; set it like "
            "https://my-mirror/datasets"
        )


def download_dataset(
    kind: str,
    root: Path,
    *,
    base_url: str | None = None,
    checksums: dict[str, str] | None = None,
    retries: int = 3,
    refresh: bool = False,
) -> Path:
    """Download `kind` ("mnist", "fashion-mnist" or "cifar10") into `root`; return the data folder.

    `base_url` replaces the origin (else SELFSUP_DATA_MIRROR/<kind>/, else the official URL);
    `checksums` replaces the md5 of the named files. Files already verified are not fetched again.
    `refresh`: extract CIFAR-10's batches again even when they are all there (one failed to
    load; only the archive has a checksum to check them by).
    """
    if kind not in REMOTES:
        raise SelfSupError(f"cannot download '{kind}'; downloadable: {', '.join(REMOTES)}")
    root = Path(root)
    if (
        kind == "cifar10"
        and not refresh
        and all((root / CIFAR_DIRNAME / f).is_file() for f in _CIFAR_FILES)
    ):
        return root / CIFAR_DIRNAME
    remote = REMOTES[kind]
    if base_url is not None:
        _check_base_url(base_url, "base_url")
    elif os.environ.get(MIRROR_ENV):
        _check_base_url(os.environ[MIRROR_ENV], MIRROR_ENV)
        base_url = f"{os.environ[MIRROR_ENV].rstrip('/')}/{kind}/"
    base = (base_url or remote.base_url).rstrip("/")
    checksums = checksums or {}
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(root, exc) from exc
    for name, md5 in remote.files.items():
        fetch_file(f"{base}/{name}", root / name, checksums.get(name, md5), retries)
    if kind == "cifar10":
        return _extract_cifar(root / "cifar-10-binary.tar.gz", root)
    return root
