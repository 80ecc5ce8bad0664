"""Finding `FILE:LINE:COL` places in test YAML, to compare with the marks errors carry."""

from __future__ import annotations

from pathlib import Path


def where(path: Path, needle: str, nth: int = 1) -> str:
    """`FILE:LINE:COL` of the nth occurrence of `needle` in the file (1-based, like YAML marks).

    A `^` in `needle` marks the column to report: `where(p, "kv_heads: ^2")` is the place of
    the value 2, which is where errors about a value point.
    """
    skip = needle.find("^") if "^" in needle else 0
    needle = needle.replace("^", "")
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        col = line.find(needle)
        while col >= 0:
            seen += 1
            if seen == nth:
                return f"{path}:{number}:{col + 1 + skip}"
            col = line.find(needle, col + 1)
    raise AssertionError(f"{needle!r} not in {path}")
