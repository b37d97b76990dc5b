"""A failed Ray Train run in one line: the first failing worker's own error, not Ray's wrappers.

``trainer.fit()`` raises :class:`ray.train.WorkerGroupError` (every failing rank's exception,
each wrapped by Ray) or :class:`ray.train.ControllerError`; their text is a page of tracebacks.
The user gets the rank, the innermost exception's type and first line, and what to do; the full
tracebacks stay in Ray's log.
"""

from __future__ import annotations

from ray.train import TrainingFailedError

try:
    from ray.train import ControllerError, WorkerGroupError
except ImportError:  # Ray Train V1 (RAY_TRAIN_V2_ENABLED=0): its errors carry no worker map
    ControllerError = WorkerGroupError = ()  # type: ignore[assignment,misc]

from lensscan.errors import RESUME_HINT, LensscanError, RunInterruptedError, StorageError


class TrainingError(LensscanError):
    """Training stopped after Ray Train's retries; its checkpoints are kept."""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through Ray's task wrappers (``.cause``) and ``raise ... from``."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def one_line(exc: BaseException) -> str:
    """``Type: first non-empty line of the message``."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def training_failure(member: str, exc: TrainingFailedError, retries: int
                     ) -> TrainingError | StorageError:
    """The one-line error for ``exc``, raised by ``fit()`` of ``member``'s run after ``retries``
    restarts from its last checkpoint: a :class:`StorageError` (exit status 3, rerun) when
    storage failed under the workers, as for every other command."""
    if isinstance(exc, WorkerGroupError) and exc.worker_failures:
        ranks = sorted(exc.worker_failures)
        where = f"worker {ranks[0]}" + (f" (and {len(ranks) - 1} more)" if len(ranks) > 1 else "")
        where += f" after {retries} restarts"  # worker failures are what the restarts retry
        cause = root_cause(exc.worker_failures[ranks[0]])
    elif isinstance(exc, ControllerError):  # not retried
        where, cause = "Ray Train's controller", root_cause(exc.controller_failure)
    else:
        where, cause = "Ray Train", root_cause(exc)
    if isinstance(cause, StorageError):
        return StorageError(cause.url, f"training {member} failed on {where}: {cause.reason}")
    return TrainingError(
        f"training {member} failed on {where}: {one_line(cause)} (tracebacks in Ray's log "
        f"above); fix the cause and {RESUME_HINT} from its last checkpoint")


def interrupted(member: str) -> RunInterruptedError:
    """The one line for a run stopped by Ctrl-C: Ray Train's own SIGINT handler aborts the run
    and ``fit()`` ends in ``SystemExit``; the checkpoints written so far are kept."""
    return RunInterruptedError(f"training {member} stopped at the user's request; {RESUME_HINT} "
                               "from its last checkpoint")
