"""The restricted unpickler: official-style batches load; anything that would run code is refused unrun."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np
import pytest

from cifarcli.config import DataConfig
from cifarcli.data.cache import MANIFEST_NAME, read_cache
from cifarcli.data.prepare import prepare_dataset
from cifarcli.data.safe_pickle import MAX_ELEMENTS, ForbiddenGlobal, load_batch
from cifarcli.errors import DataError
from conftest import TinyArchive, py2_pickle, subset_archive_path, write_tar_gz

OFFICIAL_GLOBALS = {"numpy.core.multiarray _reconstruct", "numpy._core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


class _RunsSystem:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _RunsExec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class _Reduce:
    """Pickles as an arbitrary call, to craft hostile pickles from allowed globals."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_official_style_batch_loads_with_bytes_keys(tiny_cifar10_archive: TinyArchive) -> None:
    data = tiny_cifar10_archive.members["cifar-10-batches-py/data_batch_1"]
    batch = load_batch(io.BytesIO(data), "data_batch_1")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (40, 3072)
    np.testing.assert_array_equal(batch[b"data"], tiny_cifar10_archive.train_rows[:40])
    assert batch[b"batch_label"] == b"training batch 1 of 5"


def test_fixture_pickles_use_only_the_official_globals(tiny_cifar10_archive: TinyArchive) -> None:
    for name, data in tiny_cifar10_archive.members.items():
        if name.endswith(".html"):
            continue
        used = {arg for op, arg, _ in pickletools.genops(data) if "GLOBAL" in op.name}
        assert used <= OFFICIAL_GLOBALS, (name, used)
        assert pickletools.genops(data).__next__()[1] == 2  # protocol 2, like the official files


@pytest.mark.skipif(not subset_archive_path().is_file(), reason="real CIFAR-10 subset archive not present")
def test_real_official_meta_file_loads() -> None:
    import tarfile

    with tarfile.open(subset_archive_path()) as tar:
        stream = tar.extractfile("cifar-10-batches-py/batches.meta")
        assert stream is not None
        meta = load_batch(stream, "batches.meta")
    assert meta[b"label_names"][3] == b"cat" and meta[b"num_vis"] == 3072


@pytest.mark.parametrize("make_payload", [
    lambda marker: _RunsSystem(f"touch {marker}"),
    lambda marker: _RunsExec(f"open({str(marker)!r}, 'w').write('pwned')"),
])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path: Path, make_payload) -> None:
    marker = tmp_path / "payload-ran"
    data = py2_pickle({b"data": make_payload(marker)})
    with pytest.raises(ForbiddenGlobal) as caught:
        load_batch(io.BytesIO(data), "evil_batch")
    assert not marker.exists()
    assert "evil_batch" in caught.value.message and "forbidden global" in caught.value.message
    assert re.search(r"(posix|nt)\.system|builtins\.exec|__builtin__\.exec", caught.value.message)
    assert caught.value.exit_code == 1


def test_unknown_module_is_refused_without_importing_it() -> None:
    data = b"\x80\x02cno_such_module_xyz\nboom\nq\x00)R."
    with pytest.raises(ForbiddenGlobal, match=r"no_such_module_xyz\.boom"):
        load_batch(io.BytesIO(data), "batch")


@pytest.mark.parametrize("hostile, words", [
    (_Reduce(np.ndarray, ((10**12,),)), "not callable"),                          # huge allocation via ndarray()
    (_Reduce(np._core.multiarray._reconstruct, (np.ndarray, (10**12,), b"b")), "empty array"),
    (_Reduce(np.dtype, ("O",)), "plain numeric"),                                 # object arrays could hold anything
])
def test_allowed_globals_cannot_be_misused(hostile, words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_batch(io.BytesIO(py2_pickle(hostile)), "batch")


def test_damaged_or_non_dict_pickles_are_data_errors() -> None:
    with pytest.raises(DataError, match="not a readable CIFAR batch"):
        load_batch(io.BytesIO(py2_pickle({b"data": b"x"})[:-5]), "cut_batch")
    with pytest.raises(DataError, match="expected a dict"):
        load_batch(io.BytesIO(py2_pickle([1, 2, 3])), "list_batch")


def test_tampered_archive_is_refused_by_prepare_and_no_cache_is_written(
    tmp_path: Path, tiny_cifar10_archive: TinyArchive
) -> None:
    marker = tmp_path / "payload-ran"
    members = dict(tiny_cifar10_archive.members)
    members["cifar-10-batches-py/data_batch_3"] = py2_pickle({b"data": _RunsSystem(f"touch {marker}"), b"labels": []})
    archive = tmp_path / "tampered.tar.gz"
    md5 = write_tar_gz(archive, members, "cifar-10-batches-py")
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"data_batch_3: refusing to unpickle the forbidden global (posix|nt)\.system"):
        prepare_dataset(DataConfig(root=root, source=str(archive), md5=md5))
    assert not marker.exists()
    assert not (root / "cifar10" / MANIFEST_NAME).exists()


def test_no_module_calls_pickle_load_directly() -> None:
    package = Path(__file__).resolve().parents[1] / "cifarcli"
    offenders = [str(p) for p in package.rglob("*.py")
                 if re.search(r"\bpickle\.loads?\(|\bpickle\.Unpickler\(", p.read_text(encoding="utf-8"))]
    assert offenders == []


# --------------------------------------------------------------------------- Python 3 pickles


def _python3_members(tiny: TinyArchive, protocol: int) -> dict[str, bytes]:
    """The tiny archive's pickles as Python 3 writes them: str keys and names, numpy arrays at `protocol`."""
    members = {}
    for name, data in tiny.members.items():
        if name.endswith(".html"):
            members[name] = data
            continue
        batch = load_batch(io.BytesIO(data), name)
        text = {key.decode(): [v.decode() for v in value] if key in (b"label_names", b"filenames") else value
                for key, value in batch.items()}  # fmt: skip
        members[name] = pickle.dumps(text, protocol=protocol)
    return members


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_pickles_with_str_keys_load_like_the_official_ones(tmp_path: Path, tiny_cifar10_archive: TinyArchive, protocol: int) -> None:
    archive = tmp_path / "py3.tar.gz"
    md5 = write_tar_gz(archive, _python3_members(tiny_cifar10_archive, protocol), "cifar-10-batches-py")
    prepare_dataset(DataConfig(root=tmp_path / "root", source=str(archive), md5=md5))
    arrays = read_cache(tmp_path / "root" / "cifar10", "cifar10")
    np.testing.assert_array_equal(arrays.train_images, tiny_cifar10_archive.expected.train_images)
    np.testing.assert_array_equal(arrays.test_labels, tiny_cifar10_archive.expected.test_labels)
    assert arrays.class_names == tiny_cifar10_archive.expected.class_names


def test_a_key_given_as_bytes_and_as_text_is_refused() -> None:
    with pytest.raises(DataError, match="appears twice"):
        load_batch(io.BytesIO(pickle.dumps({b"labels": [1], "labels": [2]})), "batch")


# --------------------------------------------------------------------------- resource limits


def _shared_reference_bomb(levels: int) -> list:
    """A list that pickles to a couple of kilobytes and expands to 100**levels integers."""
    value: list = [0] * 100
    for _ in range(levels - 1):
        value = [value] * 100
    return value


@pytest.mark.parametrize("where", ["labels", "filenames", "nested in a dict"])
def test_shared_references_cannot_expand_memory(where: str) -> None:
    import tracemalloc

    bomb = _shared_reference_bomb(5)  # 10**10 elements: 80 GB as an int64 array
    batch = {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}
    batch[b"labels" if where == "labels" else b"filenames" if where == "filenames" else b"extra"] = (
        bomb if where != "nested in a dict" else {b"a": bomb}
    )
    data = py2_pickle(batch)
    assert len(data) < 5_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"expand to more than {MAX_ELEMENTS} elements"):
            load_batch(io.BytesIO(data), "bomb_batch")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # memory stays proportional to the pickle, not to what it expands to


@pytest.mark.parametrize(
    "payload, words",
    [
        (lambda: (lambda x: (x.append(x), x)[1])([]), "contains itself"),
        (lambda: _nested_list(50), "nest more than"),
        (lambda: [{1, 2}], "only arrays, lists"),
        (lambda: [bytearray(b"ab")], "bytearray"),
    ],
)
def test_unusual_object_graphs_are_refused(payload, words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_batch(io.BytesIO(pickle.dumps({"labels": payload()}, protocol=4)), "odd_batch")


def _nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_labels_must_be_flat_integers_before_any_conversion(tmp_path: Path, tiny_cifar10_archive: TinyArchive) -> None:
    members = dict(tiny_cifar10_archive.members)
    name = "cifar-10-batches-py/data_batch_2"
    batch = load_batch(io.BytesIO(members[name]), name)
    batch[b"labels"] = [[v] for v in batch[b"labels"]]
    members[name] = py2_pickle(batch)
    archive = tmp_path / "nested.tar.gz"
    md5 = write_tar_gz(archive, members, "cifar-10-batches-py")
    with pytest.raises(DataError, match=r"data_batch_2: b'labels' must be a list of 40 integers"):
        prepare_dataset(DataConfig(root=tmp_path / "root", source=str(archive), md5=md5))
