"""Benchmark scripts keep their generated tables inside marked blocks of the docs."""

from __future__ import annotations

import re

from em_spark.bench.docs_table import BENCHMARKS_DOC, replace_marked_block

START, END = "<!-- t:start -->", "<!-- t:end -->"


def test_the_marked_block_is_replaced_and_the_rest_kept(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{START}\nold table\n{END}\noutro\n", encoding="utf-8")
    assert replace_marked_block(doc, START, END, "| new |\n")
    assert doc.read_text(encoding="utf-8") == f"intro\n{START}\n| new |\n{END}\noutro\n"
    # a second run replaces its own output, it does not append
    assert replace_marked_block(doc, START, END, "| newer |\n")
    assert doc.read_text(encoding="utf-8").count("| ") == 1


def test_a_doc_without_markers_or_missing_is_left_alone(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("no markers here\n", encoding="utf-8")
    assert not replace_marked_block(doc, START, END, "| new |\n")
    assert doc.read_text(encoding="utf-8") == "no markers here\n"
    assert not replace_marked_block(tmp_path / "missing.md", START, END, "x")
    assert not (tmp_path / "missing.md").exists()


def test_the_real_benchmarks_doc_keeps_each_scripts_markers_and_cites_no_work_sessions():
    text = BENCHMARKS_DOC.read_text(encoding="utf-8")
    # benchmarks/indomain_seeds.py (both recipes) and benchmarks/ood_protocol.py write here
    for name in ("indomain-table", "indomain-offset-table", "ood-table"):
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        assert text.count(start) == 1 and text.count(end) == 1, name
        assert text.index(start) < text.index(end), name
    # figures are cited by date and command, never by an internal work session
    root = BENCHMARKS_DOC.parents[1]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        hits = re.findall(r"\bsessions?[ -]\d+", doc.read_text(encoding="utf-8"), flags=re.IGNORECASE)
        assert not hits, (doc.name, hits)
