"""Scoring: the per-batch core (:mod:`em_spark.scoring.batch`, no Spark) and the ``score``
job (:mod:`em_spark.scoring.job`); ``udfs/scoring.py`` binds the core to a pandas UDF."""

from em_spark.scoring.job import resolve_model_uri, run_score, score_candidates

__all__ = ["resolve_model_uri", "run_score", "score_candidates"]
