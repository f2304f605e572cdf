"""The jobs: one function per stage, run inside a tracked run on a Delta lakehouse.

Each stage is ``run_<stage>(lake, config, run) -> None`` in its own module; this
module only maps job names to them and runs them with a ``runs`` row around each.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from em_spark.config import Config
from em_spark.runs import Run, tracked_run
from em_spark.session import get_spark
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)

StageFn = Callable[[Lakehouse, Config, Run], None]

# job name -> "module:function"; imported lazily so `em-spark ingest` does not load torch.
STAGES: dict[str, str] = {
    "ingest": "em_spark.ingest:run_ingest",
    "block": "em_spark.blocking:run_block",
    "teach": "em_spark.teacher:run_teach",
    "train": "em_spark.student:run_train",
    "score": "em_spark.scoring:run_score",
    "evaluate": "em_spark.evaluate:run_evaluate",
    "resolve": "em_spark.resolve:run_resolve",
}

PIPELINE = ["ingest", "block", "teach", "train", "score", "evaluate", "resolve"]


def stage_function(job: str) -> StageFn:
    module_name, _, fn_name = STAGES[job].partition(":")
    return getattr(importlib.import_module(module_name), fn_name)


def run_job(job: str, config: Config, lake: Lakehouse | None = None) -> Run:
    """Run one job in a tracked run and return the run (id, counts, checks)."""
    fn = stage_function(job)
    if lake is None:
        lake = Lakehouse.from_config(get_spark(config.spark), config)
    log.info("job %s: starting", job)
    with tracked_run(lake, job, config) as run:
        fn(lake, config, run)
    log.info("job %s: done %s", job, run.counts)
    return run


def run_pipeline(config: Config, jobs: list[str] | None = None, lake: Lakehouse | None = None) -> dict[str, Run]:
    if lake is None:
        lake = Lakehouse.from_config(get_spark(config.spark), config)
    return {job: run_job(job, config, lake) for job in (jobs or PIPELINE)}
