"""Errors that lensscan reports to users: each names the file (and row) and what is wrong."""

from __future__ import annotations


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
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class ModelError(LensscanError):
    """A model folder is missing, tampered with or does not match its card."""
