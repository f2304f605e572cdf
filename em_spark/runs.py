"""The ``runs`` table: one row per job run, written when it starts and when it ends."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import Row

from em_spark.config import Config
from em_spark.tables import RUNS, Lakehouse, new_run_id

log = logging.getLogger(__name__)


@dataclass
class Run:
    run_id: str
    job: str
    config_json: str
    started_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)

    def count(self, key: str, value: int) -> None:
        self.counts[key] = int(value)

    def check(self, key: str, value: str) -> None:
        self.checks[key] = value


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _write(lake: Lakehouse, run: Run, status: str, error: str | None) -> None:
    ended = None if status == "running" else _utcnow()
    row = Row(
        run_id=run.run_id,
        job=run.job,
        config=run.config_json,
        counts=run.counts,
        checks=run.checks,
        status=status,
        error=error,
        started_at=run.started_at,
        ended_at=ended,
    )
    rows = lake.spark.createDataFrame([row], RUNS)
    # The first row of a run has a new run_id: an append, not a MERGE (a MERGE scans the
    # table and costs several seconds per job on a small cluster).
    if status == "running":
        lake.insert("runs", rows)
    else:
        lake.merge("runs", rows)


@contextmanager
def tracked_run(lake: Lakehouse, job: str, config: Config) -> Iterator[Run]:
    """Record a run as ``running``, then ``succeeded`` or ``failed`` with its error."""
    run = Run(
        run_id=new_run_id(),
        job=job,
        config_json=json.dumps(config.to_dict(), sort_keys=True),
        started_at=_utcnow(),
    )
    _write(lake, run, "running", None)
    t0 = time.monotonic()
    log.info("%s: run %s started", job, run.run_id)
    try:
        yield run
    except BaseException as exc:
        _write(lake, run, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    _write(lake, run, "succeeded", None)
    log.info("%s: run %s succeeded in %.1fs %s", job, run.run_id, time.monotonic() - t0, run.counts)
