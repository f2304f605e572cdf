"""Peer benchmark: em-spark vs Splink (DuckDB and Spark backends) on the same synthetic records.

The records and their truth come from benchmarks/synthetic.py with ``--labels`` (labeled
train / valid splits; every other gold pair is held out). In one process, one after the
other:

- em-spark: its default blocking (``block`` defaults: rare code tokens + TF-IDF top-k, both
  sides) in a local Spark, then the feature model fitted on the train split (valid: its
  thresholds) scores every candidate as the score job does with
  ``train.verdict_by: features`` (prefilter, then the model's F1 threshold), in the driver.
  Labels: the generator's train / valid pairs plus every em-spark candidate of their left
  records, labeled from the truth (a user reviewing the candidates of a sample of records);
- Splink 4 without labels, each backend: blocking rules comparable to em-spark's keys,
  lambda from deterministic rules, u by random sampling, m by EM on two blocking rules,
  then ``predict``; a match is match probability >= 0.5.

Per tool: seconds of blocking, training and scoring, candidates, pair completeness (gold
among candidates), and precision / recall / F1 of the matches against the held-out truth
(the labeled pairs are left out of both sides); ratios em-spark / Splink in the JSON.

    .venv/bin/pip install -e '.[peers]'
    .venv/bin/python benchmarks/peer_splink.py --records 100000 \\
        --out benchmarks/results/peer_splink_100k.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

Pair = tuple[str, str]
FIELDS = ["name", "brand", "code", "city", "description"]
MATCH_PROBABILITY = 0.5
# Splink's blocking rules on the prepared columns (see splink_frame): em-spark's default
# keys are rare code tokens in any attribute and shared words (TF-IDF top-k); Splink's
# nearest equivalents are equalities on the code and on pairs of word-bearing fields. At
# 100k records these give 808,000 comparisons (16 per left record; em-spark's: about 15).
SPLINK_BLOCKING = [("code",), ("brand", "city"), ("brand", "name_first"), ("city", "name_first"),
                   ("name_first", "desc_first"), ("brand", "desc_first"), ("city", "desc_first")]
# At 1M records the rules above give 80.4M comparisons (the Zipfian first words make
# quadratic blocks); these four give 2.45M (4.9 per left record), in em-spark's range.
SPLINK_BLOCKING_TIGHT = [("code",), ("brand", "city"), ("city", "name_first"), ("city", "desc_first")]
SPLINK_EM_RULES = [("code",), ("brand", "city")]
SPLINK_DETERMINISTIC = [("code", "brand"), ("code", "city")]
SPARK_CONF = {
    "spark.driver.memory": "4g",
    "spark.sql.shuffle.partitions": "16",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


# --- metrics (pure) -------------------------------------------------------------------------


def pair_completeness(candidates: Iterable[Pair], gold: set[Pair]) -> float | None:
    """Share of the gold pairs among the candidates (None without gold)."""
    if not gold:
        return None
    return len(gold.intersection(candidates)) / len(gold)


def completeness_at(ranked: Sequence[Pair], gold: set[Pair], n: int) -> float | None:
    """Pair completeness of the first ``n`` of ``ranked`` (best first)."""
    return pair_completeness(ranked[:n], gold)


def precision_recall_f1(predicted: Iterable[Pair], truth: set[Pair], leave_out: set[Pair] = frozenset()) -> dict[str, Any]:
    """P / R / F1 of predicted match pairs against the true ones; pairs in ``leave_out``
    (the labeled ones) count on neither side."""
    pred = set(predicted) - leave_out
    true = truth - leave_out
    tp = len(pred & true)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(true) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "predicted": len(pred), "true": len(true), "true_positives": tp}


RATIO_KEYS = ("blocking_seconds", "scoring_seconds", "training_seconds", "candidates", "pair_completeness", "f1",
              "precision", "recall")


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """ours / peer for each figure both have (None where either lacks it or peer is 0)."""
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = ours.get(key), peer.get(key)
        out[key] = round(a / b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
    return out


def blocking_target(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """At most the peer's blocking time, and pair completeness >= the peer's at the same
    number of candidates (ours cut to the peer's count by blocking score when larger)."""
    same_n = ours.get("pair_completeness_at_peer_candidates", {}).get(peer["name"], ours.get("pair_completeness"))
    faster = ours["blocking_seconds"] <= peer["blocking_seconds"]
    complete = same_n is not None and peer.get("pair_completeness") is not None and same_n >= peer["pair_completeness"]
    return {"faster_or_equal": faster, "pair_completeness_at_same_candidates": same_n,
            "peer_pair_completeness": peer.get("pair_completeness"), "completeness_at_least_peer": complete,
            "met": bool(faster and complete)}


# --- data -----------------------------------------------------------------------------------


def dataset(records: int, root: Path, labels: float) -> Path:
    """The synthetic folder for ``records``, generated with labeled splits if missing."""
    from synthetic import generate

    folder = root / f"synthetic-labeled-{records}"
    if not (folder / "test.csv").is_file():
        print(f"generating {records} records into {folder}", flush=True)
        print(generate(records, folder, labels=labels), flush=True)
    return folder


def read_table(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["id"]: {c: row[c] or "" for c in FIELDS} for row in csv.DictReader(fh)}


def read_pairs(path: Path) -> list[tuple[str, str, int]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [(r["ltable_id"], r["rtable_id"], int(r["label"])) for r in csv.DictReader(fh)]


def load_truth(folder: Path) -> dict[str, Any]:
    """gold (every true pair), labeled pairs of train / valid, and the set to leave out."""
    gold = {(a, b) for a, b, _ in read_pairs(folder / "gold.csv")}
    train, valid = read_pairs(folder / "train.csv"), read_pairs(folder / "valid.csv")
    return {"gold": gold, "train": train, "valid": valid, "labeled": {(a, b) for a, b, _ in train + valid}}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, 1-minute load average at the end)."""
    t0 = time.monotonic()
    result = fn()
    return result, round(time.monotonic() - t0, 2), load_average()


# --- em-spark -------------------------------------------------------------------------------


def spark_session(with_splink_jar: bool, checkpoints: Path) -> Any:
    """em-spark's local Spark (local[2], 4 GiB driver), with Splink's UDF jar if asked."""
    from em_spark.config import SparkConf
    from em_spark.session import get_spark

    conf = dict(SPARK_CONF)
    if with_splink_jar:
        from splink.backends.spark import similarity_jar_location

        conf["spark.jars"] = similarity_jar_location()
    spark = get_spark(SparkConf(master="local[2]", app_name="peer-splink", conf=conf))
    spark.sparkContext.setCheckpointDir(str(checkpoints))
    return spark


def em_spark_blocking(spark: Any, folder: Path) -> dict[str, Any]:
    """em-spark's default blocking, timed from ingested records to counted candidates."""
    from em_spark.bench.blocking import load_dataset
    from em_spark.blocking.core import plan_blocking
    from em_spark.config import BlockConf

    records, _, _, _ = load_dataset(spark, folder, dedupe=False)
    records = records.cache()
    records.count()
    load0 = load_average()
    t0 = time.monotonic()
    candidates = plan_blocking(records, BlockConf(), "link").candidates.select("left_id", "right_id", "score").cache()
    n = candidates.count()
    seconds = round(time.monotonic() - t0, 2)
    load1 = load_average()
    rows = candidates.orderBy("score", ascending=False).toPandas()
    candidates.unpersist()
    records.unpersist()
    return {"ranked": list(zip(rows["left_id"], rows["right_id"])), "candidates": n, "blocking_seconds": seconds,
            "load_average": [load0, load1]}


def labeled_candidates(split: list[tuple[str, str, int]], ranked: Sequence[Pair], gold: set[Pair]) -> list[tuple[str, str, int]]:
    """A split's labeled pairs plus every candidate of its left records, labeled from the
    truth: what a user labels when they review the candidates of a sample of records."""
    lefts = {a for a, _, _ in split}
    seen = {(a, b) for a, b, _ in split}
    extra = [(a, b, int((a, b) in gold)) for a, b in ranked if a in lefts and (a, b) not in seen]
    return list(split) + extra


def em_spark_scoring(folder: Path, truth: dict[str, Any], ranked: list[Pair], seed: int) -> dict[str, Any]:
    """The feature model fitted on the train split (valid: thresholds), then the score
    job's ``features`` verdicts (prefilter, then the F1 threshold) on every candidate.

    Both splits gain the candidates of their left records (:func:`labeled_candidates`);
    those pairs join ``truth["labeled"]``, left out of every tool's evaluation."""
    import numpy as np

    from em_spark.features import fit_prefilter

    left, right = read_table(folder / "tableA.csv"), read_table(folder / "tableB.csv")
    train = labeled_candidates(truth["train"], ranked, truth["gold"])
    valid = labeled_candidates(truth["valid"], ranked, truth["gold"])
    truth["labeled"] |= {(a, b) for a, b, _ in train + valid}

    def triples(rows: list[tuple[str, str, int]]) -> list[tuple[dict, dict, int]]:
        return [(left[a], right[b], y) for a, b, y in rows]

    model, train_s, load_train = timed(lambda: fit_prefilter(triples(train), triples(valid), seed=seed))

    def score() -> list[Pair]:
        matches: list[Pair] = []
        for start in range(0, len(ranked), 50_000):
            chunk = ranked[start : start + 50_000]
            p, pre = model.scores([left[a] for a, _ in chunk], [right[b] for _, b in chunk])
            keep = (pre >= model.prefilter_threshold) & (p >= model.f1_threshold)
            matches += [chunk[i] for i in np.flatnonzero(keep)]
        return matches

    matches, score_s, load_score = timed(score)
    return {"training_seconds": train_s, "scoring_seconds": score_s, "matches": matches,
            "f1_threshold": model.f1_threshold, "prefilter_threshold": model.prefilter_threshold,
            "valid_metrics": model.valid_metrics, "load_average_training": load_train, "load_average_scoring": load_score,
            "train_pairs": len(train), "train_positives": sum(y for _, _, y in train),
            "valid_pairs": len(valid), "valid_positives": sum(y for _, _, y in valid)}


# --- Splink ---------------------------------------------------------------------------------


def splink_frame(folder: Path) -> Any:
    """Both tables as one pandas frame for Splink: source_dataset, unique_id, the fields
    (empty -> null), the code lower-cased without '-', the first word of name and of
    description (blocking keys)."""
    import pandas as pd

    frames = []
    for name, table in (("a", "tableA.csv"), ("b", "tableB.csv")):
        df = pd.read_csv(folder / table, dtype=str, keep_default_na=False)
        df = df.rename(columns={"id": "unique_id"})
        df["code"] = df["code"].str.lower().str.replace("-", "", regex=False)
        df["name_first"] = df["name"].str.split().str[0]
        df["desc_first"] = df["description"].str.split().str[0]
        df["source_dataset"] = name
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    return out.replace({"": None})


def splink_settings(blocking: Sequence[tuple[str, ...]]) -> Any:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="link_only",
        unique_id_column_name="unique_id",
        comparisons=[
            cl.JaroWinklerAtThresholds("name", [0.92, 0.8]),
            cl.ExactMatch("brand"),
            cl.LevenshteinAtThresholds("code", [1, 2]),
            cl.ExactMatch("city"),
            cl.JaroWinklerAtThresholds("description", [0.9, 0.75]),
        ],
        blocking_rules_to_generate_predictions=[block_on(*cols) for cols in blocking],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def splink_backend(name: str, spark: Any | None) -> Any:
    if name == "duckdb":
        import duckdb
        from splink import DuckDBAPI

        con = duckdb.connect()
        con.execute("SET threads TO 2")
        con.execute("SET memory_limit = '6GB'")
        return DuckDBAPI(connection=con)
    from splink.backends.spark import SparkAPI

    return SparkAPI(spark_session=spark)


def splink_pairs(frame: Any, backend: str) -> list[Pair]:
    """(tableA id, tableB id) of a Splink pairs table, whichever side each came from."""
    df = frame.as_spark_dataframe().toPandas() if backend == "spark" else frame.as_pandas_dataframe()
    a_left = df["source_dataset_l"] == "a"
    return [(l, r) if is_a else (r, l) for l, r, is_a in zip(df["unique_id_l"], df["unique_id_r"], a_left)]


def run_splink(
    backend: str, folder: Path, spark: Any | None, seed: int, score: bool, blocking: Sequence[tuple[str, ...]]
) -> dict[str, Any]:
    """Splink's usual unsupervised run on one backend: blocking, then (``score``) training
    and prediction."""
    from splink import Linker, block_on

    records = splink_frame(folder)
    table = spark.createDataFrame(records) if backend == "spark" else records
    linker = Linker(table, splink_settings(blocking), db_api=splink_backend(backend, spark))

    def block() -> Any:
        pairs = linker.inference.deterministic_link()
        count = pairs.as_spark_dataframe().count() if backend == "spark" else len(pairs.as_pandas_dataframe())
        return pairs, count

    (blocked, n), block_s, load_block = timed(block)
    candidates = splink_pairs(blocked, backend)
    result = {"name": f"splink_{backend}", "candidates": n, "candidate_pairs": candidates, "blocking_seconds": block_s,
              "load_average_blocking": load_block}
    if not score:
        return result

    def train() -> None:
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*cols) for cols in SPLINK_DETERMINISTIC], recall=0.7)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=seed)
        for cols in SPLINK_EM_RULES:
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols))

    _, train_s, load_train = timed(train)

    def predict() -> list[Pair]:
        return splink_pairs(linker.inference.predict(threshold_match_probability=MATCH_PROBABILITY), backend)

    matches, predict_s, load_predict = timed(predict)
    return {**result, "training_seconds": train_s, "scoring_seconds": predict_s, "matches": matches,
            "load_average_training": load_train, "load_average_scoring": load_predict}


# --- the run --------------------------------------------------------------------------------


def summarize(result: dict[str, Any], truth: dict[str, Any], pairs_key: str) -> dict[str, Any]:
    """The figures of one tool: pair completeness of its candidates, P/R/F1 of its matches
    on the held-out truth (and on the whole gold, for reference)."""
    out = {k: v for k, v in result.items() if k not in ("ranked", "candidate_pairs", "matches")}
    out["pair_completeness"] = round(pair_completeness(result[pairs_key], truth["gold"]) or 0.0, 4)
    if "matches" in result:
        held_out = precision_recall_f1(result["matches"], truth["gold"], truth["labeled"])
        out.update({k: held_out[k] for k in ("precision", "recall", "f1")})
        out["held_out"] = held_out
        out["all_gold"] = precision_recall_f1(result["matches"], truth["gold"])
    return out


def attempt(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one tool; a failure is recorded (type, message, last frames), not raised."""
    print(f"--- {label} (load {load_average()})", flush=True)
    try:
        return fn()
    except Exception as exc:  # a peer that cannot run here is a result, not a crash
        return {"error": f"{type(exc).__name__}: {str(exc)[:2000]}", "traceback": traceback.format_exc()[-3000:]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, required=True, help="both tables together")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--data", default="/tmp/em-spark-synthetic", help="where the synthetic folders live")
    p.add_argument("--labels", type=float, default=0.05, help="share of the gold in the train split (generation)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--skip-spark", action="store_true", help="no Splink on Spark")
    p.add_argument("--skip-duckdb", action="store_true", help="no Splink on DuckDB")
    p.add_argument("--skip-scoring", action="store_true", help="blocking only, every tool")
    p.add_argument("--splink-rules", choices=["default", "tight"], default="default",
                   help="tight: the four rules that stay near em-spark's candidate count at 1M records")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = dataset(args.records, Path(args.data), args.labels)
    truth = load_truth(folder)
    blocking = SPLINK_BLOCKING_TIGHT if args.splink_rules == "tight" else SPLINK_BLOCKING
    report: dict[str, Any] = {
        "records": args.records, "dataset": str(folder), "gold_pairs": len(truth["gold"]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, 2 cores shared, no GPU", "load_average_start": load_average(),
        "splink_settings": {"blocking": blocking, "em_rules": SPLINK_EM_RULES,
                            "deterministic_rules": SPLINK_DETERMINISTIC, "match_probability": MATCH_PROBABILITY},
        "skipped": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")

    spark = spark_session(not args.skip_spark, Path(args.data) / "checkpoints")
    report["spark"] = spark.version
    em = em_spark_blocking(spark, folder)
    if not args.skip_scoring:
        em.update(em_spark_scoring(folder, truth, em["ranked"], args.seed))
    report["em_spark"] = {"name": "em_spark", **summarize(em, truth, "ranked")}
    save()
    peers = [("duckdb", not args.skip_duckdb), ("spark", not args.skip_spark)]
    for backend, wanted in peers:
        if not wanted:
            report["skipped"].append(f"splink_{backend}")
            continue
        result = attempt(f"splink {backend}", lambda: run_splink(backend, folder, spark, args.seed, not args.skip_scoring, blocking))
        if "error" in result:
            report[f"splink_{backend}"] = result
        else:
            report[f"splink_{backend}"] = summarize(result, truth, "candidate_pairs")
            n = result["candidates"]
            report["em_spark"].setdefault("pair_completeness_at_peer_candidates", {})[f"splink_{backend}"] = round(
                completeness_at(em["ranked"], truth["gold"], n) or 0.0, 4)
        save()
    report["ratios"] = {}
    report["targets"] = {}
    for backend, _ in peers:
        peer = report.get(f"splink_{backend}")
        if peer and "error" not in peer:
            report["ratios"][f"em_spark_over_splink_{backend}"] = ratios(report["em_spark"], peer)
            report["targets"][f"blocking_vs_splink_{backend}"] = blocking_target(report["em_spark"], peer)
            if "f1" in peer and "f1" in report["em_spark"]:
                report["targets"][f"f1_above_splink_{backend}"] = report["em_spark"]["f1"] > peer["f1"]
    report["labeled_pairs_left_out"] = len(truth["labeled"])
    report["load_average_end"] = load_average()
    save()
    print(json.dumps({k: report[k] for k in ("ratios", "targets")}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
