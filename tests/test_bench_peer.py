"""The peer benchmark's metrics (benchmarks/peer_splink.py): pure functions, no Splink needed."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from conftest import REPO


def benchmark_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A script of benchmarks/ as a module (they import each other by their file names)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module(name)


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return benchmark_module("peer_splink", monkeypatch)


GOLD = {("a1", "b1"), ("a2", "b2"), ("a3", "b3"), ("a4", "b4")}


def test_pair_completeness_and_at_a_budget(peer):
    ranked = [("a1", "b1"), ("a1", "b9"), ("a2", "b2"), ("a3", "b3"), ("a5", "b5")]
    assert peer.pair_completeness(ranked, GOLD) == 0.75
    assert peer.completeness_at(ranked, GOLD, 2) == 0.25
    assert peer.completeness_at(ranked, GOLD, 100) == 0.75
    assert peer.pair_completeness(ranked, set()) is None


def test_precision_recall_f1_leaves_labeled_pairs_out(peer):
    predicted = [("a1", "b1"), ("a2", "b2"), ("a2", "b9"), ("a1", "b1")]
    full = peer.precision_recall_f1(predicted, GOLD)
    assert (full["predicted"], full["true"], full["true_positives"]) == (3, 4, 2)
    assert full["precision"] == round(2 / 3, 4) and full["recall"] == 0.5
    assert full["f1"] == round(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 4)
    # A labeled pair counts on neither side: a1-b1 (true) and a2-b9 (false) leave.
    held = peer.precision_recall_f1(predicted, GOLD, {("a1", "b1"), ("a2", "b9")})
    assert (held["predicted"], held["true"], held["true_positives"]) == (1, 3, 1)
    assert held["precision"] == 1.0 and held["recall"] == round(1 / 3, 4)
    assert peer.precision_recall_f1([], GOLD)["f1"] == 0.0


def test_ratios_and_blocking_target(peer):
    ours = {"blocking_seconds": 30.0, "candidates": 800, "pair_completeness": 0.99, "f1": 0.98,
            "pair_completeness_at_peer_candidates": {"splink_spark": 0.97}}
    theirs = {"name": "splink_spark", "blocking_seconds": 60.0, "candidates": 400, "pair_completeness": 0.96,
              "f1": 0.0, "scoring_seconds": 5.0}
    r = peer.ratios(ours, theirs)
    assert r["blocking_seconds"] == 0.5 and r["candidates"] == 2.0
    assert r["f1"] is None  # the peer's 0 divides nothing
    assert r["scoring_seconds"] is None  # ours lacks it
    target = peer.blocking_target(ours, theirs)
    assert target["pair_completeness_at_same_candidates"] == 0.97
    assert target["faster_or_equal"] and target["completeness_at_least_peer"] and target["met"]
    slower = peer.blocking_target({**ours, "blocking_seconds": 61.0}, theirs)
    assert not slower["met"] and slower["completeness_at_least_peer"]


def test_labeled_candidates_add_the_left_records_candidates(peer):
    split = [("a1", "b1", 1), ("a1", "b7", 0)]
    ranked = [("a1", "b1"), ("a1", "b8"), ("a2", "b2"), ("a1", "b7")]
    assert peer.labeled_candidates(split, ranked, GOLD) == split + [("a1", "b8", 0)]


def test_synthetic_labels_split_the_gold(tmp_path, monkeypatch):
    synthetic = benchmark_module("synthetic", monkeypatch)
    plain = synthetic.generate(400, tmp_path / "plain")
    labeled = synthetic.generate(400, tmp_path / "labeled", labels=0.2)
    # The tables do not depend on the labels.
    for table in ("tableA.csv", "tableB.csv", "gold.csv"):
        assert (tmp_path / "plain" / table).read_text() == (tmp_path / "labeled" / table).read_text()
    assert plain["train_pairs"] == plain["gold_pairs"] == 160 and plain["test_pairs"] == 0

    def rows(split: str) -> list[tuple[str, str, int]]:
        lines = (tmp_path / "labeled" / f"{split}.csv").read_text().splitlines()[1:]
        return [(a, b, int(y)) for a, b, y in (line.split(",") for line in lines)]

    gold = {(a, b) for a, b, _ in rows("gold")}
    train, valid, test = rows("train"), rows("valid"), rows("test")
    positives = [(a, b) for a, b, y in train + valid if y == 1]
    assert len([p for p in train if p[2] == 1]) == 32 and len([p for p in valid if p[2] == 1]) == 16
    assert set(positives) <= gold
    assert all((a, b) not in gold for a, b, y in train + valid if y == 0)
    assert sum(1 for *_, y in train if y == 0) > 2 * 32  # non-matches: up to three per positive
    # The held-out truth is every other gold pair.
    assert {(a, b) for a, b, _ in test} == gold - set(positives)
    assert all(y == 1 for *_, y in test)
