"""YAML reading that remembers where every value and key came from.

PyYAML's composer gives nodes with marks; we construct plain Python values from them
and record, for each path of keys and indices, the mark of the value and of its key,
so that a pydantic error location can be turned into `FILE:LINE:COL`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from morphspec.errors import Mark, SpecError
from morphspec.spec.limits import MAX_SPEC_BYTES, MAX_YAML_VALUES, limit, over

__all__ = ["Loc", "Located", "load_yaml"]

Loc = tuple[str | int, ...]
MAX_DEPTH = 100  # nesting levels of YAML: far beyond any real spec, well within Python's stack


@dataclass
class Located:
    """A YAML document as plain data plus the marks of its values and keys by path."""

    data: Any
    file: str
    values: dict[Loc, Mark] = field(default_factory=dict)
    keys: dict[Loc, Mark] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # every file read: this one, its bases

    def mark(self, loc: Loc, key: bool = False) -> Mark:
        """The mark of `loc`, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        for i in range(len(loc), -1, -1):
            found = table.get(loc[:i]) or self.values.get(loc[:i])
            if found is not None:
                return found
        return Mark(self.file)


def _mark(file: str, node: yaml.Node) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load_yaml(path: Path, label: str | None = None) -> Located:
    """Read `path` into a Located document; syntax errors become SpecError with a place."""
    label = label or str(path)
    try:
        text = _read_spec(path, label)
    except FileNotFoundError:
        raise SpecError(f"file not found: {label}", Mark(label)) from None
    except UnicodeDecodeError:
        raise SpecError(
            f"{label} is not UTF-8 text (is it a checkpoint?); give a spec file", Mark(label)
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read {label}: {exc}", Mark(label)) from None
    bad = _control_byte(text, label)
    if bad is not None:
        raise bad
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(
                "the file is empty; a spec starts with 'morphspec: 1'", Mark(label, 1, 1)
            )
        out = Located(None, label, files=[str(path)])
        out.data = _construct(loader, node, (), out)
        return out
    except RecursionError:
        raise SpecError(
            f"the YAML nests too deeply to read (more than {MAX_DEPTH} levels)", Mark(label)
        ) from None
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark
        mark = Mark(label, m.line + 1, m.column + 1) if m else Mark(label)
        raise SpecError(f"YAML syntax error: {exc.problem or exc}", mark) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", Mark(label)) from None
    finally:
        loader.dispose()


def _read_spec(path: Path, label: str) -> str:
    """The file's text; a FIFO, device or folder (`/dev/zero` never ends) and files beyond
    MAX_SPEC_BYTES are refused before they are read."""
    if path.exists() and not path.is_file():
        raise SpecError(f"{label} is not a regular file; give a spec file", Mark(label))
    cap = limit(MAX_SPEC_BYTES)
    with path.open("rb") as f:
        raw = f.read(cap + 1)
    if len(raw) > cap:
        raise SpecError(over(MAX_SPEC_BYTES, "the file's size"), Mark(label))
    return raw.decode("utf-8")


def _control_byte(text: str, label: str) -> SpecError | None:
    """A located error for the first character YAML forbids (BEL, NUL, other C0 controls
    but tab, CR and LF, DEL, C1 controls, surrogates): PyYAML's own error has no place."""
    for i, ch in enumerate(text):
        code = ord(ch)
        allowed = (
            ch in "\t\n\r"
            or 0x20 <= code <= 0x7E
            or code == 0x85
            or 0xA0 <= code <= 0xD7FF
            or 0xE000 <= code <= 0xFFFD
            or code >= 0x10000
        )
        if not allowed:
            line = text.count("\n", 0, i) + 1
            col = i - (text.rfind("\n", 0, i) + 1) + 1
            return SpecError(
                f"control character U+{code:04X} is not allowed in a spec; delete it",
                Mark(label, line, col),
            )
    return None


def _construct(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, out: Located) -> Any:
    out.values[loc] = _mark(out.file, node)
    if len(out.values) > limit(MAX_YAML_VALUES):
        raise SpecError(
            over(MAX_YAML_VALUES, "the number of YAML values, counting each alias (*name) as a"
                 " copy of its anchor's content,"),
            out.values[loc],
        )  # fmt: skip
    if len(loc) > MAX_DEPTH:
        raise SpecError(
            f"the YAML nests more than {MAX_DEPTH} levels deep here; flatten the spec"
            " (use blocks: and repeat for deep networks)",
            out.values[loc],
        )
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("mapping keys must be names", _mark(out.file, key_node))
            key = _construct(loader, key_node, (*loc, "<key>"), out)
            if not isinstance(key, str | int):
                raise SpecError("mapping keys must be names", _mark(out.file, key_node))
            if key in result:
                raise SpecError(f"duplicate key '{key}'", _mark(out.file, key_node))
            out.keys[(*loc, key)] = _mark(out.file, key_node)
            result[key] = _construct(loader, value_node, (*loc, key), out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*loc, i), out) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:  # e.g. an integer of 5000 digits
        raise SpecError(f"cannot read this value: {exc}".split(";")[0], out.values[loc]) from None
