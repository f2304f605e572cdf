"""The review report: one self-contained HTML page of sampled pairs, both records side by
side with the verdict and its rationale, filterable in the page.

Every value from the data is HTML-escaped where it is written (text and attributes);
the inline script only shows and hides rows, it never writes markup, so a record that
contains ``<script>`` stays text.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

# category key -> heading, in display order
CATEGORIES: dict[str, str] = {
    "true_match": "Matches (correct)",
    "false_match": "False matches (error)",
    "missed_match": "Missed matches (error)",
    "not_proposed": "Never proposed by blocking",
    "failed": "Failed to score",
    "true_non_match": "Non-matches (correct)",
    "unlabeled_match": "Accepted matches, unlabeled",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}.summary td,.summary th{padding:2px 10px;text-align:left}
.controls{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ccc;z-index:1}
.controls label{margin-right:1em;white-space:nowrap}
.pair{background:#fff;border:1px solid #ddd;border-radius:6px;margin:.8em 0;padding:.6em .8em}
.pair header{display:flex;gap:1em;flex-wrap:wrap;font-size:.9em;color:#555}
.badge{font-weight:600;padding:0 .4em;border-radius:4px;color:#fff}
.true_match,.true_non_match{background:#2e7d32}.false_match,.missed_match{background:#c62828}
.not_proposed,.failed{background:#6d4c41}.unlabeled_match{background:#1565c0}
table.records{border-collapse:collapse;width:100%;margin:.4em 0;table-layout:fixed}
table.records td,table.records th{border-top:1px solid #eee;padding:3px 6px;vertical-align:top;
 overflow-wrap:anywhere;text-align:left}
table.records th.attr{width:14%;color:#555;font-weight:500}
tr.differs td{background:#fff8e1}
.rationale .by{color:#555;font-size:.85em;margin-top:.3em}
.rationale{background:#f3f6fb;padding:.4em .6em;border-left:3px solid #1565c0;white-space:pre-wrap}
.error{color:#c62828;white-space:pre-wrap}
"""

_JS = """
(function () {
  "use strict";
  var pairs = Array.prototype.slice.call(document.querySelectorAll("section.pair"));
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.category"));
  var query = document.getElementById("query");
  var minP = document.getElementById("min-p");
  var maxP = document.getElementById("max-p");
  var shown = document.getElementById("shown");

  function number(input, fallback) {
    var v = parseFloat(input.value);
    return isNaN(v) ? fallback : v;
  }

  function apply() {
    var wanted = {};
    boxes.forEach(function (b) { wanted[b.value] = b.checked; });
    var q = query.value.trim().toLowerCase();
    var lo = number(minP, 0), hi = number(maxP, 1);
    var visible = 0;
    pairs.forEach(function (el) {
      var p = parseFloat(el.getAttribute("data-p"));
      var ok = wanted[el.getAttribute("data-category")] === true;
      if (ok && q) { ok = el.getAttribute("data-search").indexOf(q) !== -1; }
      if (ok && !isNaN(p)) { ok = p >= lo && p <= hi; }
      el.hidden = !ok;
      if (ok) { visible += 1; }
    });
    shown.textContent = String(visible);
    document.body.setAttribute("data-visible", String(visible));
  }

  // A link can preset the filters: review.html#category=false_match,missed_match&q=acme
  function fromHash() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    var cats = params.get("category");
    if (cats) {
      var set = cats.split(",");
      boxes.forEach(function (b) { b.checked = set.indexOf(b.value) !== -1; });
    }
    if (params.get("q")) { query.value = params.get("q"); }
  }

  boxes.forEach(function (b) { b.addEventListener("change", apply); });
  [query, minP, maxP].forEach(function (el) { el.addEventListener("input", apply); });
  window.addEventListener("hashchange", function () { fromHash(); apply(); });
  fromHash();
  apply();
  document.body.setAttribute("data-ready", "1");
})();
"""


def _e(value: Any) -> str:
    """Escaped text of a value (quotes too: the same helper serves attributes)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return html.escape(str(value), quote=True)


def _fmt_p(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.3f}"


def _records_table(left: dict[str, str], right: dict[str, str]) -> str:
    names = list(left) + [k for k in right if k not in left]
    rows = []
    for name in names:
        lv, rv = left.get(name), right.get(name)
        differs = (lv or "").strip().lower() != (rv or "").strip().lower()
        rows.append(
            f'<tr class="{"differs" if differs else "same"}"><th class="attr">{_e(name)}</th>'
            f"<td>{_e(lv)}</td><td>{_e(rv)}</td></tr>"
        )
    return (
        '<table class="records"><thead><tr><th class="attr">attribute</th><th>left record</th>'
        "<th>right record</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _pair_html(row: Any, records: dict[tuple[str, str], dict[str, str]], right_source: str) -> str:
    left = records.get(("left", row.left_id), {})
    right = records.get((right_source, row.right_id), {})
    search = " ".join(
        [str(row.left_id), str(row.right_id), str(row.rationale or "")] + [str(v) for v in left.values()]
        + [str(v) for v in right.values()]
    ).lower()
    label = "" if row.label is pd.NA or row.label is None or (isinstance(row.label, float) and math.isnan(row.label)) else int(row.label)
    parts = [
        f'<section class="pair" data-category="{_e(row.category)}" data-p="{_e(_fmt_p(row.p_match))}" '
        f'data-search="{_e(search)}" data-pair-id="{_e(row.pair_id)}">',
        "<header>",
        f'<span class="badge {_e(row.category)}">{_e(CATEGORIES[row.category])}</span>',
        f"<span>left <code>{_e(row.left_id)}</code></span>",
        f"<span>right <code>{_e(row.right_id)}</code></span>",
        f"<span>verdict <b>{_e(row.verdict or 'not proposed')}</b></span>",
        f"<span>p_match {_e(_fmt_p(row.p_match))}</span>",
        f"<span>label {_e(label)}</span>",
        f"<span>decided by {_e(row.decided_by)}</span>",
        "</header>",
        _records_table(left, right),
    ]
    if isinstance(row.rationale, str) and row.rationale.strip():
        author = _RATIONALE_BY.get(getattr(row, "rationale_by", None) or "", "")
        parts.append(f'<div class="rationale">{_e(row.rationale)}<div class="by">{_e(author)}</div></div>')
    if isinstance(row.error, str) and row.error:
        parts.append(f'<div class="error">{_e(row.error)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


_RATIONALE_BY = {
    "student": "written by the student model; checked against both records",
    "rules": "written by the rules (the student's rationale failed the check against the records)",
}


def _summary_html(summary: dict[str, Any]) -> str:
    c = summary["confusion"]
    rows = [
        ("split", summary["split"]),
        ("pairs measured", summary["pairs"]),
        ("threshold", f"{summary['threshold']:.3f}"),
        ("precision", f"{summary['precision']:.3f}"),
        ("recall", f"{summary['recall']:.3f}"),
        ("F1", f"{summary['f1']:.3f}"),
        ("confusion (tp / fp / fn / tn)", f"{c['tp']} / {c['fp']} / {c['fn']} / {c['tn']}"),
        ("labeled pairs never proposed by blocking", summary["labeled_pairs"] - summary["proposed_pairs"]),
        ("unproposed pairs count as", summary["missing_pairs"]),
    ]
    if summary.get("blocking", {}).get("any") is not None:
        rows.append(("blocking recall (all labeled positives)", f"{summary['blocking']['any']:.3f}"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def write_review_report(
    path: Path,
    samples: pd.DataFrame,
    records: dict[tuple[str, str], dict[str, str]],
    right_source: str,
    summary: dict[str, Any],
) -> Path:
    """Write the report page to ``path`` and return it."""
    counts = samples["category"].value_counts().to_dict() if len(samples) else {}
    boxes = "".join(
        f'<label><input type="checkbox" class="category" value="{_e(key)}" '
        f'{"" if key == "true_non_match" else "checked"}> {_e(title)} ({int(counts.get(key, 0))})</label>'
        for key, title in CATEGORIES.items()
    )
    order = {key: i for i, key in enumerate(CATEGORIES)}
    ordered = samples.assign(_o=samples["category"].map(order)).sort_values(["_o", "p_match"], ascending=[True, False])
    pairs = "\n".join(_pair_html(row, records, right_source) for row in ordered.itertuples())
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>em-spark review: {_e(summary['split'])}</title>
<style>{_CSS}</style></head>
<body>
<h1>em-spark review report</h1>
<p>Generated {_e(generated)}. A sample of pairs per category; both records side by side
(differing attributes shaded) with the verdict and the student's rationale.</p>
{_summary_html(summary)}
<div class="controls">
{boxes}
<br><label>search <input id="query" type="search" placeholder="id, value or rationale"></label>
<label>p_match from <input id="min-p" type="number" min="0" max="1" step="0.05" value="0"></label>
<label>to <input id="max-p" type="number" min="0" max="1" step="0.05" value="1"></label>
<span><b id="shown">{len(samples)}</b> of {len(samples)} pairs shown</span>
</div>
<main id="pairs">
{pairs}
</main>
<script>{_JS}</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
