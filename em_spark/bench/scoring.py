"""``em-spark bench scoring``: what verdict-first and the prefilter save, per student preset.

On synthetic candidate pairs drawn from a DeepMatcher-layout dataset with a 5% match rate
(matches: the test split's matches; non-matches: a share of the test split's labeled
non-matches, which came out of a blocker and are hard, the rest random cross pairs, which
are easy; ``--hard-shares`` lists the mixes, default 0.5 and 0), each preset (a T5 built from a config, trained briefly on the train split with
rules-teacher explanations) is timed three ways, all through the same scoring core
(em_spark.scoring.batch / MatchModel: the same batching, length sorting, KV cache):

(a) ``generate_all``: generate "match/no match + rationale" for every pair (the paper's
    inference); the verdict is read from the first words;
(b) ``verdict_first``: p_match in one forward pass for every pair, a rationale generated
    for the matches only;
(c) ``prefilter``: the feature model's prefilter first, then (b) for the rest.

Quality: verdict agreement of (a) and (b); recall on the labeled test matches with and
without the prefilter (``prefilter_recall_loss``, in recall points / 100). With
``--spark-pairs N`` it also scores N candidates end to end through Spark, Delta and the
UDF (the tiny preset, prefilter, rationales for matches).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from em_spark.bench.matching import LabeledPair, explain, load_dataset
from em_spark.features import fit_prefilter
from em_spark.match_model import MatchModel
from em_spark.scoring.batch import ScoringPolicy, score_pairs
from em_spark.student.inference import StudentPredictor, parse_verdict

MATCH_RATE = 0.05


def synthetic_pairs(test: Sequence[LabeledPair], n: int, hard_share: float, seed: int) -> list[LabeledPair]:
    """``n`` pairs, 5% matches; non-matches: ``hard_share`` labeled, the rest random."""
    rng = random.Random(seed)
    positives = [p for p in test if p.label == 1]
    negatives = [p for p in test if p.label == 0]
    n_pos = max(1, round(n * MATCH_RATE))
    n_hard = round((n - n_pos) * hard_share)
    out = [rng.choice(positives) for _ in range(n_pos)] + [rng.choice(negatives) for _ in range(n_hard)]
    lefts, rights = [p.left for p in test], [p.right for p in test]
    out += [LabeledPair(rng.choice(lefts), rng.choice(rights), 0) for _ in range(n - len(out))]
    rng.shuffle(out)
    return out


def train_preset(
    preset: str, dataset: Any, minutes: float, out_dir: Path, seed: int, dtype: str | None = None
) -> MatchModel:
    """A MatchModel with ``preset`` trained for ``minutes`` on the train split (valid: its
    first 300 pairs), saved to ``out_dir`` and loaded back as scoring loads it (``dtype``:
    ``score.dtype``; None: auto)."""
    from em_spark.config import load_config

    conf = load_config(
        overrides=[f"train.model={preset}", f"train.budget_minutes={minutes}", f"train.seed={seed}", "train.max_epochs=3"]
    ).train
    train, valid = dataset.splits["train"], dataset.splits["valid"][:300]
    model = MatchModel.fit(
        [(p.left, p.right, p.label) for p in train], [(p.left, p.right, p.label) for p in valid],
        explain(train, "rules"), conf, out_dir / "work", corpus_records=dataset.records,
    )
    model.student.extra["bench_train_seconds"] = model.fit_info["result"].seconds
    return MatchModel.load(str(model.save(out_dir)), device="cpu", dtype=dtype)


def measure(model: MatchModel, pairs: Sequence[LabeledPair], test: Sequence[LabeledPair], args: argparse.Namespace) -> dict[str, Any]:
    student = model.student
    lefts, rights = [p.left for p in pairs], [p.right for p in pairs]
    n = len(pairs)
    policy = ScoringPolicy("matches", max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    t0 = time.monotonic()
    texts = student.serialize_pairs(lefts, rights)
    generated = student.generate(texts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    t_a = time.monotonic() - t0
    verdict_a = [parse_verdict(g)[0] for g in generated]

    t0 = time.monotonic()
    out_b = score_pairs(MatchModel(student, None, model.uri), lefts, rights, policy)
    t_b = time.monotonic() - t0

    # (c) as the issue defines it: the prefilter, then the student's verdicts (b).
    student_verdicts = copy.copy(student)
    student_verdicts.extra = {**student.extra, "verdict_by": "student"}
    t0 = time.monotonic()
    out_c = score_pairs(MatchModel(student_verdicts, model.feature_model, model.uri), lefts, rights, policy)
    t_c = time.monotonic() - t0
    # (c) as deployed: verdicts by whichever model the train job chose on validation.
    t0 = time.monotonic()
    out_deployed = score_pairs(model, lefts, rights, policy)
    t_deployed = time.monotonic() - t0

    # The scoring dtype (--dtype; auto: float32 on a CPU) against float32.
    texts_b = student.serialize_pairs(lefts, rights)
    fp32 = StudentPredictor.load(model.uri, device="cpu", dtype="float32")
    t0 = time.monotonic()
    p_fp32 = fp32.p_match(texts_b, batch_size=args.batch_size)
    t_fp32 = time.monotonic() - t0
    t0 = time.monotonic()
    p_auto = student.p_match(texts_b, batch_size=args.batch_size)
    t_auto = time.monotonic() - t0

    agreement = float(np.mean([a == b for a, b in zip(verdict_a, out_b["verdict"])]))
    # Greedy decoding picks "match" when it outscores "no match" at the first step, i.e.
    # p_match >= 0.5; (b) decides at the tuned threshold. Agreement at 0.5 isolates the
    # verdict-first mechanism from the threshold choice.
    agreement_at_half = float(np.mean([a == ("match" if p >= 0.5 else "no_match") for a, p in zip(verdict_a, out_b["p_match"])]))
    pos = [p for p in test if p.label == 1]
    p_student = student.p_match(student.serialize_pairs([p.left for p in pos], [p.right for p in pos]), batch_size=args.batch_size)
    passes = model.feature_model.passes_prefilter([p.left for p in pos], [p.right for p in pos])
    recall_student = float(np.mean(p_student >= student.threshold))
    recall_both = float(np.mean((p_student >= student.threshold) & passes))
    return {
        "pairs": n,
        "matches": int(sum(p.label for p in pairs)),
        "generate_all_pairs_per_s": n / t_a,
        "verdict_first_pairs_per_s": n / t_b,
        "prefilter_pairs_per_s": n / t_c,
        "verdict_first_over_generate_all": t_a / t_b,
        "prefilter_over_generate_all": t_a / t_c,
        "verdict_agreement": agreement,
        "verdict_agreement_at_0_5": agreement_at_half,
        "prefilter_then_deployed_verdicts_pairs_per_s": n / t_deployed,
        "deployed_over_generate_all": t_a / t_deployed,
        "deployed_verdict_by": model.verdict_by,
        "deployed_decided_by": out_deployed["decided_by"].value_counts().to_dict(),
        "rationales_generated_deployed": int(out_deployed["rationale"].notna().sum()),
        "dtype": str(next(student.model.parameters()).dtype).replace("torch.", ""),
        "verdicts_pairs_per_s_dtype": n / t_auto,
        "verdicts_pairs_per_s_float32": n / t_fp32,
        "p_match_max_abs_diff_vs_float32": float(np.max(np.abs(p_auto - p_fp32))),
        "verdict_agreement_vs_float32": float(np.mean((p_auto >= student.threshold) == (p_fp32 >= student.threshold))),
        "unreadable_generations": sum(v is None for v in verdict_a),
        "rationales_generated_b": int(out_b["rationale"].notna().sum()),
        "rationales_generated_c": int(out_c["rationale"].notna().sum()),
        "prefilter_pass_rate": float((out_c["decided_by"] != "prefilter").mean()),
        "test_matches": len(pos),
        "student_test_recall": recall_student,
        "prefilter_and_student_test_recall": recall_both,
        "prefilter_recall_loss": recall_student - recall_both,
        "prefilter_test_match_drop": float(1 - passes.mean()),
        "student_threshold": student.threshold,
        "student_valid_f1": student.extra.get("valid_f1"),
        "student_train_seconds": student.extra.get("bench_train_seconds"),
        "parameters": int(sum(p.numel() for p in student.model.parameters())),
    }


def _read_table(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row.pop("id"): row for row in csv.DictReader(fh)}


def spark_end_to_end(folder: Path, model_dir: Path, n_pairs: int, work: Path, seed: int) -> dict[str, Any]:
    """Score ``n_pairs`` synthetic candidates through Spark + Delta + the UDF; timings."""
    import pandas as pd
    from pyspark.sql import functions as F

    from em_spark.config import load_config
    from em_spark.pipeline import run_job
    from em_spark.session import get_spark
    from em_spark.tables import CANDIDATES, RECORDS, Lakehouse, pair_id

    left, right = _read_table(folder / "tableA.csv"), _read_table(folder / "tableB.csv")
    labeled = []
    for split in ("train", "valid", "test"):
        with (folder / f"{split}.csv").open() as fh:
            labeled += [(r["ltable_id"], r["rtable_id"], int(r["label"])) for r in csv.DictReader(fh)]
    rng = random.Random(seed)
    pos = [(l, r) for l, r, y in labeled if y == 1]
    neg = [(l, r) for l, r, y in labeled if y == 0]
    n_pos = len(pos)
    n_neg = round(n_pos * (1 - MATCH_RATE) / MATCH_RATE)
    lids, rids = list(left), list(right)
    half = min(len(neg), n_neg // 2)
    block = pos + rng.sample(neg, half) + [(rng.choice(lids), rng.choice(rids)) for _ in range(n_neg - half)]
    block = list(dict.fromkeys(block))  # one copy of the dataset's pairs, ~5% matches
    copies = -(-n_pairs // len(block))
    used_l, used_r = {l for l, _ in block}, {r for _, r in block}
    config = load_config(base={
        "lakehouse": {"root": str(work / "lake")},
        "spark": {"master": "local[2]"},
        "score": {"model_uri": str(model_dir), "rationale": "matches", "chunk_pairs": 250_000, "partitions": 16},
    })
    spark = get_spark(config.spark)
    lake = Lakehouse.from_config(spark, config)
    now = pd.Timestamp("2026-01-01")
    recs = [
        (side, f"{rid}#{c}", table[rid], "h", "bench", now)
        for c in range(copies)
        for side, table, ids in (("left", left, used_l), ("right", right, used_r))
        for rid in ids
    ]
    t0 = time.monotonic()
    lake.merge("records", spark.createDataFrame(pd.DataFrame(recs, columns=RECORDS.fieldNames()), RECORDS))
    cands = [(f"{l}#{c}", f"{r}#{c}") for c in range(copies) for l, r in block][:n_pairs]
    frame = pd.DataFrame(cands, columns=["left_id", "right_id"])
    frame.insert(0, "pair_id", [pair_id(l, r) for l, r in cands])
    frame["blockers"] = [["bench"]] * len(frame)
    frame["score"] = None
    frame["run_id"] = "bench"
    lake.merge("candidates", spark.createDataFrame(frame, CANDIDATES))
    setup_s = time.monotonic() - t0
    t0 = time.monotonic()
    run = run_job("score", config, lake)
    seconds = time.monotonic() - t0
    by = {r["decided_by"]: r["count"] for r in lake.read("predictions").groupBy("decided_by").count().collect()}
    rationales = lake.read("predictions").where(F.col("rationale").isNotNull()).count()
    return {
        "pairs": len(cands),
        "records": len(recs),
        "seconds": seconds,
        "pairs_per_s": len(cands) / seconds,
        "setup_seconds": setup_s,
        "decided_by": by,
        "rationales": rationales,
        "run_counts": run.counts,
        "run_checks": run.checks,
        "spark": "local[2]",
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="em-spark bench scoring", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--pairs", type=int, default=400, help="synthetic candidate pairs per preset")
    p.add_argument("--dataset", default=str(Path(__file__).resolve().parents[3] / "shared/datasets/Structured-Walmart-Amazon"))
    p.add_argument("--presets", default="tiny,small")
    p.add_argument(
        "--train-minutes", default="3",
        help="training budget in minutes: one value for every preset, or one per preset in --presets order (5,20)",
    )
    p.add_argument(
        "--hard-shares", default="0.5,0",
        help="candidate mixes to time, comma-separated: the share of non-matches that are labeled (hard); "
             "the first mix fills the top-level 'presets'",
    )
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="score.dtype (default: auto)")
    p.add_argument("--spark-pairs", type=int, default=0, help="also score N candidates end to end through Spark")
    p.add_argument("--seed", type=int, default=13)
    return p


def _minutes_per_preset(text: str, presets: Sequence[str]) -> dict[str, float]:
    """``"5"`` -> 5 for every preset; ``"5,20"`` -> one budget per preset, in order."""
    values = [float(v) for v in text.split(",") if v.strip()]
    if len(values) == 1:
        values *= len(presets)
    if len(values) != len(presets):
        raise SystemExit(f"--train-minutes: {len(values)} budgets for {len(presets)} presets ({','.join(presets)})")
    return dict(zip(presets, values))


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    folder = Path(args.dataset)
    dataset = load_dataset(folder)
    triples = {s: [(p.left, p.right, p.label) for p in dataset.splits[s]] for s in ("train", "valid")}
    # The feature model as the train job fits it, for the report (each preset's MatchModel
    # fits its own on the same pairs and seed).
    feature_model = fit_prefilter(triples["train"], triples["valid"], seed=args.seed)
    test = dataset.splits["test"]
    shares = [float(h) for h in args.hard_shares.split(",") if h.strip()]
    mixes = {h: synthetic_pairs(test, args.pairs, h, args.seed) for h in shares}
    report: dict[str, Any] = {
        "dataset": folder.name,
        "match_rate": MATCH_RATE,
        "hard_share": shares[0],
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "prefilter_threshold": feature_model.prefilter_threshold,
        "prefilter_valid": feature_model.valid_metrics,
        "presets": {},
        "mixes": [{"hard_share": h, "presets": {}} for h in shares],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "gpu": torch.cuda.is_available()},
    }
    presets = [s for s in args.presets.split(",") if s]
    minutes = _minutes_per_preset(args.train_minutes, presets)
    with tempfile.TemporaryDirectory(prefix="em-bench-score-") as work:
        for preset in presets:
            model_dir = Path(work) / preset
            model = train_preset(preset, dataset, minutes[preset], model_dir, args.seed, args.dtype)
            for mix in report["mixes"]:
                mix["presets"][preset] = result = measure(model, mixes[mix["hard_share"]], test, args)
                print(
                    f"scoring [{preset}, hard share {mix['hard_share']}]: (a) {result['generate_all_pairs_per_s']:.1f} "
                    f"(b) {result['verdict_first_pairs_per_s']:.1f} (c) {result['prefilter_pairs_per_s']:.1f} pairs/s, "
                    f"prefilter pass rate {result['prefilter_pass_rate']:.3f}, agreement {result['verdict_agreement']:.3f}, "
                    f"recall loss {result['prefilter_recall_loss']:.3f}",
                    flush=True,
                )
            report["presets"][preset] = report["mixes"][0]["presets"][preset]
            if args.spark_pairs and preset == "tiny":
                report["spark_end_to_end"] = spark_end_to_end(folder, model_dir, args.spark_pairs, Path(work), args.seed)
                print(f"scoring [spark]: {report['spark_end_to_end']}", flush=True)
    report["seconds"] = time.monotonic() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(f"scoring: wrote {out}")
    return 0
