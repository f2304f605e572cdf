"""Prefilter benchmark: what the feature model's prefilter passes on candidate-like pairs.

The feature model (em_spark.features.fit_prefilter) is trained on labeled pairs, whose
non-matches are the hard ones a blocker once kept. Candidates scored in production are
mostly easier. This script fits it with and without random cross pairs of the training
records as extra non-matches (``random_negatives`` 1 and 0: the baseline, same run, same
seeds) and reports, on each dataset's test split:

- ``f1``: the feature model's test F1 at its validation-F1 threshold (its ``features``
  verdicts);
- ``test_recall``: the share of test matches at or above the prefilter threshold;
- pass rates (the share sent on to the student) of the labeled test non-matches, of random
  cross pairs of test records, and of blocker-style non-matches: each test left record's
  10 nearest test right records by TF-IDF character 3-gram cosine, gold pairs removed.

    .venv/bin/python benchmarks/prefilter_candidates.py --out benchmarks/results/prefilter_candidates.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from em_spark.bench.matching import LabeledPair, load_dataset
from em_spark.features import fit_prefilter
from em_spark.values import clean_value

DATASETS = "Structured-Walmart-Amazon,Textual-Abt-Buy,Structured-Amazon-Google,Structured-DBLP-ACM"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _text(record: dict) -> str:
    return " ".join(clean_value(v) or "" for v in record.values())


def blocked_negatives(test: list[LabeledPair], k: int = 10) -> tuple[list, list]:
    """Each test left record's ``k`` nearest test right records (TF-IDF char 3-grams), minus gold."""
    lefts = list({id(p.left): p.left for p in test}.values())
    rights = list({id(p.right): p.right for p in test}.values())
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True)
    vectorizer.fit([_text(r) for r in lefts + rights])
    similarity = (vectorizer.transform([_text(r) for r in lefts]) @ vectorizer.transform([_text(r) for r in rights]).T).toarray()
    gold = {(id(p.left), id(p.right)) for p in test if p.label == 1}
    out_l, out_r = [], []
    for i, row in enumerate(np.argsort(-similarity, axis=1)[:, :k]):
        for j in row:
            if (id(lefts[i]), id(rights[j])) not in gold:
                out_l.append(lefts[i])
                out_r.append(rights[j])
    return out_l, out_r


def measure(folder: Path, seeds: list[int]) -> dict:
    dataset = load_dataset(folder)
    triples = {s: [(p.left, p.right, p.label) for p in dataset.splits[s]] for s in ("train", "valid")}
    test = dataset.splits["test"]
    y = np.array([p.label for p in test])
    rng = random.Random(0)
    random_l = [rng.choice(test).left for _ in range(2000)]
    random_r = [rng.choice(test).right for _ in range(2000)]
    blocked_l, blocked_r = blocked_negatives(test)
    runs: dict[str, list[dict]] = {"random_negatives_1": [], "random_negatives_0": []}
    for seed in seeds:
        for ratio in (1.0, 0.0):
            t0 = time.monotonic()
            feature_model = fit_prefilter(triples["train"], triples["valid"], seed=seed, random_negatives=ratio)
            fit_seconds = time.monotonic() - t0
            p = feature_model.predict_proba([q.left for q in test], [q.right for q in test])
            predicted = p >= feature_model.f1_threshold
            passed = feature_model.passes_prefilter([q.left for q in test], [q.right for q in test])
            runs[f"random_negatives_{ratio:.0f}"].append({
                "seed": seed,
                "f1": float(2 * (predicted & (y == 1)).sum() / (predicted.sum() + y.sum())),
                "test_recall": float(passed[y == 1].mean()),
                "pass_labeled_non_matches": float(passed[y == 0].mean()),
                "pass_random_pairs": float(np.mean(feature_model.passes_prefilter(random_l, random_r))),
                "pass_blocked_non_matches": float(np.mean(feature_model.passes_prefilter(blocked_l, blocked_r))),
                "prefilter_threshold": feature_model.prefilter_threshold,
                "fit_seconds": fit_seconds,
            })
    summary = {
        name: {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "seed"}
        for name, rows in runs.items()
    }
    return {"test_pairs": len(test), "blocked_non_matches": len(blocked_l), "runs": runs, "mean": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform()},
        "seeds": seeds,
        "datasets": {},
    }
    for name in args.datasets.split(","):
        report["datasets"][name] = result = measure(Path(args.shared) / name, seeds)
        for variant, mean in result["mean"].items():
            print(f"{name} {variant}: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
