"""A user's ``--where`` filter: exactly one boolean expression over the output's columns.

The text is parsed by DuckDB's own parser (``json_serialize_sql``) as the condition of
``SELECT * FROM t WHERE (<text>)``; the parse tree must be that one statement and its condition
may hold only column references to the output's columns, constants, operators, comparisons,
``AND``/``OR``/``NOT``, ``IN (...)`` lists, ``BETWEEN``, ``IS [NOT] NULL``, ``CASE``, casts
and the scalar functions of :data:`FUNCTIONS`. Statements, subqueries, table functions,
aggregates, window functions and anything else are refused. What runs is DuckDB's rendering of
the checked tree, never the text itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import duckdb

#: Scalar functions and operators a filter may call (DuckDB names; operators as parsed).
FUNCTIONS = frozenset({
    "+", "-", "*", "/", "//", "%", "^", "**", "||", "~~", "!~~", "~~*", "!~~*", "~~~",
    "abs", "sign", "round", "floor", "ceil", "ceiling", "trunc", "sqrt", "cbrt", "pow", "power",
    "exp", "ln", "log", "log10", "log2", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "radians", "degrees", "pi", "greatest", "least", "isnan", "isinf", "isfinite", "mod",
    "coalesce", "ifnull", "nullif", "lower", "upper", "length", "strlen", "starts_with",
    "ends_with", "suffix", "prefix", "contains", "substring", "substr", "left", "right",
    "regexp_matches", "split_part", "concat", "trim", "ltrim", "rtrim", "replace",
})
#: Types a filter may cast to.
CAST_TYPES = frozenset({"VARCHAR", "TEXT", "STRING", "BIGINT", "INTEGER", "INT", "DOUBLE",
                        "FLOAT", "REAL", "BOOLEAN", "SMALLINT", "TINYINT", "HUGEINT", "DECIMAL"})
#: Expression classes allowed anywhere in the tree (functions and casts checked further).
_CLASSES = frozenset({"COMPARISON", "CONJUNCTION", "OPERATOR", "BETWEEN", "CONSTANT",
                      "COLUMN_REF", "FUNCTION", "CAST", "CASE"})
_PREFIX = "SELECT * FROM t WHERE "


class FilterError(ValueError):
    """A ``--where`` text that is not one allowed boolean expression over the output."""


def _shown(text: str) -> str:
    """The filter as a message quotes it: escaped onto one line, long ones shortened."""
    return repr(text) if len(text) <= 120 else repr(text[:100]) + f"... ({len(text)} characters)"


def _check_parentheses(text: str) -> None:
    """Refuse a text whose parentheses close the condition it is parsed as (``true) WINDOW w
    AS (...``: a clause beside the expression, which the rendering would drop silently);
    parentheses inside strings and comments do not count (DuckDB's own tokenizer)."""
    try:
        raw = text.encode()  # the tokenizer's offsets count UTF-8 bytes
    except UnicodeEncodeError:  # bytes the terminal's encoding could not decode
        raise FilterError(f"--where {_shown(text)}: not UTF-8 text") from None
    tokens = duckdb.tokenize(text)
    if all(kind == duckdb.token_type.comment for _, kind in tokens):
        raise FilterError(f"--where {_shown(text)}: the filter is empty (only a comment); "
                          "give one boolean expression")
    depth = 0
    for k, (start, kind) in enumerate(tokens):
        if kind != duckdb.token_type.operator:
            continue
        end = tokens[k + 1][0] if k + 1 < len(tokens) else len(raw)
        for byte in raw[start:end]:
            depth += {40: 1, 41: -1}.get(byte, 0)  # "(" and ")"
            if depth < 0:
                raise FilterError(f"--where {_shown(text)}: not one SQL expression (a ')' closes "
                                  "more than it opened)")


def _parse(text: str) -> dict:
    # the newline ends a trailing -- comment before the closing parenthesis (what is rendered
    # from the tree holds no comment)
    if not text.strip():
        raise FilterError("--where: the filter is empty; give one boolean expression")
    _check_parentheses(text)
    tree = json.loads(duckdb.connect().execute(
        "SELECT json_serialize_sql(?)", [_PREFIX + f"({text}\n)"]).fetchone()[0])
    if tree.get("error"):
        # one line: DuckDB's message may quote the text and the newline added above
        message = " ".join(str(tree.get("error_message", "parse error")).split())
        if "Only SELECT statements" in message:  # the text ends the SELECT: more statements
            message = "it holds another statement after the expression"
        raise FilterError(f"--where {_shown(text)}: not one SQL expression ({message})")
    stmts = tree.get("statements", [])
    node = stmts[0]["node"] if len(stmts) == 1 else {}
    plain = (node.get("type") == "SELECT_NODE" and not node.get("modifiers")
             and not node.get("cte_map", {}).get("map") and node.get("having") is None
             and node.get("qualify") is None and not node.get("group_expressions")
             and node.get("from_table", {}).get("type") == "BASE_TABLE"
             and node.get("from_table", {}).get("table_name") == "t"
             and [e.get("class") for e in node.get("select_list", [])] == ["STAR"])
    if not plain or node.get("where_clause") is None:
        raise FilterError(f"--where {_shown(text)}: give one boolean expression, not a statement")
    return tree


def _check(expr: dict, columns: set[str], text: str, in_replace: bool = False) -> None:
    """Walk an expression tree; raise FilterError at the first node that is not allowed."""
    cls = expr.get("class")
    if cls not in _CLASSES:
        what = {"SUBQUERY": "subqueries", "WINDOW": "window functions", "STAR": "*"}.get(
            cls, f"{str(cls).lower()} expressions")
        raise FilterError(f"--where {_shown(text)}: {what} are not allowed in a filter")
    if cls == "COLUMN_REF":
        names = expr.get("column_names", [])
        if len(names) != 1 or names[0] not in columns:
            raise FilterError(f"--where {_shown(text)}: unknown column {'.'.join(names)!r}; "
                              f"columns: {', '.join(sorted(columns))}")
    if cls == "FUNCTION":
        name = expr.get("function_name", "")
        if (expr.get("schema") or expr.get("catalog") or name.lower() not in FUNCTIONS
                or expr.get("filter") or expr.get("distinct")
                or expr.get("order_bys", {}).get("orders")):
            if name.lower() == "row":  # what "()" and "(a, b)" parse as
                raise FilterError(f"--where {_shown(text)}: empty parentheses and (a, b) "
                                  "tuples are not allowed in a filter")
            raise FilterError(f"--where {_shown(text)}: function {name!r} is not allowed in a "
                              "filter (scalar arithmetic, math and string functions only)")
        if name.lower() == "replace" and not _shrinks(expr):
            if in_replace:  # each level can multiply a string's length: memory without bound
                raise FilterError(f"--where {_shown(text)}: a replace() that lengthens text "
                                  "inside another is not allowed in a filter")
            in_replace = True
    if cls == "CAST":
        typ = _cast_type(expr)
        if typ not in CAST_TYPES:
            raise FilterError(f"--where {_shown(text)}: cast to {typ or 'this type'} is not "
                              "allowed "
                              f"(allowed: {', '.join(sorted(CAST_TYPES))})")
    for child in _children(expr):
        _check(child, columns, text, in_replace)


def _shrinks(expr: dict) -> bool:
    """True for ``replace(x, 'pattern', 'text')`` with constant strings, the text no longer
    than the pattern: the result is never longer than ``x``."""
    args = [a.get("expression", {}) for a in expr.get("arguments", [])]
    consts = [a.get("literal", {}) for a in args[1:]]
    return (len(args) == 3 and all(a.get("class") == "CONSTANT" for a in args[1:])
            and all(c.get("kind") == "STRING" for c in consts)
            and len(consts[1].get("text", "")) <= len(consts[0].get("text", "")))


def _cast_type(expr: dict) -> str:
    """The target type of a CAST node (DuckDB 2: ``type_expr``; 1.x: ``cast_type``), or ""
    when it is not a plain named type with constant arguments."""
    te = expr.get("type_expr")
    if isinstance(te, dict):
        args_ok = all(c.get("class") == "CONSTANT" for c in te.get("children", []))
        plain = not te.get("schema") and not te.get("catalog") and args_ok
        return str(te.get("type_name", "")).upper() if plain else ""
    return str((expr.get("cast_type") or {}).get("id", "")).upper()


def _children(node) -> Iterable[dict]:
    """The expressions directly nested in ``node`` (a dict or list from the JSON tree)."""
    items = node.values() if isinstance(node, dict) else node
    for key_value in (node.items() if isinstance(node, dict) else enumerate(items)):
        key, value = key_value
        if key in ("type_expr", "cast_type", "literal", "qualified_name"):
            continue  # checked by _cast_type, or plain data
        if isinstance(value, dict) and "class" in value:
            yield value
        elif isinstance(value, dict | list):
            yield from _children(value)


def where_sql(text: str, columns: Iterable[str]) -> str:
    """Check a filter and return DuckDB's canonical SQL of it.

    Parameters
    ----------
    text : str
        The user's filter, e.g. ``"ra BETWEEN 150 AND 151 AND score_m0 > 0.5"``.
    columns : iterable of str
        Columns it may refer to.

    Raises
    ------
    FilterError
        When the text is not one allowed boolean expression over ``columns``.
    """
    try:
        tree = _parse(text)
        _check(tree["statements"][0]["node"]["where_clause"], set(columns), text)
        sql = duckdb.connect().execute("SELECT json_deserialize_sql(?::JSON)",
                                       [json.dumps(tree)]).fetchone()[0]
    except (duckdb.Error, RecursionError) as exc:  # DuckDB's nesting limit, or Python's
        if isinstance(exc, RecursionError) or "nesting depth" in str(exc):
            raise FilterError(f"--where {text[:60]!r}...: nested too deeply "
                              "(write a long chain as a list of AND/OR terms)") from None
        raise FilterError(f"--where {_shown(text)}: could not be checked "
                          f"({str(exc).splitlines()[0][:200]})") from None
    if not sql.startswith(_PREFIX):
        raise FilterError(f"--where {_shown(text)}: could not be rendered safely")
    return "(" + sql[len(_PREFIX):] + ")"


def referenced_columns(text: str) -> set[str]:
    """Column names a (checked) filter refers to."""
    found: set[str] = set()

    def walk(expr: dict) -> None:
        if expr.get("class") == "COLUMN_REF":
            found.update(expr.get("column_names", [])[-1:])
        for child in _children(expr):
            walk(child)

    walk(_parse(text)["statements"][0]["node"]["where_clause"])
    return found
