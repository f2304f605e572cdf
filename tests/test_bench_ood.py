"""The out-of-domain protocol's tables (benchmarks/ood_protocol.py) from run JSONs."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from conftest import REPO, dataset
from em_spark.bench.matching import load_dataset

BEER_ROW = "Textual-Abt-Buy->Structured-Beer"


@pytest.fixture(scope="module")
def ood():
    spec = importlib.util.spec_from_file_location("ood_protocol", REPO / "benchmarks" / "ood_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(path, labels: list[int], verdicts: list[int]) -> None:
    tp = sum(v and y for v, y in zip(verdicts, labels))
    precision, recall = tp / max(1, sum(verdicts)), tp / sum(labels)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    path.write_text(json.dumps({"f1": f1, "threshold": 0.5, "valid_f1": 0.5, "history": [{"epoch": 1.0}],
                                "test_scores": [0.9 if v else 0.1 for v in verdicts]}))


def test_seed_table_counts_wins_means_and_a_paired_interval(ood, tmp_path, monkeypatch):
    beer = dataset("Structured-Beer")  # the cut shipped with the tests; the protocol reads its labels too
    monkeypatch.setattr(ood, "DATASETS", beer.parent)
    labels = [p.label for p in load_dataset(beer).splits["test"]]
    stem = "Textual-Abt-Buy__Structured-Beer__tiny__"
    for seed in (1, 2):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        _write_run(folder / f"{stem}explained.json", labels, labels)  # EA: every verdict right
        _write_run(folder / f"{stem}label_only.json", labels, [1] * len(labels))  # BL: all match
    _write_run(tmp_path / "seed1" / f"{stem}shuffled.json", labels, labels)
    args = argparse.Namespace(
        model="tiny", budget_minutes=60.0, max_epochs=1, limit_valid=None, overrides=[], rows=[BEER_ROW],
        modes=["label_only", "explained", "shuffled"], with_features=False, table_only=True, seed=1,
    )
    text = ood.seeds_table({s: ood.run_all(args, s, tmp_path / f"seed{s}") for s in (1, 2)}, args)
    all_match = 100 * 2 * sum(labels) / (sum(labels) + len(labels))
    row = next(line for line in text.splitlines() if "Textual-Abt-Buy -> Structured-Beer" in line)
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2:6] == [f"{all_match:.2f} / {all_match:.2f}", "100.00 / 100.00", f"{all_match:.2f}", "100.00"]
    assert cells[6] == "100.00; +0.00 [+0.00, +0.00] (1)"  # shuffled ran at seed 1 only, verdicts = EA's
    assert cells[7].startswith(f"{100 - all_match:+.2f} [") and cells[7].endswith("(1, 2)")
    assert cells[8] == "2 of 2"
    assert "EA's mean beats BL's on 1 of 1 rows (interval above 0 on 1); per seed, EA beats BL on 1 (seed 1), 1 (seed 2)" in text
    assert "EA's mean beats shuffled's (same seeds) on 0 of 1 rows (interval above 0 on 0)." in text
    assert "or 1 epoch(s), whichever ends first" in text
