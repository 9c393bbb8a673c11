"""Checks for records cifar reads back from disk (checkpoints, evaluation.json, run_info.json).

Users edit, truncate and swap these files, so a reader checks every field it will use before
it acts, with one predicate per field, and reports the first problem in words.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

Check = Callable[[Any], bool]


def whole(value: Any) -> bool:
    """A count: an int (not a bool) >= 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def positive(value: Any) -> bool:
    return whole(value) and value >= 1


def number(value: Any) -> bool:
    """An int or float (not a bool); NaN allowed, e.g. the loss of an empty split."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flag(value: Any) -> bool:
    return isinstance(value, bool)


def text(value: Any) -> bool:
    return isinstance(value, str)


def texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def mapping(value: Any) -> bool:
    return isinstance(value, dict)


def records(value: Any) -> bool:
    """A list of mappings (e.g. the metrics history)."""
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def one_of(*allowed: Any) -> Check:
    return lambda value: any(value == a and type(value) is type(a) for a in allowed)


def optional(check: Check) -> Check:
    """`check`, or None."""
    return lambda value: value is None or check(value)


def first_problem(record: Any, fields: Mapping[str, Check], may_lack: Iterable[str] = ()) -> str | None:
    """The first field of `record` that is missing (unless in `may_lack`) or fails its check, in words; None if all pass."""
    if not isinstance(record, dict):
        return f"it holds a {type(record).__name__}, not a mapping"
    lacking = set(may_lack)
    for key, check in fields.items():
        if key not in record:
            if key in lacking:
                continue
            return f"{key!r} is missing"
        if not check(record[key]):
            return f"{key!r} is not valid (found a {type(record[key]).__name__})"
    return None
