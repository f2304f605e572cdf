"""Synthetic entity tables for the blocking scale benchmark.

N entities (products of a brand, with a model code, a name, a city and a short
description) are written as two tables of perturbed copies plus the gold pairs:

- tableA.csv holds entities 0 .. n-1, tableB.csv entities (1 - overlap) * n .. ; the
  entities in both are the gold (gold.csv; also train.csv so that
  ``em-spark bench blocking --dataset DIR`` reads it, with empty valid/test splits);
- with ``--labels SHARE``, train.csv holds that share of the gold pairs and valid.csv half
  as many, each positive with three non-matches (a right record of the same brand, one
  sharing a name word, a random one: the kinds of non-gold pairs blocking yields), and
  test.csv the remaining gold pairs (the held-out truth); the tables stay the same;
- each copy is perturbed: typos (a character dropped, doubled, swapped or replaced),
  dropped and swapped tokens, abbreviations, missing values, a value moved to another
  field (reordered fields), and one token ("original") shared by 30% of the records;
- word frequencies are Zipf-like, so common words are heavy hitters as in real data.

    .venv/bin/python benchmarks/synthetic.py --records 100000 --out /tmp/synth-100k
    (--records is the total of both tables: 100000 -> 50000 x 50000; add --labels 0.05
    for labeled train / valid splits)
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import numpy as np

SHARED_TOKEN = "original"
SHARED_SHARE = 0.30
COLUMNS = ["id", "name", "brand", "code", "city", "description"]
ABBREVIATIONS = {
    "international": "intl", "company": "co", "corporation": "corp", "professional": "pro",
    "edition": "ed", "black": "blk", "white": "wht", "wireless": "wl", "limited": "ltd",
    "gigabyte": "gb", "street": "st", "avenue": "ave", "digital": "dig", "portable": "port",
}
CATEGORY_WORDS = list(ABBREVIATIONS) + [
    "camera", "phone", "laptop", "speaker", "headphones", "monitor", "printer", "router", "tablet",
    "keyboard", "mouse", "charger", "cable", "drive", "lens", "battery", "adapter", "case", "stand",
    "silver", "red", "blue", "green", "mini", "max", "plus", "ultra", "series", "kit", "bundle",
]


def pseudo_words(rng: random.Random, n: int) -> list[str]:
    """n distinct pronounceable words (so that typos look like typos)."""
    onsets = ["b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "gr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    out: set[str] = set()
    while len(out) < n:
        syllables = rng.choice((2, 2, 3, 3, 4))
        out.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syllables)) + rng.choice(["", "n", "r", "x", "s"]))
    return sorted(out)


class Generator:
    def __init__(self, seed: int, vocabulary: int = 40_000, brands: int = 8_000, cities: int = 3_000):
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        words = pseudo_words(self.rng, vocabulary + brands + cities)
        self.rng.shuffle(words)  # frequency rank must not follow the alphabet
        self.words = words[:vocabulary] + CATEGORY_WORDS
        self.brands = words[vocabulary : vocabulary + brands]
        self.cities = words[vocabulary + brands :]
        # Zipf-like weights: a few words are in a large share of the names.
        ranks = np.arange(1, len(self.words) + 1)
        self.word_p = (1.0 / ranks**1.05) / np.sum(1.0 / ranks**1.05)
        brand_ranks = np.arange(1, brands + 1)
        self.brand_p = (1.0 / brand_ranks**0.9) / np.sum(1.0 / brand_ranks**0.9)

    def entities(self, n: int) -> list[dict[str, str]]:
        """The clean entities (vectorized draws: a million takes seconds)."""
        name_len = self.np.integers(2, 6, size=n)
        name_words = self.np.choice(len(self.words), size=(n, 5), p=self.word_p)
        brand = self.np.choice(len(self.brands), size=n, p=self.brand_p)
        city = self.np.integers(0, len(self.cities), size=n)
        desc_words = self.np.choice(len(self.words), size=(n, 6), p=self.word_p)
        letters = self.np.integers(0, 26, size=(n, 2))
        digits = self.np.integers(100, 100_000, size=n)
        out = []
        for i in range(n):
            out.append(
                {
                    "name": " ".join(self.words[w] for w in name_words[i, : name_len[i]]),
                    "brand": self.brands[brand[i]],
                    "code": f"{chr(97 + letters[i, 0])}{chr(97 + letters[i, 1])}{digits[i]}",
                    "city": self.cities[city[i]],
                    "description": " ".join(self.words[w] for w in desc_words[i]),
                }
            )
        return out

    def typo(self, word: str) -> str:
        if len(word) < 3:
            return word
        i = self.rng.randrange(len(word) - 1)
        kind = self.rng.randrange(4)
        if kind == 0:
            return word[:i] + word[i + 1 :]
        if kind == 1:
            return word[:i] + word[i] + word[i:]
        if kind == 2:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        return word[:i] + chr(97 + self.rng.randrange(26)) + word[i + 1 :]

    def perturb_text(self, text: str) -> str:
        tokens = text.split()
        r = self.rng.random
        tokens = [self.typo(t) if r() < 0.12 else t for t in tokens]
        tokens = [ABBREVIATIONS.get(t, t) if r() < 0.5 else t for t in tokens]
        if len(tokens) > 2 and r() < 0.2:
            del tokens[self.rng.randrange(len(tokens))]
        if len(tokens) > 1 and r() < 0.2:
            i = self.rng.randrange(len(tokens) - 1)
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        return " ".join(tokens)

    def copy(self, entity: dict[str, str]) -> dict[str, str]:
        r = self.rng.random
        rec = {k: self.perturb_text(v) if k in ("name", "description") else v for k, v in entity.items()}
        if r() < 0.1:
            rec["code"] = rec["code"].upper() if r() < 0.5 else rec["code"][:2] + "-" + rec["code"][2:]
        if r() < 0.05:
            rec["brand"] = self.typo(rec["brand"])
        for field in ("brand", "code", "city", "description"):
            if r() < 0.1:
                rec[field] = ""  # missing value
        if r() < 0.1:
            # Reordered fields: the brand (or code) written into the name instead.
            field = "brand" if r() < 0.5 else "code"
            rec["name"] = f"{rec[field]} {rec['name']}".strip()
            rec[field] = ""
        if r() < SHARED_SHARE:
            rec["name"] = f"{rec['name']} {SHARED_TOKEN}"
        return rec


def generate(records: int, out: Path, seed: int = 1, overlap: float = 0.8, labels: float = 0.0) -> dict[str, int]:
    """Write tableA.csv / tableB.csv (records / 2 rows each) and the gold pairs (with
    ``labels`` > 0: labeled train / valid splits, see the module docstring)."""
    t0 = time.monotonic()
    per_table = records // 2
    shift = int(round(per_table * (1 - overlap)))
    gen = Generator(seed)
    entities = gen.entities(per_table + shift)
    out.mkdir(parents=True, exist_ok=True)
    # Row order and ids are shuffled per table, so neither position nor id gives the answer.
    ids_a = gen.np.permutation(per_table)
    ids_b = gen.np.permutation(per_table) + 10_000_000
    a_of = {}
    rows_a: dict[str, dict[str, str]] = {}
    rows_b: dict[str, dict[str, str]] = {}
    with (out / "tableA.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for e in range(per_table):
            a_of[e] = str(ids_a[e])
            # One copy per field, as the first version drew them (the tables stay as they were).
            rows_a[a_of[e]] = {c: gen.copy(entities[e])[c] for c in COLUMNS[1:]}
            w.writerow([a_of[e]] + [rows_a[a_of[e]][c] for c in COLUMNS[1:]])
    gold = []
    with (out / "tableB.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for j, e in enumerate(range(shift, shift + per_table)):
            bid = str(ids_b[j])
            rows_b[bid] = {c: gen.copy(entities[e])[c] for c in COLUMNS[1:]}
            w.writerow([bid] + [rows_b[bid][c] for c in COLUMNS[1:]])
            if e in a_of:
                gold.append((a_of[e], bid))
    header = "ltable_id,rtable_id,label\n"
    (out / "gold.csv").write_text(header + "".join(f"{a},{b},1\n" for a, b in gold))
    splits = labeled_splits(gold, rows_a, rows_b, labels, seed) if labels > 0 else {
        "train": [(a, b, 1) for a, b in gold], "valid": [], "test": []}
    for split, rows in splits.items():
        (out / f"{split}.csv").write_text(header + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return {"records": 2 * per_table, "gold_pairs": len(gold), **{f"{k}_pairs": len(v) for k, v in splits.items()},
            "seconds": round(time.monotonic() - t0, 1)}


def labeled_splits(
    gold: list[tuple[str, str]], rows_a: dict[str, dict[str, str]], rows_b: dict[str, dict[str, str]],
    share: float, seed: int,
) -> dict[str, list[tuple[str, str, int]]]:
    """train (``share`` of the gold) and valid (half that) with three non-matches per
    positive; test: the other gold pairs, all positive (the held-out truth)."""
    rng = random.Random(seed + 1)  # its own stream: the tables do not depend on the labels
    order = list(gold)
    rng.shuffle(order)
    n_train = int(len(order) * share)
    n_valid = int(len(order) * share / 2)
    gold_set = set(gold)
    b_ids = list(rows_b)
    by_brand: dict[str, list[str]] = {}
    by_word: dict[str, list[str]] = {}
    for bid, rec in rows_b.items():
        if rec["brand"]:
            by_brand.setdefault(rec["brand"], []).append(bid)
        for word in set(rec["name"].split()):
            by_word.setdefault(word, []).append(bid)

    def negatives(a: str) -> list[tuple[str, str, int]]:
        rec = rows_a[a]
        pools = [by_brand.get(rec["brand"], b_ids), by_word.get(rng.choice(rec["name"].split() or [""]), b_ids), b_ids]
        out = []
        for pool in pools:
            for _ in range(5):  # a few tries to miss the record's own match
                b = rng.choice(pool)
                if (a, b) not in gold_set:
                    out.append((a, b, 0))
                    break
        return out

    def labeled(pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
        rows = []
        for a, b in pairs:
            rows += [(a, b, 1)] + negatives(a)
        return rows

    return {"train": labeled(order[:n_train]), "valid": labeled(order[n_train : n_train + n_valid]),
            "test": [(a, b, 1) for a, b in order[n_train + n_valid :]]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, required=True, help="both tables together")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--overlap", type=float, default=0.8, help="share of entities in both tables")
    p.add_argument("--labels", type=float, default=0.0, help="share of the gold in a labeled train split")
    args = p.parse_args()
    print(generate(args.records, Path(args.out), args.seed, args.overlap, args.labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
