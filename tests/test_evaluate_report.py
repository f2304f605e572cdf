"""The HTML review report, opened in headless Chromium (Debian's `chromium` package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from results_tables import results_lake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (scripts/setup.sh installs Debian's package when run as root)",
)


def _dump_dom(url: str, profile: Path) -> tuple[str, str]:
    """The page's DOM after its scripts ran, and Chromium's log (console messages)."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


class _Pairs(HTMLParser):
    """The review sections of a DOM dump: (category, hidden) in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("class") == "pair":
            self.sections.append((a["data-category"], "hidden" in a))


def _sections(dom: str) -> list[tuple[str, bool]]:
    parser = _Pairs()
    parser.feed(dom)
    return parser.sections


def _console_errors(log: str) -> list[str]:
    return [
        line for line in log.splitlines()
        if "CONSOLE" in line and re.search(r"Uncaught|Error|error", line)
    ]


def test_report_renders_pairs_without_errors_and_escapes_markup(spark, tmp_path_factory, tmp_path):
    _config, _lake, runs = results_lake(spark, tmp_path_factory)
    report = Path(runs["evaluate"].checks["report"])
    source = report.read_text()
    assert "<script>window.pwned" not in source and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in source

    dom, log = _dump_dom(report.as_uri(), tmp_path / "profile")
    assert _console_errors(log) == []
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    pairs = [category for category, _hidden in _sections(dom)]
    # 8 labeled pairs (one per category sample) + the unlabeled match
    assert len(pairs) == 9
    assert set(pairs) == {"true_match", "false_match", "missed_match", "not_proposed", "failed",
                          "true_non_match", "unlabeled_match"}
    # both records side by side, with the rationale
    assert '<td>Cafe Luna</td><td>Cafe Luna</td>' in dom
    assert 'Both are "Cafe Luna" in san francisco' in dom
    assert dom.count('<table class="records">') == 9
    # markup in a record and in a rationale stayed text: no element was injected
    assert "<title>em-spark review: test</title>" in dom
    assert not re.search(r"<img[^>]*src=\"?x", dom)
    assert "window.pwned=1</script>" not in dom
    # true non-matches are unchecked by default: 2 of 9 hidden
    assert 'data-visible="7"' in dom
    assert [c for c, hidden in _sections(dom) if hidden] == ["true_non_match", "true_non_match"]


def test_report_filters_in_the_page(spark, tmp_path_factory, tmp_path):
    _config, _lake, runs = results_lake(spark, tmp_path_factory)
    url = Path(runs["evaluate"].checks["report"]).as_uri() + "#category=false_match,missed_match"
    dom, log = _dump_dom(url, tmp_path / "profile")
    assert _console_errors(log) == []
    # pair 4 is the false match, pair 3 the missed one (pair 7 was never proposed)
    assert 'data-visible="2"' in dom
    shown = sorted(category for category, hidden in _sections(dom) if not hidden)
    assert shown == ["false_match", "missed_match"]
