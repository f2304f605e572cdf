"""Cut the small dataset fixtures under tests/data/datasets from the full benchmark copies.

    python tests/data/cut_datasets.py [../shared/datasets]

Each fixture keeps its dataset's name and DeepMatcher layout (tableA.csv, tableB.csv,
train.csv, valid.csv, test.csv; see ../shared/datasets/MANIFEST.md): a seeded sample of
each split's matches and non-matches, in file order, and the records those pairs
reference, every row copied as it is (ids and values untouched). The tests use them where
../shared is missing (a user's clone); see ``dataset`` in tests/conftest.py.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# dataset -> split -> (matches, non-matches)
CUTS = {
    "Structured-Fodors-Zagats": {"train": (30, 150), "valid": (10, 40), "test": (10, 30)},
    "Structured-Beer": {"train": (6, 24), "valid": (4, 16), "test": (6, 30)},
}


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def cut(src: Path, dst: Path, sizes: dict[str, tuple[int, int]]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    used: dict[str, set[str]] = {"tableA": set(), "tableB": set()}
    for split, (n_pos, n_neg) in sizes.items():
        header, rows = _read(src / f"{split}.csv")
        rng = random.Random(f"{src.name}/{split}")
        keep = set()
        for label, n in (("1", n_pos), ("0", n_neg)):
            pool = [i for i, r in enumerate(rows) if r[2] == label]
            keep.update(rng.sample(pool, min(n, len(pool))))
        kept = [rows[i] for i in sorted(keep)]
        used["tableA"].update(r[0] for r in kept)
        used["tableB"].update(r[1] for r in kept)
        _write(dst / f"{split}.csv", header, kept)
    for table, ids in used.items():
        header, rows = _read(src / f"{table}.csv")
        _write(dst / f"{table}.csv", header, [r for r in rows if r[0] in ids])


def main(argv: list[str]) -> int:
    shared = Path(argv[0]) if argv else HERE.parents[2] / "shared" / "datasets"
    for name, sizes in CUTS.items():
        cut(shared / name, HERE / "datasets" / name, sizes)
        print(f"{name}: written under {HERE / 'datasets' / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
