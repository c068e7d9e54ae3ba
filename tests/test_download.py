"""Downloads against a local HTTP server: checksums, resume after a cut, retries, extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from selfsup.data import download, load_images
from selfsup.data.download import Remote, download_dataset
from selfsup.errors import DataError

FM_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


class FileServer(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) with Range support; can cut the first response short."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut_first = False
        self.drip_first = False  # send the first response a byte at a time, then hang up
        self.dripped = 0  # bytes of it sent before the client hung up
        self.fail_with: int | None = None  # answer every request with this HTTP status
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        data = self.server.files.get(self.path)
        range_header = self.headers.get("Range")
        first = not self.server.requests
        self.server.requests.append((self.path, range_header))
        if self.server.fail_with:
            self.send_error(self.server.fail_with)
            return
        if data is None:
            self.send_error(404)
            return
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206 if range_header else 200)
        if range_header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.drip_first and first:
            self.close_connection = True
            for byte in body[:200]:  # 4 s of trickle, unless the client hangs up first
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:  # the client gave up on this connection
                    return
                self.server.dripped += 1
                time.sleep(0.02)
            return
        if self.server.cut_first and first:
            body = body[: len(body) // 2]  # promise the whole file, then hang up half-way
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)


def idx_gz(array: np.ndarray) -> bytes:
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fm_files(shared_data: Path) -> dict[str, bytes]:
    """A tiny Fashion-MNIST (40 train / 20 test images) cut from the real t10k files."""
    folder = shared_data / "fashion-mnist"
    images = np.frombuffer(
        gzip.decompress((folder / FM_NAMES[2]).read_bytes()), np.uint8, offset=16
    )
    labels = np.frombuffer(gzip.decompress((folder / FM_NAMES[3]).read_bytes()), np.uint8, offset=8)
    images = images.reshape(-1, 28, 28)
    return {
        FM_NAMES[0]: idx_gz(images[:40]),
        FM_NAMES[1]: idx_gz(labels[:40]),
        FM_NAMES[2]: idx_gz(images[40:60]),
        FM_NAMES[3]: idx_gz(labels[40:60]),
    }


def md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


def serve(server: FileServer, files: dict[str, bytes], prefix: str = "/fm") -> str:
    server.files.update({f"{prefix}/{name}": data for name, data in files.items()})
    return server.url + prefix


def test_download_good_md5_then_cached(server, fm_files, tmp_path: Path) -> None:
    base = serve(server, fm_files)
    out = download_dataset(
        "fashion-mnist", tmp_path / "fm", base_url=base, checksums=md5s(fm_files)
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(FM_NAMES)  # no .part left
    assert (out / FM_NAMES[0]).read_bytes() == fm_files[FM_NAMES[0]]
    test = load_images(f"fashion-mnist:{out}", "test")
    assert len(test) == 20 and test.classes[0] == "T-shirt/top"
    n_requests = len(server.requests)
    download_dataset("fashion-mnist", out, base_url=base, checksums=md5s(fm_files))
    assert len(server.requests) == n_requests  # verified files are not fetched again


def test_bad_md5_leaves_nothing(server, fm_files, tmp_path: Path) -> None:
    base = serve(server, fm_files)
    checksums = {**md5s(fm_files), FM_NAMES[0]: "0" * 32}
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz from .* has md5 .*retry"):
        download_dataset("fashion-mnist", tmp_path, base_url=base, checksums=checksums)
    assert list(tmp_path.iterdir()) == []


def test_resume_after_cut_within_one_call(server, fm_files, tmp_path: Path) -> None:
    server.cut_first = True
    base = serve(server, fm_files)
    download_dataset("fashion-mnist", tmp_path, base_url=base, checksums=md5s(fm_files))
    (first_path, first_range), (second_path, second_range) = server.requests[:2]
    half = (len(fm_files[FM_NAMES[0]])) // 2
    assert first_path == second_path and first_range is None and second_range == f"bytes={half}-"
    assert (tmp_path / FM_NAMES[0]).read_bytes() == fm_files[FM_NAMES[0]]


def test_resume_across_calls(server, fm_files, tmp_path: Path) -> None:
    server.cut_first = True
    base = serve(server, fm_files)
    with pytest.raises(DataError, match=r"after 1 attempts .*resumes where it stopped"):
        download_dataset(
            "fashion-mnist", tmp_path, base_url=base, checksums=md5s(fm_files), retries=0
        )
    part = tmp_path / (FM_NAMES[0] + ".part")
    assert part.stat().st_size == len(fm_files[FM_NAMES[0]]) // 2
    download_dataset("fashion-mnist", tmp_path, base_url=base, checksums=md5s(fm_files), retries=0)
    assert not part.exists() and (tmp_path / FM_NAMES[0]).read_bytes() == fm_files[FM_NAMES[0]]


def test_http_404_and_unreachable(server, fm_files, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download_dataset("mnist", tmp_path, base_url=server.url + "/nothing")
    assert len(server.requests) == 1  # a 404 is not retried
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(DataError, match=r"could not download .* after 2 attempts"):
        download_dataset("mnist", tmp_path, base_url=f"http://127.0.0.1:{port}", retries=1)


def test_a_folder_that_cannot_be_written_is_not_a_network_error(
    server, fm_files, tmp_path, monkeypatch
) -> None:
    """A read-only folder (or a full disk) was retried as a connection error, with four
    requests and a message to check the network; a new folder under a read-only one was a
    PermissionError traceback. (Permissions are faked: the tests may run as root.)"""
    base = serve(server, fm_files)
    real_open = Path.open

    def read_only(self: Path, mode: str = "r", *args, **kwargs):
        if self.suffix == ".part" and mode != "rb":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    with pytest.raises(DataError, match=r"cannot write .*\.part \(Permission denied\); make"):
        download_dataset("fashion-mnist", tmp_path, base_url=base, checksums=md5s(fm_files))
    assert len(server.requests) == 1  # not retried: another attempt would fail the same way
    monkeypatch.setattr(Path, "open", real_open)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot write .*file/fm \(.*\); make"):
        download_dataset("fashion-mnist", tmp_path / "file" / "fm", base_url=base)


def test_no_part_file_is_promised_when_none_was_written(server, tmp_path: Path) -> None:
    """A server error before any byte came said "f.gz.part resumes where it stopped"."""
    server.fail_with = 500
    with pytest.raises(DataError, match=r"after 2 attempts \(HTTP Error 500.*rerun$"):
        download.fetch_file(server.url + "/fails", tmp_path / "f.gz", "0" * 32, retries=1)


def test_mirror_env_and_load_images_download(server, fm_files, tmp_path, monkeypatch) -> None:
    serve(server, fm_files, prefix="/fashion-mnist")
    monkeypatch.setenv(download.MIRROR_ENV, server.url + "/")
    monkeypatch.setitem(
        download.REMOTES, "fashion-mnist", Remote("http://invalid.example/", md5s(fm_files))
    )
    train = load_images(f"fashion-mnist:{tmp_path / 'new'}", "train", download=True)
    assert len(train) == 40 and train.images.shape == (40, 1, 28, 28)
    assert all(path.startswith("/fashion-mnist/") for path, _ in server.requests)


@pytest.mark.parametrize("mirror", ["my-mirror/datasets", "127.0.0.1:8000", "http://[::1"])
def test_a_mirror_that_is_no_url_is_a_one_line_error(mirror, tmp_path, monkeypatch) -> None:
    """Without a scheme the mirror was a bare ValueError traceback (or, for host:port, four
    attempts and a message to check the network)."""
    monkeypatch.setenv(download.MIRROR_ENV, mirror)
    with pytest.raises(DataError, match=r"SELFSUP_DATA_MIRROR '.*' is not an http:// or https"):
        download_dataset("mnist", tmp_path / "mnist")
    assert not (tmp_path / "mnist").exists()


def test_a_server_that_trickles_bytes_counts_as_cut_and_the_download_resumes(
    server, fm_files, tmp_path, monkeypatch
) -> None:
    """Each read got a byte within TIMEOUT_S, so a trickle never timed out: it now counts as
    a cut connection once a window brings too few bytes, and the retry resumes the .part."""
    monkeypatch.setattr(download, "STALL_WINDOW_S", 0.2)
    monkeypatch.setattr(download, "STALL_MIN_BYTES", 1000)
    name = FM_NAMES[0]
    base = serve(server, {name: fm_files[name]})
    server.drip_first = True
    download.fetch_file(f"{base}/{name}", tmp_path / name, md5s(fm_files)[name])
    assert (tmp_path / name).read_bytes() == fm_files[name]
    (first, _), (second, resumed_from) = server.requests
    assert first == second and resumed_from is not None and resumed_from != "bytes=0-"
    assert server.dripped < 100  # the client hung up on the trickle, not the server


def test_download_replaces_a_damaged_file_that_is_present(
    server, fm_files, tmp_path, monkeypatch
) -> None:
    """With all four files there but one truncated, --download only said "re-download it"
    (it fetched only missing files); it now fetches that file again, checked by its md5."""
    serve(server, fm_files, prefix="/fashion-mnist")
    monkeypatch.setenv(download.MIRROR_ENV, server.url)
    monkeypatch.setitem(
        download.REMOTES, "fashion-mnist", Remote("http://invalid.example/", md5s(fm_files))
    )
    download_dataset("fashion-mnist", tmp_path)
    damaged = tmp_path / FM_NAMES[0]
    damaged.write_bytes(fm_files[FM_NAMES[0]][:200])
    with pytest.raises(DataError, match="truncated"):
        load_images(f"fashion-mnist:{tmp_path}", "train")
    train = load_images(f"fashion-mnist:{tmp_path}", "train", download=True)
    assert len(train) == 40 and damaged.read_bytes() == fm_files[FM_NAMES[0]]


def make_cifar_tar(shared_data: Path, members: dict[str, bytes] | None = None) -> bytes:
    record = (shared_data / "cifar10/test_batch_first1000.bin").read_bytes()[: 3073 * 2]
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    members = members or {f"cifar-10-batches-bin/{n}": record for n in names}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_cifar10_download_and_extract(server, shared_data, tmp_path: Path) -> None:
    archive = {"cifar-10-binary.tar.gz": make_cifar_tar(shared_data)}
    base = serve(server, archive)
    out = download_dataset("cifar10", tmp_path, base_url=base, checksums=md5s(archive))
    assert out == tmp_path / "cifar-10-batches-bin"
    train = load_images(f"cifar10:{tmp_path}", "train")
    assert len(train) == 10 and len(load_images(f"cifar10:{tmp_path}", "test")) == 2
    assert not (tmp_path / ".cifar-10-extracting").exists()


def test_download_extracts_cifar10_again_when_a_batch_is_damaged(
    server, shared_data, tmp_path, monkeypatch
) -> None:
    """CIFAR-10's batches have no checksum of their own, so a damaged one was never replaced
    once all were there; with --download the checked archive is extracted again."""
    archive = {"cifar-10-binary.tar.gz": make_cifar_tar(shared_data)}
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setitem(download.REMOTES, "cifar10", Remote(serve(server, archive), md5s(archive)))
    download_dataset("cifar10", tmp_path)
    damaged = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    good = damaged.read_bytes()
    damaged.write_bytes(good[:100])
    with pytest.raises(DataError, match="truncated"):
        load_images(f"cifar10:{tmp_path}", "train")
    assert len(load_images(f"cifar10:{tmp_path}", "train", download=True)) == 10
    assert damaged.read_bytes() == good


def test_cifar10_tar_with_escaping_path_is_refused(server, shared_data, tmp_path: Path) -> None:
    archive = {"cifar-10-binary.tar.gz": make_cifar_tar(shared_data, {"../evil.txt": b"x"})}
    base = serve(server, archive)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="could not extract"):
        download_dataset("cifar10", root, base_url=base, checksums=md5s(archive))
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
