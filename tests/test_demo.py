"""The demo end to end on real local Spark + Delta (fast setting for CI), run as a user
runs it: the ``em-spark demo`` command in its own process, whose console output (stdout
and stderr together, the JVM's included) is short and free of Spark's WARN lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from em_spark.config import load_config
from em_spark.sql import register_views
from em_spark.tables import Lakehouse

MAX_LINES = 60


def run_demo_command(cwd, *args: str) -> tuple[int, str]:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    env.pop("TERM", None)
    proc = subprocess.run(
        [sys.executable, "-m", "em_spark.cli", "demo", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=840,
    )
    return proc.returncode, proc.stdout


def test_demo_runs_every_stage_and_prints_a_short_console(tmp_path, lake_root, request):
    code, out = run_demo_command(
        tmp_path, "--fast", "--root", str(lake_root), "--set", "spark.master=local[2]"
    )
    assert code == 0, out[-3000:]
    # splitlines() also splits on "\r", so a progress bar redrawn in place counts per frame.
    lines = out.splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n" + "\n".join(lines[:80])
    warn = [ln for ln in lines if "WARN" in ln]
    assert not warn, warn
    assert "em-spark demo: done" in out
    # one line per job
    for job in ("ingest", "block", "teach", "train", "score", "evaluate", "resolve"):
        assert sum(1 for ln in lines if ln.startswith(f"{job} ") and " done in " in ln) == 1, job
    # three sample matches, each with both records and its rationale, then the SQL example
    assert "Sample matches (predictions joined to records):" in out
    assert sum(1 for ln in lines if ln.startswith("    left:  ")) == 3
    assert sum(1 for ln in lines if ln.startswith("    right: ")) == 3
    # each rationale names who wrote it (the student, or the rules where the student's failed the check)
    assert sum(1 for ln in lines if re.match(r"    why \(by the (student|rules)\): \S", ln)) == 3
    assert out.index("Sample matches") < out.index("SQL> ") < out.index("Try: ")
    assert lines[-1].startswith("Try: ")
    # the JVM's own output (ivy's report on the Delta jars, log4j) went to the log folder
    logs = list((lake_root / "logs").glob("*.log"))
    assert any("io.delta" in p.read_text(errors="replace") for p in logs), logs

    tables = {}
    for line in lines:
        m = re.match(r"^  (\w+)\s+(\d+) rows  ", line)
        if m:
            tables[m.group(1)] = int(m.group(2))
    for name in ("records", "labels", "candidates", "explanations", "predictions", "entities", "runs"):
        assert tables.get(name, 0) > 0, name
        assert (lake_root / name / "_delta_log").is_dir()
    assert tables["records"] == 864
    # every candidate has exactly one prediction
    assert tables["predictions"] == tables["candidates"]
    # Whichever model gives the verdicts (chosen on validation), the held-out pairs are
    # matched usefully: the feature model alone reaches ~1.0 on this easy dataset.
    f1 = re.search(r"Held-out test pairs: f1=([0-9.]+)", out)
    assert f1 and float(f1.group(1)) >= 0.8, out[-2000:]
    assert re.search(r"^  match \| ", out, re.M), "the SQL over predictions returned no match rows"

    # every job left a succeeded run (read here, after the demo's own JVM has exited)
    spark = request.getfixturevalue("spark")
    lake = Lakehouse.from_config(spark, load_config(base={"lakehouse": {"root": str(lake_root)}}))
    register_views(lake)
    statuses = {r.job: r.status for r in spark.sql("SELECT job, status FROM runs").collect()}
    assert statuses == {j: "succeeded" for j in ("ingest", "block", "teach", "train", "score", "evaluate", "resolve")}
