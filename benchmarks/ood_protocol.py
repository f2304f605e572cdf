"""The paper's out-of-domain protocol (ANCHORS.md): BL vs EA, same model, same budget.

Each row trains on one dataset (train + valid: early stopping and threshold) and tests on
another dataset's test split, once per mode (label_only = BL, explained = EA, and the
ablations shuffled / truncated with ``--modes``), through ``em-spark bench matching``;
``--with-features`` adds the feature model, trained and tested the same way,
``--set KEY=VALUE`` passes a ``train.*`` setting to every student run (e.g.
``--set verdict_loss_weight=2``), and ``--max-epochs`` bounds training by epochs as well
as by the wall-clock ``--budget-minutes``.
Every run's JSON lands in ``--out-dir``; the table goes to ``--out-dir/ood_table.md`` and
replaces the block between the ``ood-table`` markers in docs/BENCHMARKS.md (if present).

    .venv/bin/python benchmarks/ood_protocol.py --budget-minutes 3 --out-dir benchmarks/results/ood
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from em_spark.bench.docs_table import publish_table  # noqa: E402
from em_spark.bench.matching import load_dataset  # noqa: E402
from em_spark.bench.matching import main as bench_matching  # noqa: E402
from em_spark.bench.paired import paired_f1_difference  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
# (setting, train folder, test folder, paper BL, paper EA, train pairs: a seeded sample or all)
ROWS = [
    ("cross-domain", "Textual-Abt-Buy", "Structured-Beer", 68.86, 89.66, None),
    ("cross-domain", "Structured-Walmart-Amazon", "Structured-Beer", 77.77, 89.65, None),
    ("cross-distribution", "Textual-Abt-Buy", "Structured-Walmart-Amazon", 25.77, 45.09, None),
    ("cross-distribution", "Structured-Walmart-Amazon", "Textual-Abt-Buy", 63.75, 67.52, None),
    ("cross-schema", "Structured-iTunes-Amazon", "Structured-Walmart-Amazon", 20.04, 43.09, None),
    ("cross-schema", "Structured-Walmart-Amazon", "Structured-iTunes-Amazon", 51.72, 75.63, None),
    # The paper's WDC Computers -> Cameras sets are not available here. WDC-Products has
    # 20,932 long train pairs (3.5x the others): a 3,000-pair sample is about what a short
    # budget covers once, as the other rows' full train splits are.
    ("cross-domain", "WDC-Products-80cc20rnd050un", "Textual-Abt-Buy", None, None, 3000),
]
MODES = ["label_only", "explained"]
ABLATIONS = ["shuffled", "truncated"]
FEATURES = "features"  # the feature model's column (--with-features)
START, END = "<!-- ood-table:start -->", "<!-- ood-table:end -->"


def run_all(args: argparse.Namespace, seed: int, out_dir: Path) -> list[dict]:
    """Run the missing (row, mode) JSONs, one training per train set and mode, and load all.

    Rows that share a train set (Abt-Buy: 2, Walmart-Amazon: 3) share that training: the
    matcher is trained once and tests every such row's test split (``bench matching`` with
    several ``--test``). With the same seed the runs are the same as one per row, except
    that a wall-clock budget ends training at a point the machine's load decides.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in ROWS if not args.rows or f"{r[1]}->{r[2]}" in args.rows]
    runs = [(args.model, mode) for mode in args.modes] + ([("features", FEATURES)] if args.with_features else [])

    def path(train: str, train_limit: int | None, test: str, model: str, mode: str) -> Path:
        sample = f"__train{train_limit}" if train_limit else ""
        suffix = "features" if model == "features" else f"{model}__{mode}"
        return out_dir / f"{train}{sample}__{test}__{suffix}.json"

    if not args.table_only:
        for train, train_limit in dict.fromkeys((r[1], r[5]) for r in rows):
            for model, mode in runs:
                missing = [r[2] for r in rows if (r[1], r[5]) == (train, train_limit)
                           and not path(train, train_limit, r[2], model, mode).is_file()]
                if not missing:  # resumable: finished runs are kept
                    continue
                argv = [
                    "--train", str(DATASETS / train), "--model", model, "--seed", str(seed),
                    "--budget-minutes", str(args.budget_minutes), "--set", f"threads={args.threads}",
                    "--test", *(str(DATASETS / test) for test in missing),
                    "--out", *(str(path(train, train_limit, test, model, mode)) for test in missing),
                ]
                if model != "features":
                    argv += ["--mode", mode] + [a for kv in args.overrides for a in ("--set", kv)]
                    if args.max_epochs:
                        argv += ["--max-epochs", str(args.max_epochs)]
                if args.limit_valid:
                    argv += ["--limit-valid", str(args.limit_valid)]
                if train_limit:
                    argv += ["--limit-train", str(train_limit)]
                bench_matching(argv)
    results = []
    for setting, train, test, paper_bl, paper_ea, train_limit in rows:
        name = f"{train} ({train_limit:,} train pairs)" if train_limit else train
        for model, mode in runs:
            file = path(train, train_limit, test, model, mode)
            if file.is_file():
                results.append({**json.loads(file.read_text()), "setting": setting, "train": name, "test": test,
                                "mode": mode, "paper_bl": paper_bl, "paper_ea": paper_ea})
    return results


def paired_interval(test: str, runs: dict[str, dict]) -> str:
    """A 95% paired bootstrap interval of EA - BL on this row's test pairs, in F1 points:
    how much of the difference the draw of a small test split (Beer: 91 pairs) can make."""
    bl, ea = runs.get("label_only"), runs.get("explained")
    if not bl or not ea or "test_scores" not in bl or "test_scores" not in ea:
        return "-"  # runs written before bench matching recorded its test scores
    labels = np.asarray([p.label for p in load_dataset(DATASETS / test).splits["test"]])
    ea_verdicts, bl_verdicts = (np.asarray(r["test_scores"]) >= r["threshold"] for r in (ea, bl))
    d = paired_f1_difference(labels, [ea_verdicts], [bl_verdicts])
    return f"[{d['low']:+.1f}, {d['high']:+.1f}]"


def _by_row(results: list[dict]) -> dict[tuple, dict[str, dict]]:
    by_row: dict[tuple, dict[str, dict]] = {}
    for r in results:
        by_row.setdefault((r["setting"], r["train"], r["test"], r["paper_bl"], r["paper_ea"]), {})[r["mode"]] = r
    return by_row


def _settings(args: argparse.Namespace, seeds: str) -> str:
    budget = f"{args.budget_minutes} min" + (f" or {args.max_epochs} epoch(s), whichever ends first," if args.max_epochs else "")
    return (
        f"Model `{args.model}`, budget {budget} of training per run, {seeds}, "
        f"threshold on the train dataset's valid split{f' (a seeded sample of {args.limit_valid} pairs)' if args.limit_valid else ''}"
        + (f"; student settings: {', '.join(args.overrides)}" if args.overrides else "") + "."
    )


def table(results: list[dict], args: argparse.Namespace) -> str:
    by_row = _by_row(results)
    modes = [m for m in MODES + ABLATIONS + [FEATURES] if any(m in v for v in by_row.values())]
    names = {"label_only": "BL", "explained": "EA", "shuffled": "shuffled", "truncated": "truncated", FEATURES: "features"}
    head = "| setting | train -> test | " + " | ".join(f"{names[m]} F1" for m in modes)
    head += " | EA - BL | EA - BL, 95% paired interval | valid F1 BL / EA | epochs BL / EA | paper BL / EA |"
    lines = [
        _settings(args, f"seed {args.seed}"),
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    wins, compared = 0, 0
    # Does EA's lead come from what the explanations say? Against each ablation, per row.
    ablation_wins = {m: [0, 0] for m in ABLATIONS if m in modes}
    for (setting, train, test, pbl, pea), runs in by_row.items():
        cells = [f"{100 * runs[m]['f1']:.2f}" if m in runs else "" for m in modes]
        delta = ""
        if "label_only" in runs and "explained" in runs:
            d = 100 * (runs["explained"]["f1"] - runs["label_only"]["f1"])
            wins += d > 0
            compared += 1
            delta = f"{d:+.2f}"
            for m, count in ablation_wins.items():
                if m in runs:
                    count[0] += runs["explained"]["f1"] > runs[m]["f1"]
                    count[1] += 1
        valid = " / ".join(f"{100 * runs[m]['valid_f1']:.1f}" if m in runs else "-" for m in MODES)
        # How much of one pass over the training pairs the budget allowed.
        epochs = " / ".join(
            f"{runs[m]['history'][-1]['epoch']:.2f}" if m in runs and runs[m].get("history") else "-" for m in MODES
        )
        paper = f"{pbl} / {pea}" if pbl is not None else "n/a"
        lines.append(
            f"| {setting} | {train} -> {test} | " + " | ".join(cells)
            + f" | {delta} | {paired_interval(test, runs)} | {valid} | {epochs} | {paper} |"
        )
    lines += ["", f"EA beats BL on {wins} of {compared} rows (those where both ran)."]
    lines += [f"EA beats {m} on {won} of {ran} rows." for m, (won, ran) in ablation_wins.items()]
    return "\n".join(lines) + "\n"


def _paired_interval(labels: np.ndarray, runs: dict[int, dict], seeds: list[int], mode: str) -> dict | None:
    """EA minus ``mode`` over ``seeds`` (those whose runs kept test_scores), paired bootstrap."""
    scored = [s for s in seeds if all("test_scores" in runs[s][m] for m in ("explained", mode))]
    if not scored:
        return None
    verdicts = {m: [np.asarray(runs[s][m]["test_scores"]) >= runs[s][m]["threshold"] for s in scored]
                for m in ("explained", mode)}
    return {"seeds": scored, **paired_f1_difference(labels, verdicts["explained"], verdicts[mode])}


def _interval_text(d: dict | None) -> str:
    if d is None:
        return "-"
    return f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] ({', '.join(map(str, d['seeds']))})"


def seeds_table(per_seed: dict[int, list[dict]], args: argparse.Namespace) -> str:
    """BL vs EA over seeds: per-seed F1, the means, and a paired interval over all seeds;
    with the ablations' means and EA's paired difference to each (over the seeds where EA
    ran too) where they ran."""
    seeds = list(per_seed)
    by_seed = {seed: _by_row(results) for seed, results in per_seed.items()}
    rows = list(dict.fromkeys(key for table_rows in by_seed.values() for key in table_rows))
    ablations = [m for m in ABLATIONS if any(m in runs for b in by_seed.values() for runs in b.values())]
    head = ("| setting | train -> test | BL F1 by seed | EA F1 by seed | BL mean | EA mean | "
            + "".join(f"{m} mean; EA - {m}, 95% paired interval (seeds) | " for m in ablations)
            + "EA - BL, 95% paired interval (seeds) | seeds EA > BL | paper BL / EA |")
    lines = [_settings(args, f"seeds {', '.join(map(str, seeds))}"), "", head, "|" + "---|" * (head.count("|") - 1)]
    # per compared mode: rows where EA's mean is ahead, rows where the interval is above 0, rows compared
    tally = {m: [0, 0, 0] for m in ["label_only", *ablations]}
    seed_wins = dict.fromkeys(seeds, 0)
    for key in rows:
        setting, train, test, pbl, pea = key
        both = {s: by_seed[s][key] for s in seeds if {"label_only", "explained"} <= set(by_seed[s].get(key, {}))}
        if not both:
            continue
        labels = np.asarray([p.label for p in load_dataset(DATASETS / test).splits["test"]])
        ea = {s: 100 * both[s]["explained"]["f1"] for s in both}
        cells = {}
        for m in ["label_only", *ablations]:
            ran = [s for s in both if m in both[s]]
            if not ran:
                cells[m] = "-"
                continue
            other_mean = np.mean([100 * both[s][m]["f1"] for s in ran])
            interval = _paired_interval(labels, both, ran, m)
            tally[m][0] += np.mean([ea[s] for s in ran]) > other_mean
            tally[m][1] += interval is not None and interval["low"] > 0
            tally[m][2] += 1
            cells[m] = (_interval_text(interval) if m == "label_only"
                        else f"{other_mean:.2f}; {_interval_text(interval)}")
        bl = [100 * both[s]["label_only"]["f1"] for s in both]
        wins = [s for s in both if both[s]["explained"]["f1"] > both[s]["label_only"]["f1"]]
        for s in wins:
            seed_wins[s] += 1
        paper = f"{pbl} / {pea}" if pbl is not None else "n/a"
        lines.append(
            f"| {setting} | {train} -> {test} | {' / '.join(f'{v:.2f}' for v in bl)} | "
            f"{' / '.join(f'{v:.2f}' for v in ea.values())} | {np.mean(bl):.2f} | {np.mean(list(ea.values())):.2f} | "
            + "".join(f"{cells[m]} | " for m in ablations)
            + f"{cells['label_only']} | {len(wins)} of {len(both)} | {paper} |"
        )
    won, clear, compared = tally["label_only"]
    lines += [
        "",
        f"EA's mean beats BL's on {won} of {compared} rows (interval above 0 on {clear}); per seed, EA beats BL on "
        + ", ".join(f"{n} (seed {s})" for s, n in seed_wins.items()) + f" of {compared} rows.",
    ]
    lines += [f"EA's mean beats {m}'s (same seeds) on {won} of {ran} rows (interval above 0 on {clear})."
              for m, (won, clear, ran) in tally.items() if m != "label_only"]
    lines.append(
        "The intervals: EA minus the other mode in F1 points, averaged over the seeds named, 95% from 2,000 "
        "bootstrap resamples of the test pairs (one draw for both modes and all those seeds)."
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--budget-minutes", type=float, default=3.0)
    p.add_argument(
        "--max-epochs", type=int, default=None,
        help="end each student's training after N epochs too: with a budget that does not bind, BL and EA "
        "see the same pairs the same number of times (EA's longer targets make its steps slower)",
    )
    p.add_argument("--seed", type=int, default=13)
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None,
        help="run and tabulate these seeds, each in OUT_DIR/seed<N>: a BL vs EA table over seeds (replaces --seed)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit-valid", type=int, default=None)
    p.add_argument(
        "--modes", nargs="+", choices=MODES + ABLATIONS, default=MODES,
        help="the modes to run or tabulate (default: BL and EA; the ablations are shuffled and truncated)",
    )
    p.add_argument("--with-features", action="store_true", help="also run the feature model per row")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="a train.* setting for every student run, e.g. --set verdict_loss_weight=2 (repeatable)",
    )
    p.add_argument("--rows", nargs="*", default=None, help="only these TRAIN->TEST rows")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results" / "ood"))
    p.add_argument("--no-docs", action="store_true", help="do not edit docs/BENCHMARKS.md")
    p.add_argument("--table-only", action="store_true", help="tabulate finished runs, start none")
    args = p.parse_args()
    out_dir = Path(args.out_dir)
    if args.seeds:
        text = seeds_table({seed: run_all(args, seed, out_dir / f"seed{seed}") for seed in args.seeds}, args)
    else:
        text = table(run_all(args, args.seed, out_dir), args)
    publish_table(text, out_dir / "ood_table.md", START, END, not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
