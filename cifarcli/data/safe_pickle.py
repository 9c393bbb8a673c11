"""Unpickle CIFAR batch files without letting them run code.

A pickle can name any importable callable and call it while loading (that is how a tampered
file runs `os.system`). The official batch files, written by Python 2 with protocol 2, name
exactly three globals: `numpy.core.multiarray._reconstruct`, `numpy.ndarray` and `numpy.dtype`
(keys, labels and names are plain strings, ints, lists and dicts, which need no global).
`find_class` below hands out a checked stand-in for each of those and refuses every other
global before it is imported, so nothing outside this module is ever called.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from typing import IO, Any

import numpy as np

from cifarcli.errors import DataError

# Plain numeric dtypes only ("u1" is the image data; labels are lists in the official files).
_DTYPE_SPEC = re.compile(r"^[<>|=]?[uif][1248]$")


class _NdarrayType:
    """Stands in for `numpy.ndarray` inside a pickle: it can be passed to `_reconstruct`, not called."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayType()


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's own pickles start every array empty, then fill it from raw bytes (BUILD)."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"_reconstruct may only build numpy.ndarray, not {subtype!r}")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape) or int(np.prod(shape)) != 0:
        raise pickle.UnpicklingError(f"_reconstruct must start from an empty array, got shape {shape!r}")
    return np.empty((0,), dtype=np.int8)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    text = spec.decode("ascii", "replace") if isinstance(spec, bytes) else spec
    if not isinstance(text, str) or not _DTYPE_SPEC.match(text):
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}) is not a plain numeric type")
    return np.dtype(text, bool(align), bool(copy))


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy >= 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}


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
    """Unpickle one CIFAR batch or meta file from `stream`; return its dict (keys are bytes).

    Raises DataError naming `source_name` for a forbidden global or an unreadable file.
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
    return loaded
