"""Keep a generated table inside docs/BENCHMARKS.md between two HTML comment markers."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_DOC = Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md"


def replace_marked_block(doc: Path, start: str, end: str, text: str) -> bool:
    """Put ``text`` between the ``start`` and ``end`` markers of ``doc``; False when it has none."""
    content = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if start not in content or end not in content:
        return False
    before, rest = content.split(start, 1)
    _, after = rest.split(end, 1)
    doc.write_text(before + start + "\n" + text + end + after, encoding="utf-8")
    return True


def publish_table(text: str, out_file: Path, start: str, end: str, update_docs: bool) -> None:
    """Write a benchmark's table next to its JSON, into docs/BENCHMARKS.md if asked, and print it."""
    out_file.write_text(text, encoding="utf-8")
    if update_docs:
        replace_marked_block(BENCHMARKS_DOC, start, end, text)
    print(text)
