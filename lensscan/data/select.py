"""A safe row filter: ``--where``-style expressions over columns, parsed here, run with numpy.

The language is comparisons of a column with a number or a quoted string, combined with ``AND``,
``OR``, ``NOT`` and parentheses::

    mag_r < 21.5 AND (kind = 'elliptical' OR NOT seeing_i >= 0.9)

Operators: ``<  <=  >  >=  =  ==  !=  <>``. Keywords are case-insensitive; column names are
identifiers (letters, digits, ``_``). The text is tokenised and parsed by the small recursive
descent below: it never reaches ``eval`` or SQL. A comparison with NaN or a missing value is false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<op><=|>=|==|!=|<>|<|>|=)
  | (?P<paren>[()])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
)""", re.VERBOSE)
KEYWORDS = {"AND", "OR", "NOT"}
OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
       "=": np.equal, "==": np.equal, "!=": np.not_equal, "<>": np.not_equal}


@dataclass(frozen=True)
class Compare:
    """``column op value``."""

    column: str
    op: str
    value: float | str


@dataclass(frozen=True)
class Bool:
    """``AND``/``OR`` of two parts, or ``NOT`` of one (``right`` is None)."""

    op: str
    left: Compare | Bool
    right: Compare | Bool | None = None


def tokens(text: str) -> list[tuple[str, str]]:
    """``[(kind, text), ...]`` with kind ``num``, ``str``, ``op``, ``paren``, ``name`` or
    ``kw``; raises ``ValueError`` at the first character that starts no token."""
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the filter at {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "name" and value.upper() in KEYWORDS:
            kind, value = "kw", value.upper()
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks, self.i, self.text = tokens(text), 0, text

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, value: str | None = None) -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            found = "the end" if tok is None else repr(tok[1])
            raise ValueError(f"filter {self.text!r}: expected {value or kind}, found {found}")
        self.i += 1
        return tok[1]

    def expr(self) -> Compare | Bool:
        node = self.conj()
        while self.peek() == ("kw", "OR"):
            self.i += 1
            node = Bool("OR", node, self.conj())
        return node

    def conj(self) -> Compare | Bool:
        node = self.neg()
        while self.peek() == ("kw", "AND"):
            self.i += 1
            node = Bool("AND", node, self.neg())
        return node

    def neg(self) -> Compare | Bool:
        if self.peek() == ("kw", "NOT"):
            self.i += 1
            return Bool("NOT", self.neg())
        if self.peek() == ("paren", "("):
            self.i += 1
            node = self.expr()
            self.take("paren", ")")
            return node
        column = self.take("name")
        op = self.take("op")
        tok = self.peek()
        if tok is None or tok[0] not in ("num", "str"):
            raise ValueError(f"filter {self.text!r}: {column} {op} needs a number or a quoted "
                             "string")
        self.i += 1
        if tok[0] == "num":
            return Compare(column, op, float(tok[1]))
        quote = tok[1][0]
        return Compare(column, op, tok[1][1:-1].replace(quote * 2, quote))


def parse(text: str) -> Compare | Bool:
    """Parse a filter into a tree; ``ValueError`` names what is wrong."""
    p = _Parser(text)
    node = p.expr()
    if p.peek() is not None:
        raise ValueError(f"filter {text!r}: unexpected {p.peek()[1]!r}")
    return node


def columns(node: Compare | Bool) -> set[str]:
    """The column names a filter reads."""
    if isinstance(node, Compare):
        return {node.column}
    return columns(node.left) | (columns(node.right) if node.right is not None else set())


def evaluate(node: Compare | Bool, table: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean mask (N,) of the rows of ``table`` (column -> (N,) array) that pass."""
    if isinstance(node, Bool):
        left = evaluate(node.left, table)
        if node.op == "NOT":
            return ~left
        right = evaluate(node.right, table)
        return left & right if node.op == "AND" else left | right
    if node.column not in table:
        raise ValueError(f"the filter names column {node.column!r}, which the data lacks "
                         f"(columns: {', '.join(sorted(table))})")
    col = np.asarray(table[node.column])
    if col.ndim > 1 or (col.dtype == object and len(col)
                        and isinstance(col[0], list | tuple | np.ndarray)):
        raise ValueError(f"column {node.column!r} holds an array per row (pixels, one value per "
                         "band): filter on a column of one value per row")
    if isinstance(node.value, str):
        if col.dtype.kind in "iufb":
            raise ValueError(f"column {node.column!r} holds numbers: compare it with a number, "
                             f"not the text {node.value!r}")
        values = np.asarray([str(v) if v is not None else None for v in col], dtype=object)
        known = values != None  # noqa: E711 (elementwise)
        out = np.zeros(len(col), bool)
        out[known] = OPS[node.op](values[known].astype(str), node.value)
        return out
    if col.dtype.kind not in "iufb":
        raise ValueError(f"column {node.column!r} holds text: compare it with a quoted string")
    with np.errstate(invalid="ignore"):
        return np.asarray(OPS[node.op](col.astype(float), node.value), bool)


def select(text: str, table: dict[str, np.ndarray]) -> np.ndarray:
    """Mask of the rows of ``table`` that pass the filter ``text``."""
    return evaluate(parse(text), table)
