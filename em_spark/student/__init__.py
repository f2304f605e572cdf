"""The student: a small seq2seq matcher distilled from the teacher's explanations.

``inference`` (load, p_match, generate) imports no pyspark, so GPU hosts and scoring
UDFs use it directly; the train job (which reads Delta tables) is imported on first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from em_spark.config import Config
    from em_spark.runs import Run
    from em_spark.tables import Lakehouse


def run_train(lake: "Lakehouse", config: "Config", run: "Run") -> None:
    """The ``train`` job (see em_spark.student.job)."""
    from em_spark.student.job import run_train as train_job

    train_job(lake, config, run)
