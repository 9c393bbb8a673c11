"""Unpickle CIFAR batch files without letting them run code or exhaust memory.

A pickle can name any importable callable and call it while loading (that is how a tampered
file runs `os.system`). The official batch files, written by Python 2 with protocol 2, name
exactly three globals: `numpy.core.multiarray._reconstruct`, `numpy.ndarray` and `numpy.dtype`
(keys, labels and names are plain strings, ints, lists and dicts, which need no global).
Files written by Python 3 name two more: `_codecs.encode` (bytes at protocol 2) and
`numpy._core.numeric._frombuffer` (arrays at protocol 5). `find_class` below hands out a
checked stand-in for each of those and refuses every other global before it is imported, so
nothing outside this module is ever called.

A pickle can also refer to one list many times, so a few kilobytes stand for a list of
billions of labels once converted. The loaded object graph is therefore walked once, by
identity, before anything converts it: only plain types are allowed, at most MAX_DEPTH levels
deep, and at most MAX_ELEMENTS elements with every shared reference counted again.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from typing import IO, Any

import numpy as np

from cifarcli.errors import DataError

# Plain numeric dtypes only ("u1" is the image data; labels are lists in the official files).
_DTYPE_SPEC = re.compile(r"^[<>|=]?[uif][1248]$")
MAX_ELEMENTS = 1_000_000  # list items, dict entries and values, shared references counted each time; CIFAR-100's train file has ~150,000
MAX_DEPTH = 8  # nesting of lists and dicts; the official files have 2 (a dict of lists)


class _NdarrayType:
    """Stands in for `numpy.ndarray` inside a pickle: it can be passed to `_reconstruct`, not called."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayType()


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"an array shape must be a tuple of sizes, got {shape!r}")
    return shape


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's own pickles start every array empty, then fill it from raw bytes (BUILD)."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"_reconstruct may only build numpy.ndarray, not {subtype!r}")
    if math.prod(_shape(shape)) != 0:
        raise pickle.UnpicklingError(f"_reconstruct must start from an empty array, got shape {shape!r}")
    return np.empty((0,), dtype=np.int8)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 pickles: an array over raw bytes that the pickle itself holds."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or order not in ("C", "F"):
        raise pickle.UnpicklingError("_frombuffer takes raw bytes, a numeric dtype and the order C or F")
    if math.prod(_shape(shape)) * dtype.itemsize != len(buffer):
        raise pickle.UnpicklingError(f"_frombuffer: {len(buffer)} bytes do not fill an array of shape {shape!r}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    text = spec.decode("ascii", "replace") if isinstance(spec, bytes) else spec
    if not isinstance(text, str) or not _DTYPE_SPEC.match(text):
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a plain numeric type")
    return np.dtype(text, bool(align), bool(copy))


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Python 3 writes bytes at protocol 2 as `_codecs.encode(latin-1 text, "latin1")`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode may only turn latin-1 text into bytes")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5, numpy < 2
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # protocol 5, numpy >= 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,  # bytes written by Python 3 at protocol 2
}

_LEAF_TYPES = (bytes, str, int, float, bool, type(None))


class ForbiddenGlobal(DataError):
    """A pickle named a global outside the allow-list; nothing was imported or called."""


# EXT1/2/4 name a global by a number in copyreg's extension registry; the C unpickler serves a
# number it has seen before from copyreg's cache without calling `find_class`, so they are
# refused before loading (the official files never use them).
_EXTENSION_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})


def _refuse_extension_codes(data: bytes, source_name: str) -> None:
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name in _EXTENSION_OPCODES:
            raise ForbiddenGlobal(
                f"{source_name}: refusing to unpickle the forbidden global behind extension code {argument} "
                "(CIFAR batch files only hold numpy arrays, lists and strings)",
                hint="the file has been tampered with; delete the archive and download it again",
            )


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals CIFAR batch files use, to checked stand-ins."""

    def __init__(self, stream: IO[bytes], source_name: str) -> None:
        # Python 2 `str` objects (keys, names, raw array bytes) load as bytes, untouched.
        super().__init__(stream, encoding="bytes")
        self.source_name = source_name

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise ForbiddenGlobal(
                f"{self.source_name}: refusing to unpickle the forbidden global {module}.{name} "
                "(CIFAR batch files only hold numpy arrays, lists and strings)",
                hint="the file has been tampered with; delete the archive and download it again",
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_batch(stream: IO[bytes], source_name: str) -> dict[bytes, Any]:
    """Unpickle one CIFAR batch or meta file from `stream`; return its dict, keys as bytes.

    Python 2 wrote the keys as bytes, Python 3 as str; both are accepted and returned as bytes.
    Raises DataError naming `source_name` for a forbidden global, a graph over the limits or
    an unreadable file.
    """
    try:
        data = stream.read()
        _refuse_extension_codes(data, source_name)
        loaded = RestrictedUnpickler(io.BytesIO(data), source_name).load()
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle or damaged stream: never trusted, always reported
        raise DataError(
            f"{source_name}: not a readable CIFAR batch file ({type(exc).__name__}: {exc})",
            hint="the archive is damaged or not a CIFAR archive; delete it and download it again",
        ) from exc
    if not isinstance(loaded, dict):
        raise DataError(f"{source_name}: expected a dict of arrays and lists, found {type(loaded).__name__}")
    problem = _graph_problem(loaded)
    if problem is not None:
        raise DataError(f"{source_name}: refusing the batch file: {problem}",
                        hint="the archive is damaged or not a CIFAR archive; delete it and download it again")  # fmt: skip
    return _bytes_keys(loaded, source_name)


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [item for pair in obj.items() for item in pair]
    return list(obj) if isinstance(obj, (list, tuple)) else []


def _graph_problem(root: Any) -> str | None:
    """What makes the unpickled `root` unsafe to convert (a type, the depth, the expanded size), or None.

    Each container is visited once (memoised by identity), so the walk costs what the pickle
    holds; its expanded size counts every reference to it, which is what a conversion would copy.
    """
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        obj, depth, children_done = stack.pop()
        key = id(obj)
        if children_done:
            open_ids.discard(key)
            sizes[key] = len(_children(obj)) + sum(sizes.get(id(c), 0) for c in _children(obj))
            if sizes[key] > MAX_ELEMENTS:
                return f"its lists expand to more than {MAX_ELEMENTS} elements (shared references?)"
            continue
        if isinstance(obj, _LEAF_TYPES) or key in sizes:
            continue
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in "uif":
                return f"an array of dtype {obj.dtype} (only numbers are allowed)"
            continue
        if not isinstance(obj, (dict, list, tuple)):
            return f"it holds a {type(obj).__name__} (only arrays, lists, dicts, strings and numbers are allowed)"
        if key in open_ids:
            return "a list contains itself"
        if depth > MAX_DEPTH:
            return f"lists nest more than {MAX_DEPTH} levels deep"
        open_ids.add(key)
        stack.append((obj, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(obj))
    return None


def _bytes_keys(loaded: dict[Any, Any], source_name: str) -> dict[bytes, Any]:
    """The batch dict keyed by bytes, whether Python 2 (bytes) or Python 3 (str) wrote the keys."""
    out: dict[bytes, Any] = {}
    for key, value in loaded.items():
        if not isinstance(key, (bytes, str)):
            raise DataError(f"{source_name}: a key of the batch dict is a {type(key).__name__}, not a name")
        name = key.encode("utf-8", "replace") if isinstance(key, str) else key
        if name in out:
            raise DataError(f"{source_name}: the key {name!r} appears twice (as bytes and as text)")
        out[name] = value
    return out
