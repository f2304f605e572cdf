"""The ``block`` job: records -> candidates (one MERGE) and a blocking report."""

from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import functions as F

from em_spark.blocking.core import plan_blocking
from em_spark.blocking.encoder import with_learned_encoder
from em_spark.blocking.report import blocking_report, gold_pairs, write_report
from em_spark.config import Config
from em_spark.runs import Run
from em_spark.tables import Lakehouse

log = logging.getLogger(__name__)


def run_block(lake: Lakehouse, config: Config, run: Run) -> None:
    lake.require("records")
    records = lake.read("records")
    labels = lake.read("labels") if lake.exists("labels") else None
    conf, encoder = with_learned_encoder(records, labels, config.block, config.mode)
    if encoder is not None:
        run.count("encoder_pairs", encoder["pairs"])
        run.check("encoder", f"{encoder['output']} ({encoder['steps']} steps, {encoder['seconds']} s)")
    plan = plan_blocking(records, conf, config.mode)
    candidates = plan.candidates.withColumn("run_id", F.lit(run.run_id)).cache()
    try:
        n = candidates.count()
        # A re-run updates the pairs it produces again (MERGE on pair_id: no duplicates).
        # Pairs it no longer produces stay unless delete_stale: they may have been added by
        # incremental matching or already be scored downstream.
        lake.merge("candidates", candidates, update=True, delete_condition="true" if config.block.delete_stale else None)
        gold = gold_pairs(lake.read("labels")) if lake.exists("labels") else None
        report = blocking_report(plan, candidates, gold, n)
    finally:
        candidates.unpersist()
    json_path, png_path = write_report(report, Path(config.reports_dir) / "block")
    run.count("candidates", n)
    for blocker, info in report["blockers"].items():
        run.count(f"candidates_{blocker}", info["candidates"])
    for blocker, info in report["keys"].items():
        run.count(f"keys_dropped_{blocker}", info["keys_dropped"])
    if report["pair_completeness"] is not None:
        run.check("pair_completeness", f"{report['pair_completeness']:.4f}")
    run.check("reduction_ratio", f"{report['reduction_ratio']:.6f}")
    run.check("candidates_per_left", f"{report['candidates_per_left']}")
    run.check("report", str(json_path))
    log.info(
        "block: %d candidates, PC %s, RR %s, report %s (%s)",
        n, report["pair_completeness"], report["reduction_ratio"], json_path, png_path.name,
    )
