"""What lexical blocking can reach on WDC-Products at about 20 candidates per left record.

A scikit-learn check outside the block job (dense similarity matrices: WDC's 4,575 x
4,379 fits in memory): sublinear TF-IDF cosine over chosen attributes, candidates taken as
the top k from both sides, by one global score threshold, or relative to each record's best
score; beside them the packaged sentence embedding (all-MiniLM-L6-v2, the block job's
optional ``embedding`` blocker) and its mean with title-word TF-IDF. A record's own copy (the same offer stands in both tables under one id) is never a
candidate. Pair completeness is measured on the labeled positives of train + valid + test,
as in ``em-spark bench blocking``.

    .venv/bin/python benchmarks/wdc_lexical_ceiling.py --out benchmarks/results/wdc_lexical_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASET = ROOT.parent / "shared" / "datasets" / "WDC-Products-80cc20rnd050un"
ALL = ["brand", "title", "description", "price", "pricecurrency", "specTableContent"]
METHODS = {
    "words, all attributes": (ALL, "word", (1, 1)),
    "words, title": (["title"], "word", (1, 1)),
    "char 3-grams, title": (["title"], "char_wb", (3, 3)),
    "words, brand + title + specTableContent": (["brand", "title", "specTableContent"], "word", (1, 1)),
    "MiniLM embedding, title": (["title"], "embedding", None),
    "mean of MiniLM and words, title": (["title"], "embedding+word", None),
}


def similarity(a: pd.DataFrame, b: pd.DataFrame, fields: list[str], analyzer: str, ngrams: tuple[int, int] | None) -> np.ndarray:
    text_a, text_b = a[fields].agg(" ".join, axis=1), b[fields].agg(" ".join, axis=1)
    if analyzer == "embedding+word":
        return (similarity(a, b, fields, "embedding", None) + similarity(a, b, fields, "word", (1, 1))) / 2
    if analyzer == "embedding":
        from em_spark.blocking.embedding import PACKAGED_MODEL, load_model

        encoder = load_model(PACKAGED_MODEL)
        vec_a, vec_b = (encoder.encode(t.tolist(), batch_size=64, normalize_embeddings=True) for t in (text_a, text_b))
        return vec_a @ vec_b.T
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True).fit(pd.concat([text_a, text_b]))
    return (normalize(vectorizer.transform(text_a)) @ normalize(vectorizer.transform(text_b)).T).toarray()


def completeness(chosen: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return {"pair_completeness": float((chosen & gold).sum() / gold.sum()),
            "candidates_per_left": float(chosen.sum() / chosen.shape[0])}


def top_k_both_sides(sim: np.ndarray, k: int) -> np.ndarray:
    chosen = np.zeros(sim.shape, dtype=bool)
    rows = np.argsort(-sim, axis=1)[:, :k]
    chosen[np.arange(sim.shape[0])[:, None], rows] = True
    cols = np.argsort(-sim, axis=0)[:k, :]
    chosen[cols, np.arange(sim.shape[1])[None, :]] = True
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(DATASET))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    folder = Path(args.dataset)
    a, b = (pd.read_csv(folder / f"table{s}.csv", dtype=str, keep_default_na=False) for s in "AB")
    labeled = pd.concat([pd.read_csv(folder / f"{s}.csv", dtype=str) for s in ("train", "valid", "test")])
    positives = labeled[labeled.label == "1"]
    row_a, row_b = {v: i for i, v in enumerate(a.id)}, {v: i for i, v in enumerate(b.id)}
    gold = np.zeros((len(a), len(b)), dtype=bool)
    gold[[row_a[x] for x in positives.ltable_id], [row_b[x] for x in positives.rtable_id]] = True
    own_copy = [(i, row_b[x]) for i, x in enumerate(a.id) if x in row_b]
    report: dict = {"dataset": folder.name, "gold_pairs": int(gold.sum()), "own_copies_removed": len(own_copy), "methods": {}}
    for name, (fields, analyzer, ngrams) in METHODS.items():
        sim = similarity(a, b, fields, analyzer, ngrams)
        sim[tuple(np.array(own_copy).T)] = -1.0
        results: dict = {f"top_{k}_both_sides": completeness(top_k_both_sides(sim, k), gold) for k in (5, 10, 15, 20)}
        ranked = np.sort(sim.ravel())[::-1]
        for per_left in (10, 15, 20):
            results[f"global_threshold_{per_left}_per_left"] = completeness(sim >= ranked[per_left * len(a)], gold)
        for share in (0.9, 0.8, 0.7, 0.6):
            near_best = (sim >= share * sim.max(axis=1, keepdims=True)) | (sim >= share * sim.max(axis=0, keepdims=True))
            results[f"relative_{share}_of_best"] = completeness(near_best, gold)
        report["methods"][name] = results
        print(name, {k: round(v["pair_completeness"], 3) for k, v in results.items()}, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
