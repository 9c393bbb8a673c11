"""YAML from config files and `--set`: the safe loader, with bounds on size, nesting and aliases.

The safe loader runs no code, but a few lines can still cost a lot: nesting thousands of
levels deep overflows the recursive composer, and anchors and aliases let a short file stand
for a huge tree (each alias repeats a whole list), which validation and error messages then
expand. So the text is bounded in bytes, the nesting in levels while it is composed, and the
composed node graph in nodes with every alias counted as the whole node it repeats, before
any Python object is built.
"""

from __future__ import annotations

from typing import Any, Iterator

import yaml

from cifarcli import escape

MAX_YAML_BYTES = 1 << 20  # a config file or `--set` value; the shipped configs are ~4 KB
MAX_YAML_DEPTH = 32  # levels of nested lists and mappings; a config needs 4
MAX_YAML_NODES = 10_000  # scalars, lists and mappings, aliases expanded; a config has ~300

# What `yaml.safe_load` raises besides YAMLError: a tag whose text does not convert, e.g. `!!float x`.
_VALUE_ERRORS = (ValueError, TypeError, OverflowError)


class YamlProblem(Exception):
    """YAML that cannot be read: `message` says why, `hint` how to fix it, `line` (1-based) where."""

    def __init__(self, message: str, hint: str, line: int | None = None, syntax: bool = False) -> None:
        super().__init__(message)
        self.message, self.hint, self.line, self.syntax = message, hint, line, syntax


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the nodes of `root` as the loaded tree would hold them (each alias as its whole subtree).

    Walks the graph once, memoised by identity, so the cost stays proportional to the text.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path from the root: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise YamlProblem(
                    f"it expands to more than {MAX_YAML_NODES} values (anchors and aliases repeat whole lists)",
                    "write the values out; a config needs no aliases", _line(node.start_mark),
                )  # fmt: skip
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlProblem("an alias refers to a list or mapping that contains it", "remove the alias", _line(node.start_mark))
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing deep nesting while composing and large expansions before constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_YAML_DEPTH:
            raise YamlProblem(f"it nests more than {MAX_YAML_DEPTH} levels deep", "flatten the value; a config needs 4 levels",
                              _line(self.peek_event().start_mark))  # fmt: skip
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        _check_expanded_size(node)
        return super().construct_document(node)


def load_yaml(text: str) -> Any:
    """Parse `text` with the bounded safe loader; YamlProblem (with a line number when known) if it cannot."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise YamlProblem(f"it is larger than {MAX_YAML_BYTES} bytes", "a config holds a few hundred settings; shorten it")
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader already refuses control characters
        return loader.get_single_data()
    except yaml.constructor.ConstructorError as exc:
        raise _constructor_problem(exc) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(f"YAML syntax error: {escape.terminal(problem)}", "fix the YAML at that line", _line(mark), syntax=True) from exc
    except _VALUE_ERRORS as exc:
        raise YamlProblem(f"a YAML value cannot be converted ({escape.clip(escape.terminal(exc))})",
                          "quote the value or drop its !! tag") from exc  # fmt: skip
    finally:
        if loader is not None:
            loader.dispose()


def _constructor_problem(exc: yaml.constructor.ConstructorError) -> YamlProblem:
    """A ConstructorError is a refused tag or a key that is not a plain value; say which."""
    problem = escape.terminal(exc.problem or "")
    line = _line(exc.problem_mark)
    if "unhashable key" in problem:
        return YamlProblem("a list or mapping is used as a key", "keys are plain names, e.g. `optim:` or `lr:`", line)
    if "constructor for the tag" in problem:
        return YamlProblem(f"YAML tag refused ({problem})", "configs hold plain values only; remove the !! tag", line)
    return YamlProblem(f"YAML value refused ({problem})", "configs hold plain values, lists and mappings only", line)
