"""``em-spark bench rationales``: what the student writes, held to the rationale checker.

For each dataset folder (DeepMatcher layout; ``demo`` is the embedded demo set) a student
is trained by the shipped recipe (the train defaults, rules teacher) on its train split;
on its test split (a seeded sample with ``--limit-test``) every pair gets a rationale for
the student's own verdict, generated three ways: ``free`` (greedy), ``quotes`` (quoted
spans constrained to the pair's values) and ``clauses`` (restricted to the rules
teacher's true explanations of the pair, as scoring decodes). For the rationales as
generated, before any fallback, it reports per decoding:

- the pass rate of the checker overall and of each check (em_spark.rationale.CHECKS),
  the repetition rate (share failing ``repeat``) and the mean length in words;
- agreement with the rules teacher's explanation of the same labeled pair (ROUGE-L F1,
  ``rouge-score``);
- generated pairs per second;

and five sample rationales with both records. Pure Python, no Spark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from em_spark.bench.matching import LabeledPair, StudentMatcher, load_dataset
from em_spark.rationale import CHECKS, rationale_failures
from em_spark.match_model import record_values
from em_spark.student.inference import parse_verdict
from em_spark.teacher.rules import explain_pair, explanation_candidates

SAMPLES = 5


def dataset_folder(name: str) -> Path:
    """``demo`` -> the embedded demo data; anything else is a folder."""
    return Path(str(files("em_spark") / "data" / "demo")) if name == "demo" else Path(name)


def rationale_stats(
    pairs: Sequence[LabeledPair], verdicts: Sequence[str], rationales: Sequence[str], seconds: float
) -> dict[str, Any]:
    """Checker pass rates, repetition, length, agreement with the teacher and speed."""
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"])
    failures = [
        rationale_failures(text, verdict, p.left, p.right) for p, verdict, text in zip(pairs, verdicts, rationales)
    ]
    n = max(len(pairs), 1)
    failed_checks = [{f.check for f in fails} for fails in failures]
    teacher = [explain_pair(p.left, p.right, p.label) for p in pairs]
    return {
        "pairs": len(pairs),
        "pass_rate": sum(not f for f in failures) / n,
        "check_pass_rate": {c: sum(c not in f for f in failed_checks) / n for c in CHECKS},
        "repetition_rate": sum("repeat" in f for f in failed_checks) / n,
        "mean_words": float(np.mean([len(t.split()) for t in rationales])) if rationales else 0.0,
        "rouge_l_vs_teacher": float(np.mean([rouge.score(t, r)["rougeL"].fmeasure for t, r in zip(teacher, rationales)]))
        if rationales
        else None,
        "seconds": seconds,
        "pairs_per_s": len(pairs) / max(seconds, 1e-9),
        "first_failure": [str(f[0]) if f else "ok" for f in failures],
    }


DECODINGS = ("free", "quotes", "clauses")


def generate(matcher: StudentMatcher, pairs: Sequence[LabeledPair], verdicts: Sequence[str], decoding: str,
             max_new_tokens: int) -> tuple[list[str], float]:
    """Rationales for the given verdicts (one generate call per verdict) and the seconds."""
    student = matcher.predictor
    texts = student.serialize_pairs([p.left for p in pairs], [p.right for p in pairs])
    out = [""] * len(pairs)
    t0 = time.monotonic()
    for said in ("match", "no_match"):
        rows = [i for i, v in enumerate(verdicts) if v == said]
        if not rows:
            continue
        sources = [record_values(pairs[i].left, pairs[i].right) for i in rows] if decoding == "quotes" else None
        candidates = (
            [explanation_candidates(pairs[i].left, pairs[i].right, int(said == "match")) for i in rows]
            if decoding == "clauses" else None
        )
        written = student.generate(
            [texts[i] for i in rows], max_new_tokens=max_new_tokens, batch_size=matcher.batch_size,
            verdict=said, sources=sources, candidates=candidates,
        )
        for i, text in zip(rows, written):
            out[i] = parse_verdict(text)[1]
    return out, time.monotonic() - t0


def bench_dataset(folder: Path, conf: Any, limit_test: int | None, max_new_tokens: int) -> dict[str, Any]:
    data = load_dataset(folder, {"test": limit_test})
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="em-bench-rationales-") as work:
        matcher = StudentMatcher(data, conf, Path(work))
    train_seconds = time.monotonic() - t0
    pairs = data.splits["test"]
    scores = matcher.score(pairs)["scores"]
    verdicts = ["match" if s >= matcher.info["threshold"] else "no_match" for s in scores]
    report: dict[str, Any] = {
        "dataset": "demo" if folder == dataset_folder("demo") else folder.name,
        "train_seconds": train_seconds,
        "threshold": matcher.info["threshold"],
        "valid_f1": matcher.info["valid_f1"],
        "verdicts": {v: verdicts.count(v) for v in ("match", "no_match")},
        "verdict_accuracy": float(np.mean([(v == "match") == bool(p.label) for v, p in zip(verdicts, pairs)])),
    }
    written: dict[str, list[str]] = {}
    for decoding in DECODINGS:
        written[decoding], seconds = generate(matcher, pairs, verdicts, decoding, max_new_tokens)
        report[decoding] = rationale_stats(pairs, verdicts, written[decoding], seconds)
    for decoding in ("quotes", "clauses"):
        report[f"{decoding}_time_ratio"] = report[decoding]["seconds"] / max(report["free"]["seconds"], 1e-9)
    picks = np.random.default_rng(13).choice(len(pairs), size=min(SAMPLES, len(pairs)), replace=False)
    report["samples"] = [
        {
            "left": pairs[i].left, "right": pairs[i].right, "label": pairs[i].label, "verdict": verdicts[i],
            **{decoding: written[decoding][i] for decoding in DECODINGS},
            "checks": {decoding: report[decoding]["first_failure"][i] for decoding in DECODINGS},
        }
        for i in sorted(int(x) for x in picks)
    ]
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="em-spark bench rationales", description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["demo"], help="dataset folders (DeepMatcher layout) or 'demo'")
    p.add_argument("--limit-test", type=int, default=200, help="a seeded sample of N test pairs per set")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: score.max_new_tokens")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="any train.* setting, e.g. --set budget_minutes=1 (repeatable)",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from em_spark.config import load_config

    config = load_config(overrides=[f"train.{o}" for o in args.overrides])
    max_new_tokens = args.max_new_tokens or config.score.max_new_tokens
    reports = []
    load_before = os.getloadavg()[0]
    for name in args.data:
        report = bench_dataset(dataset_folder(name), config.train, args.limit_test, max_new_tokens)
        reports.append(report)
        print(
            f"rationales {report['dataset']}: "
            + "; ".join(
                f"{d} pass {report[d]['pass_rate']:.1%} repeat {report[d]['repetition_rate']:.1%} "
                f"ROUGE-L {report[d]['rouge_l_vs_teacher']:.3f} {report[d]['pairs_per_s']:.1f} pairs/s"
                for d in DECODINGS
            ),
            flush=True,
        )
    out = {
        "command": "em-spark bench rationales " + " ".join(argv if argv is not None else []),
        "date": time.strftime("%Y-%m-%d"),
        # Training runs on a wall-clock budget: other work on the machine means fewer steps.
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
        },
        "max_new_tokens": max_new_tokens,
        "train": config.train.model_dump(),
        "sets": reports,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0
