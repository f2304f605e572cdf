"""The in-domain seeds table (benchmarks/indomain_seeds.py) from run JSONs."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def indomain():
    spec = importlib.util.spec_from_file_location("indomain_seeds", REPO / "benchmarks" / "indomain_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_gives_means_and_what_verdict_by_auto_would_ship(indomain, tmp_path):
    dataset = "Structured-Walmart-Amazon"
    runs = {  # seed: (student F1, features F1, shipped by)
        13: (0.80, 0.78, "student"),
        14: (0.70, 0.76, "features"),
    }
    for seed, (student, features, shipped_by) in runs.items():
        shipped = {"verdict_by": shipped_by, "threshold": 0.5, "f1": student if shipped_by == "student" else features}
        (tmp_path / f"{dataset}__tiny__seed{seed}.json").write_text(
            json.dumps({"f1": student, "valid_f1": 0.8, "seed": seed, "as_shipped": shipped})
        )
        (tmp_path / f"{dataset}__features__seed{seed}.json").write_text(
            json.dumps({"f1": features, "valid_f1": 0.8, "seed": seed})
        )
    args = argparse.Namespace(
        out_dir=str(tmp_path), datasets=[dataset], seeds=[13, 14], model="tiny", table_only=True,
        overrides=["threads=1"], budget_minutes=10.0,
    )
    summary = indomain.summarize(indomain.run_all(args))
    assert summary[dataset]["student_mean"] == pytest.approx(75.0)
    assert summary[dataset]["features_mean"] == pytest.approx(77.0)
    table = indomain.table(summary, args)
    assert "explained, similarity hints, threads=1, 10.0 min" in table
    row = next(line for line in table.splitlines() if line.startswith(f"| {dataset}"))
    # the student alone is below the baseline; as shipped (seed 14 by the feature model) it is above
    assert "80.00 (student); 76.00 (features); mean 78.00" in row and "| 1 of 2 |" in row
    assert "at or above the baseline's on 0 of 1 datasets" in table
    assert "As shipped (train.verdict_by: auto), the mean is at or above the baseline's on 1 of 1" in table
