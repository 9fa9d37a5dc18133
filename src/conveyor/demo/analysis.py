"""Source analysis of one Python file: the demo task's actual work."""

from __future__ import annotations

import ast
import hashlib
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class SourceError(Exception):
    """A file cannot be decoded or compiled, so retrying cannot help.

    The message does not name the file, because callers report the path
    beside it.
    """


@dataclass
class SourceStats:
    """Facts about one source file.

    `lines` counts lines ended by `\\n`, `\\r\\n` or `\\r`, plus a last line
    without an ending. `functions` counts `def` and `async def` statements
    and `classes` counts `class` statements, both at any depth.
    """

    sha256: str
    bytes: int
    characters: int
    lines: int
    functions: int
    classes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyze_file(path: str | Path) -> SourceStats:
    """Read a Python file, compile it and return its SourceStats.

    The file is decoded with the encoding it declares (PEP 263, UTF-8 by
    default), parsed with `ast.parse` and compiled with `compile(tree, path,
    "exec")`.
    Raises SourceError when it cannot be decoded or does not compile, and
    OSError when it cannot be read.
    """
    data = Path(path).read_bytes()
    text = decode_source(data, str(path))
    tree = compile_source(data, str(path))
    functions, classes = count_definitions(tree)
    return SourceStats(
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        characters=len(text),
        lines=len(data.splitlines()),
        functions=functions,
        classes=classes,
    )


def decode_source(data: bytes, path: str) -> str:
    """Decode source bytes as Python would: BOM, then coding cookie, then UTF-8."""
    lines = iter(data.splitlines(keepends=True))
    try:
        encoding, _ = tokenize.detect_encoding(lambda: next(lines, b""))
        return data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot be decoded: {type(exc).__name__}: {exc}") from exc


def compile_source(data: bytes, path: str) -> ast.Module:
    """Parse and compile source bytes and return the syntax tree.

    The tree is compiled to bytecode as well, because some errors (an
    unknown `__future__` feature, `return` outside a function) only show up
    after parsing.
    """
    try:
        tree = ast.parse(data, filename=path)
        compile(tree, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise SourceError(f"does not compile: {describe_error(exc)}") from exc
    return tree


# The fields that contain statements. Definitions are statements, so a walk
# through these finds every one without visiting expressions.
STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def count_definitions(tree: ast.AST) -> tuple[int, int]:
    """Return the numbers of function and class definitions in a tree.

    Functions include `async def` and nested definitions, but not lambdas.
    """
    functions = 0
    classes = 0
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions += 1
        elif isinstance(node, ast.ClassDef):
            classes += 1
        for name in STATEMENT_FIELDS:
            children = getattr(node, name, None)
            if isinstance(children, list):
                pending.extend(children)
    return functions, classes


def describe_error(exc: Exception) -> str:
    """Return 'SyntaxError: message (line N)' for a compile error."""
    text = f"{type(exc).__name__}: {getattr(exc, 'msg', None) or exc}"
    line = getattr(exc, "lineno", None)
    return f"{text} (line {line})" if line else text
