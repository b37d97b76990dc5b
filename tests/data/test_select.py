"""The host filter: a small safe expression language, never eval or SQL."""

from __future__ import annotations

import numpy as np
import pytest

from lensscan.data.select import columns, parse, select

TABLE = {
    "mag_r": np.array([20.0, 21.0, 22.0, np.nan]),
    "kind": np.array(["elliptical", "spiral", "o'brien", None], dtype=object),
    "n": np.array([1, 2, 3, 4]),
}


@pytest.mark.parametrize("text,expected", [
    ("mag_r < 21.5", [1, 1, 0, 0]),
    ("mag_r >= 21", [0, 1, 1, 0]),
    ("NOT mag_r >= 21", [1, 0, 0, 1]),  # NaN fails the comparison, so NOT keeps it
    ("kind = 'elliptical' OR n == 3", [1, 0, 1, 0]),
    ("kind != \"spiral\" and (n > 1 or mag_r < 20.5)", [1, 0, 1, 0]),
    ("kind = 'o''brien'", [0, 0, 1, 0]),
    ("mag_r<21.5 AND NOT (kind='spiral')", [1, 0, 0, 0]),
    ("n <> 2 AND n < 1e1", [1, 0, 1, 1]),
])
def test_expressions(text, expected):
    assert select(text, TABLE).astype(int).tolist() == expected


def test_columns_read():
    assert columns(parse("a < 1 AND (b = 'x' OR NOT c > 2)")) == {"a", "b", "c"}


@pytest.mark.parametrize("text,message", [
    ("__import__('os').system('true')", "cannot read"),
    ("__import__('os')", "expected op"),
    ("mag_r < 21; DROP TABLE x", "cannot read"),
    ("mag_r < kind", "needs a number or a quoted string"),
    ("(mag_r < 21", r"expected \)"),
    ("mag_r < 21 mag_r", "unexpected"),
    ("missing > 1", "lacks"),
    ("kind > 1", "holds text"),
    ("mag_r < 'abc'", "holds numbers: compare it with a number, not the text 'abc'"),
])
def test_refused(text, message):
    with pytest.raises(ValueError, match=message):
        select(text, TABLE)
