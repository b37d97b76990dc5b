"""Errors that lensscan reports to users: each names the file (and row) and what is wrong."""

from __future__ import annotations

import unicodedata

#: Appended to every error after which rerunning the same command picks up where it stopped.
RESUME_HINT = "rerun the same command to resume"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (escape sequences, newlines,
    carriage returns, direction overrides) written as its escape, ``\\x1b``: ids and file
    names from the data are untrusted, and a message is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or unicodedata.category(c) == "Zs"  # U+3000, NBSP
                   else c.encode("unicode_escape").decode("ascii") for c in text)


class LensscanError(Exception):
    """Base class for errors with a message meant for the user, not a traceback."""


class ShardError(LensscanError):
    """A whole input file cannot be used.

    Parameters
    ----------
    url : str
        The file's URL or path.
    reason : str
        What is wrong with it, in words.
    rows : int, optional
        Rows the file holds, when its footer or header says so (the rows are then counted as
        read and quarantined).
    """

    def __init__(self, url: str, reason: str, rows: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.rows = rows
        super().__init__(f"{url}: {reason}")

    def __reduce__(self):  # Ray pickles errors raised in tasks
        return (type(self), (self.url, self.reason, self.rows))


class StorageError(LensscanError):
    """Storage failed under a run (endpoint unreachable, credentials refused, disk full): not the
    data's fault, so nothing is quarantined; the run stops and a rerun resumes it.

    Parameters
    ----------
    url : str
        The file or URL that could not be read or written.
    reason : str
        What went wrong, in words.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}; {RESUME_HINT}")

    def __reduce__(self):
        return (type(self), (self.url, self.reason))


class ModelError(LensscanError):
    """A model folder is missing, tampered with or does not match its card."""


class OutputError(LensscanError):
    """An output folder cannot be used as asked: it holds another run, another writer holds it,
    or it is missing or incomplete."""


class NothingReadableError(LensscanError):
    """No input row could be read: every shard was rejected or unreadable."""


class RunInterruptedError(LensscanError):
    """The user stopped a run (Ctrl-C). What it committed is kept; the message says whether
    rerunning the same command resumes it."""
