"""The teacher: explanations for labeled pairs (see docs/TEACHER.md).

``run_teach`` is the Spark job; everything else in this package (prompts, backends,
parsing, validation, :func:`em_spark.teacher.rules.explain_pair`) imports without pyspark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from em_spark.config import Config
    from em_spark.runs import Run
    from em_spark.tables import Lakehouse

__all__ = ["run_teach"]


def run_teach(lake: Lakehouse, config: Config, run: Run) -> None:
    """The teach job (imported lazily so the pure-Python parts never load pyspark)."""
    from em_spark.teacher.job import run_teach as run_teach_job

    run_teach_job(lake, config, run)
