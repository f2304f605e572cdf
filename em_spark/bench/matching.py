"""``em-spark bench matching``: train a matcher on one dataset folder, test on another.

Pure Python (no Spark): a DeepMatcher-layout folder (tableA.csv, tableB.csv, train.csv,
valid.csv, test.csv) is read with ``csv``; explanations come from the offline ``rules``
teacher; the student trains on DIR's train split (valid for early stopping and the
threshold) and is tested on the other folder's test split, each record serialized with
its own column names (so cross-schema pairs need no alignment). ``--model features`` is
the feature model (em_spark.features). Several ``--test`` folders (with one
``--out`` each) share one training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from em_spark.errors import InputError

# Columns that hold the answer (WDC's cluster ids) and must never reach a matcher.
ANSWER_COLUMNS = {"cluster_id"}
SPLITS = ("train", "valid", "test")
SAMPLE_RATIONALES = 3


@dataclass
class LabeledPair:
    left: dict[str, str]
    right: dict[str, str]
    label: int


@dataclass
class MatchingDataset:
    name: str
    columns: list[str]
    records: list[dict[str, str]]
    splits: dict[str, list[LabeledPair]]


def _read_table(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise InputError(f"{path}: no 'id' column")
        columns = [c for c in reader.fieldnames if c != "id" and c not in ANSWER_COLUMNS]
        return columns, {row["id"]: {c: row[c] or "" for c in columns} for row in reader}


def load_dataset(folder: str | Path, limits: dict[str, int] | None = None) -> MatchingDataset:
    """Tables and labeled splits of a DeepMatcher-layout folder.

    ``limits[split]`` keeps a seeded random sample of that many rows, in file order: some
    split files are sorted by label (WDC-Products' valid.csv opens with 500 matches), so
    their first rows would not be a sample.
    """
    root = Path(folder)
    columns, left = _read_table(root / "tableA.csv")
    _, right = _read_table(root / "tableB.csv")
    splits: dict[str, list[LabeledPair]] = {}
    for split in SPLITS:
        path = root / f"{split}.csv"
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        pairs = []
        with path.open(encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    pair = LabeledPair(left[row["ltable_id"]], right[row["rtable_id"]], int(row["label"]))
                except (KeyError, ValueError) as exc:
                    raise InputError(f"{path}: row {n}: bad or unknown id/label ({exc})") from None
                pairs.append(pair)
        limit = (limits or {}).get(split)
        if limit and limit < len(pairs):
            pairs = [pairs[i] for i in sorted(random.Random(split).sample(range(len(pairs)), limit))]
        splits[split] = pairs
    return MatchingDataset(root.name, columns, list(left.values()) + list(right.values()), splits)


def explain(pairs: Sequence[LabeledPair], teacher: str) -> list[str]:
    if teacher != "rules":
        raise InputError(f"--teacher {teacher!r}: the offline bench supports 'rules' only")
    from em_spark.teacher.rules import explain_pair

    return [explain_pair(p.left, p.right, p.label, None) for p in pairs]


class FeaturesMatcher:
    """The feature model, fitted on a dataset's train + valid splits."""

    def __init__(self, train: MatchingDataset, seed: int) -> None:
        from em_spark.features import fit_prefilter

        t0 = time.monotonic()
        self.feature_model = fit_prefilter(_triples(train.splits["train"]), _triples(train.splits["valid"]), seed=seed)
        self.info: dict[str, Any] = {
            "threshold": self.feature_model.f1_threshold,
            "valid_f1": self.feature_model.valid_metrics["f1"],
            "train_seconds": time.monotonic() - t0,
        }

    def score(self, pairs: Sequence[LabeledPair]) -> dict[str, Any]:
        t0 = time.monotonic()
        scores, prefilter_scores = self.feature_model.scores([p.left for p in pairs], [p.right for p in pairs])
        passes = prefilter_scores >= self.feature_model.prefilter_threshold
        labels = np.asarray([p.label for p in pairs], dtype=bool)
        return {
            "test_seconds": time.monotonic() - t0,
            "scores": scores,
            # What the same model would do as the scoring prefilter on these test pairs.
            "prefilter_recall": float(passes[labels].mean()) if labels.any() else None,
            "prefilter_pass_rate": float(passes.mean()) if len(passes) else None,
        }


class StudentMatcher:
    """A :class:`~em_spark.match_model.MatchModel` fitted on a dataset's train split (valid:
    early stopping, threshold, verdict model), as the train job fits it."""

    def __init__(self, train: MatchingDataset, conf: Any, work_dir: Path) -> None:
        from em_spark.match_model import MatchModel

        t0 = time.monotonic()
        self.model = MatchModel.fit(
            _triples(train.splits["train"]), _triples(train.splits["valid"]),
            explain(train.splits["train"], conf.teacher), conf, work_dir, corpus_records=train.records,
        )
        self.predictor = self.model.student
        self.batch_size = conf.eval_batch_size
        result = self.model.fit_info["result"]
        self.info = {
            "threshold": result.threshold,
            "valid_f1": result.valid_f1,
            "train_seconds": time.monotonic() - t0,
            "history": result.history,
            "stopped_by": result.stopped_by,
            "steps": result.steps,
            "examples_seen": result.examples_seen,
            "examples_per_s": result.examples_seen / max(result.seconds, 1e-9),
            "label_only_fallbacks": result.label_only_fallbacks,
            "positive_weight": result.positive_weight,
            "parameters": result.parameters,
        }
        if self.model.feature_model is not None:
            # What the train job ships (train.verdict_by: auto): the feature model's
            # verdicts where it validates strictly better than the student.
            self.info["verdict_by_auto"] = self.model.verdict_by
            self.info["features_valid_f1"] = self.model.feature_model.valid_metrics["f1"]

    def score(self, pairs: Sequence[LabeledPair]) -> dict[str, Any]:
        lefts, rights = [p.left for p in pairs], [p.right for p in pairs]
        texts = self.predictor.serialize_pairs(lefts, rights)
        t0 = time.monotonic()
        scores = self.predictor.p_match(texts, batch_size=self.batch_size)
        out: dict[str, Any] = {}
        if self.model.feature_model is not None:
            # As shipped: the verdict model's scores without the prefilter (a test split
            # is labeled pairs, not candidates).
            out["auto_scores"] = self.model.verdict_scores(lefts, rights, self.batch_size)
            out["auto_threshold"] = self.model.threshold
        return {
            **out,
            "test_seconds": time.monotonic() - t0,
            "scores": scores,
            "sample_outputs": self.predictor.generate(texts[:SAMPLE_RATIONALES], max_new_tokens=128),
            "sample_inputs": texts[:SAMPLE_RATIONALES],
        }


def _triples(pairs: Sequence[LabeledPair]) -> list[tuple[dict[str, str], dict[str, str], int]]:
    return [(p.left, p.right, p.label) for p in pairs]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="em-spark bench matching", description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="dataset folder to train on (train + valid)")
    p.add_argument(
        "--test", required=True, nargs="+",
        help="dataset folder(s) whose test split is scored; one training serves them all",
    )
    p.add_argument("--mode", default="explained", choices=["explained", "label_only", "shuffled", "truncated"])
    p.add_argument("--teacher", default="rules")
    p.add_argument("--model", default="tiny", help="tiny | small | hub id or path | features (the feature model)")
    p.add_argument("--budget-minutes", type=float, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--limit-train", type=int, default=None, help="a seeded sample of N train pairs")
    p.add_argument("--limit-valid", type=int, default=None, help="a seeded sample of N valid pairs (default: N/3 of --limit-train)")
    p.add_argument("--limit-test", type=int, default=None, help="a seeded sample of N test pairs")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="any train.* setting, e.g. --set batch_size=32 (repeatable)",
    )
    p.add_argument("--out", required=True, nargs="+", help="JSON file to write, one per --test folder, in order")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from em_spark.config import load_config

    overrides = [f"train.{o}" for o in args.overrides] + [
        f"train.mode={args.mode}", f"train.teacher={args.teacher}", f"train.seed={args.seed}",
    ]
    if args.model != "features":
        overrides.append(f"train.model={args.model}")
    if args.budget_minutes is not None:
        overrides.append(f"train.budget_minutes={args.budget_minutes}")
    if args.max_epochs is not None:
        overrides.append(f"train.max_epochs={args.max_epochs}")
    conf = load_config(overrides=overrides).train
    if len(args.out) != len(args.test):
        raise InputError(f"--out: {len(args.out)} file(s) for {len(args.test)} --test folder(s); give one per folder")
    limits = {"train": args.limit_train, "valid": args.limit_valid or (args.limit_train and max(20, args.limit_train // 3))}
    t0 = time.monotonic()
    train = load_dataset(args.train, limits)
    tests = [load_dataset(folder, {"test": args.limit_test}) for folder in args.test]
    with tempfile.TemporaryDirectory(prefix="em-bench-") as work:
        matcher = FeaturesMatcher(train, args.seed) if args.model == "features" else StudentMatcher(train, conf, Path(work))
    trained_s = time.monotonic() - t0
    from em_spark.student.training import scores_at

    for folder, test, out_file in zip(args.test, tests, args.out):
        pairs = test.splits["test"]
        out = {**matcher.info, **matcher.score(pairs)}
        labels = np.asarray([p.label for p in pairs], dtype=np.int64)
        scores = np.asarray(out.pop("scores"), dtype=np.float64)
        if "auto_scores" in out:
            # The student alone is "f1"; this is the model verdict_by: auto would ship.
            auto_scores, auto_threshold = np.asarray(out.pop("auto_scores")), out.pop("auto_threshold")
            out["as_shipped"] = {
                "verdict_by": out["verdict_by_auto"], "threshold": auto_threshold,
                **scores_at(labels, auto_scores, auto_threshold),
            }
        report = {
            "train": str(args.train),
            "test": str(folder),
            "model": args.model,
            "mode": args.mode if args.model != "features" else None,
            "teacher": args.teacher if args.model != "features" else None,
            "seed": args.seed,
            **scores_at(labels, scores, out["threshold"]),
            "test_pairs": int(labels.size),
            "test_positives": int(labels.sum()),
            "train_pairs": len(train.splits["train"]),
            "valid_pairs": len(train.splits["valid"]),
            **out,
            "budget_minutes": conf.budget_minutes if args.model != "features" else None,
            "max_epochs": conf.max_epochs if args.model != "features" else None,
            # loading + training + scoring this test split: each file counts a shared training in full
            "seconds": trained_s + out["test_seconds"],
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            # In test-split order: paired comparisons of two runs on the same pairs (bootstrap).
            "test_scores": [round(float(s), 6) for s in scores],
        }
        out_path = Path(out_file)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(
            f"matching {Path(args.train).name} -> {Path(folder).name} [{args.model}"
            f"{'/' + args.mode if args.model != 'features' else ''}]: F1 {report['f1']:.4f} "
            f"P {report['precision']:.4f} R {report['recall']:.4f} in {report['seconds']:.0f}s -> {out_path}"
        )
    return 0
