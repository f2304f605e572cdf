"""Fault injection for crash-safety tests: ``EM_SPARK_FAIL_AFTER=<job>:<n>``.

Jobs that commit their output in chunks call :func:`checkpoint` after each committed
chunk; with the variable set, the job dies after its n-th chunk, as a crash would,
leaving the chunks already committed. Unset (the default), it does nothing.
"""

from __future__ import annotations

import os

ENV = "EM_SPARK_FAIL_AFTER"


class InjectedFailure(RuntimeError):
    """Raised on purpose by :func:`checkpoint` (tests only)."""


def checkpoint(job: str, chunks_committed: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target_job, _, n = spec.partition(":")
    if target_job == job and chunks_committed >= int(n or 1):
        raise InjectedFailure(f"{job}: injected failure after {chunks_committed} committed chunks")
