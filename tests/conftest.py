"""Shared fixtures: tiny CIFAR archives in the official layout, prepared data roots, a loopback HTTP server.

Reuse in any test module:
- `tiny_cifar10_archive`, `tiny_cifar100_archive` (session): a TinyArchive (path, md5, expected arrays).
- `cifar10_data_root`, `cifar100_data_root` (session): a data root whose cache is already built;
  pass it as `--set data.root=...` or `DataConfig(root=...)`. Treat it as read-only.
- `loopback_server` (per test): an HTTP server on 127.0.0.1 whose `behaviour` each test sets.
- `--run-slow`: tests marked `slow` are skipped unless it is given.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from cifarcli.config import DataConfig
from cifarcli.data.cache import CifarArrays
from cifarcli.data.prepare import prepare_dataset

# Trained-run fixtures (smoke_run, smoke_run_cifar100) live in their own module.
pytest_plugins = ["run_fixtures"]

CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SUBSET_ARCHIVE_NAME = "cifar-10-subset-python.tar.gz"
SUBSET_MD5 = "c1a4f60db235f7b139bf987610f4936c"


# --------------------------------------------------------------------------- --run-slow


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def subset_archive_path() -> Path:
    """The real CIFAR-10 subset (env CIFAR_SUBSET_ARCHIVE, else shared/data beside the repo); may not exist."""
    override = os.environ.get("CIFAR_SUBSET_ARCHIVE")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / SUBSET_ARCHIVE_NAME


# --------------------------------------------------------------------------- pickles like Python 2 wrote them


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol-2 pickler that writes bytes as Python 2 `str` (BINSTRING), as the official files do.

    The stock Python 3 pickler writes bytes at protocol 2 as a call to `_codecs.encode`,
    which the official files never contain.
    """

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    """`obj` pickled the way the official CIFAR batch files are (protocol 2, Python 2 strings)."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


# --------------------------------------------------------------------------- tiny archives


@dataclass(frozen=True)
class TinyArchive:
    """A tiny archive in the official layout and what the cache built from it must hold."""

    path: Path
    md5: str
    dataset: str
    expected: CifarArrays        # images HWC uint8, labels int64, names
    train_rows: np.ndarray       # (N, 3072) uint8 exactly as stored: red plane, green plane, blue plane
    test_rows: np.ndarray
    members: dict[str, bytes] = field(repr=False)  # archive member name -> bytes


def make_images(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images: a per-class colour and a per-class bright stripe, plus noise."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(1234).integers(40, 216, size=(num_classes, 3))
    images = colours[labels][:, None, None, :] + rng.integers(-30, 31, size=(len(labels), 32, 32, 3))
    rows = (labels * 7) % 32
    images[np.arange(len(labels)), rows, :, :] = 250  # class-dependent spatial pattern too
    return np.clip(images, 0, 255).astype(np.uint8)


def to_rows(images: np.ndarray) -> np.ndarray:
    """HWC images -> official rows: the 1024 red values, then green, then blue, each row-major."""
    return np.concatenate([images[:, :, :, c].reshape(len(images), 1024) for c in range(3)], axis=1)


def write_tar_gz(path: Path, members: dict[str, bytes], folder: str | None = None) -> str:
    """Write a .tar.gz holding `members` (plus a folder entry for `folder`); return its md5."""
    with tarfile.open(path, "w:gz") as tar:
        if folder is not None:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _balanced_labels(per_class: int, num_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)


def build_tiny_cifar10(path: Path, train_per_class: int = 20, test_per_class: int = 10) -> TinyArchive:
    """CIFAR-10 in the official layout: 5 training batches and a test batch (200 / 100 images by default)."""
    train_labels = _balanced_labels(train_per_class, 10, seed=1)
    test_labels = _balanced_labels(test_per_class, 10, seed=2)
    train_images, test_images = make_images(train_labels, 10, seed=3), make_images(test_labels, 10, seed=4)
    train_rows, test_rows = to_rows(train_images), to_rows(test_images)
    folder = "cifar-10-batches-py"
    members: dict[str, bytes] = {}
    for i, chunk in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
        members[f"{folder}/data_batch_{i}"] = py2_pickle({
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [int(v) for v in train_labels[chunk]],
            b"data": train_rows[chunk],
            b"filenames": [f"train_{j:05d}.png".encode() for j in chunk],
        })
    members[f"{folder}/test_batch"] = py2_pickle({
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in test_labels],
        b"data": test_rows,
        b"filenames": [f"test_{j:05d}.png".encode() for j in range(len(test_labels))],
    })
    members[f"{folder}/batches.meta"] = py2_pickle({
        b"num_cases_per_batch": len(train_labels) // 5,
        b"label_names": [n.encode() for n in CIFAR10_CLASS_NAMES],
        b"num_vis": 3072,
    })
    members[f"{folder}/readme.html"] = b"<html>tiny CIFAR-10 for tests</html>\n"
    md5 = write_tar_gz(path, members, folder)
    expected = CifarArrays(
        dataset="cifar10", train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels, train_coarse_labels=None, test_coarse_labels=None,
        class_names=list(CIFAR10_CLASS_NAMES), superclass_names=None,
    )
    return TinyArchive(path, md5, "cifar10", expected, train_rows, test_rows, members)


def build_tiny_cifar100(path: Path, train_per_class: int = 2, test_per_class: int = 1) -> TinyArchive:
    """CIFAR-100 in the official layout: `train`, `test`, `meta` (200 / 100 images by default)."""
    fine_names = [f"fine_{i:02d}" for i in range(100)]
    coarse_names = [f"coarse_{i:02d}" for i in range(20)]
    train_labels = _balanced_labels(train_per_class, 100, seed=5)
    test_labels = _balanced_labels(test_per_class, 100, seed=6)
    train_images, test_images = make_images(train_labels, 100, seed=7), make_images(test_labels, 100, seed=8)
    train_rows, test_rows = to_rows(train_images), to_rows(test_images)
    folder = "cifar-100-python"
    members: dict[str, bytes] = {}
    for split, labels, rows in (("train", train_labels, train_rows), ("test", test_labels, test_rows)):
        members[f"{folder}/{split}"] = py2_pickle({
            b"filenames": [f"{split}_{j:05d}.png".encode() for j in range(len(labels))],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": [int(v) for v in labels],
            b"coarse_labels": [int(v) // 5 for v in labels],
            b"data": rows,
        })
    members[f"{folder}/meta"] = py2_pickle({
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    })
    md5 = write_tar_gz(path, members, folder)
    expected = CifarArrays(
        dataset="cifar100", train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels,
        train_coarse_labels=train_labels // 5, test_coarse_labels=test_labels // 5,
        class_names=fine_names, superclass_names=coarse_names,
    )
    return TinyArchive(path, md5, "cifar100", expected, train_rows, test_rows, members)


@pytest.fixture(scope="session")
def tiny_cifar10_archive(tmp_path_factory: pytest.TempPathFactory) -> TinyArchive:
    return build_tiny_cifar10(tmp_path_factory.mktemp("tiny-archives") / "tiny-cifar-10-python.tar.gz")


@pytest.fixture(scope="session")
def tiny_cifar100_archive(tmp_path_factory: pytest.TempPathFactory) -> TinyArchive:
    return build_tiny_cifar100(tmp_path_factory.mktemp("tiny-archives") / "tiny-cifar-100-python.tar.gz")


def _prepared_root(root: Path, archive: TinyArchive) -> Path:
    prepare_dataset(DataConfig(dataset=archive.dataset, root=root, source=str(archive.path), md5=archive.md5))
    return root


@pytest.fixture(scope="session")
def cifar10_data_root(tmp_path_factory: pytest.TempPathFactory, tiny_cifar10_archive: TinyArchive) -> Path:
    """A data root holding the converted tiny CIFAR-10 (200 train, 100 test images); read-only."""
    return _prepared_root(tmp_path_factory.mktemp("cifar10-data-root"), tiny_cifar10_archive)


@pytest.fixture(scope="session")
def cifar100_data_root(tmp_path_factory: pytest.TempPathFactory, tiny_cifar100_archive: TinyArchive) -> Path:
    """A data root holding the converted tiny CIFAR-100 (200 train, 100 test images); read-only."""
    return _prepared_root(tmp_path_factory.mktemp("cifar100-data-root"), tiny_cifar100_archive)


# --------------------------------------------------------------------------- loopback HTTP server


@dataclass
class ServerBehaviour:
    """How the loopback server answers; tests change these fields before requesting."""

    payload: bytes = b""
    supports_range: bool = True              # honour `Range: bytes=N-` with 206
    drop_first_at_fraction: float | None = None  # first request: send this share of the body, then hang up
    wrong_bytes: bool = False                # serve the payload with its bytes altered
    first_status: int | None = None          # first request: answer with this HTTP status instead
    status: int | None = None                # every request: answer with this HTTP status instead
    delay_first_s: float = 0.0               # first request: wait this long before answering


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (random port) in a thread; records every request's headers."""

    def __init__(self) -> None:
        self.behaviour = ServerBehaviour()
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/cifar-10-python.tar.gz"

    def record(self, headers: dict[str, str]) -> int:
        with self._lock:
            self.requests.append(headers)
            return len(self.requests)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            number = server.record({k.lower(): v for k, v in self.headers.items()})
            b = server.behaviour
            try:
                if number == 1 and b.delay_first_s:
                    time.sleep(b.delay_first_s)
                status = b.first_status if number == 1 and b.first_status else b.status
                if status:
                    self.send_error(status)
                    return
                self._send_body(number, b)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send_body(self, number: int, b: ServerBehaviour) -> None:
            body = bytes(x ^ 0x5A for x in b.payload) if b.wrong_bytes else b.payload
            start = 0
            wanted = self.headers.get("Range", "")
            if b.supports_range and wanted.startswith("bytes=") and wanted.endswith("-"):
                start = int(wanted[len("bytes="):-1])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes" if b.supports_range else "none")
            self.end_headers()
            chunk = body[start:]
            if number == 1 and b.drop_first_at_fraction is not None:
                chunk = chunk[: int(len(chunk) * b.drop_first_at_fraction)]
            self.wfile.write(chunk)
            self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
            return

    return Handler


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
