"""Blocking: candidate pairs from configurable blockers combined by union.

``candidate_pairs`` is the DataFrame core (also used by incremental matching);
``run_block`` is the ``block`` job.
"""

from em_spark.blocking.core import candidate_pairs, plan_blocking
from em_spark.blocking.job import run_block

__all__ = ["candidate_pairs", "plan_blocking", "run_block"]
