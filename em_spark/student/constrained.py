"""Decoding that cannot invent a quote: a logits processor over the pair's own values.

Inside a quoted span (after an odd number of ``"`` in the rationale so far) the student
may only emit a token that continues a substring of one of the pair's attribute values that starts at a word
(lower-cased, whitespace collapsed: :func:`em_spark.rationale.normalize`), or a token
that closes the quote once it holds something. Outside quotes it may open a quote only
with a token whose text after the ``"`` starts such a substring, and the end-of-sequence
token is barred only inside a quote, so a rationale can always end. The search for
continuations is by position: every place the quote so far ends in a value, the
value's next characters, looked up by prefix in a table of token texts; no pass over
the vocabulary per step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from em_spark.rationale import normalize

QUOTE = '"'
CURLY = {"\u201c", "\u201d"}


def token_texts(tokenizer: Any) -> list[str]:
    """Each token id's text as it reads inside decoded output (word-start markers as a
    space: SentencePiece ``▁``, byte-level ``Ġ``; WordPiece ``##`` joins the previous
    piece), lower case; special tokens as ''."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    wordpiece = any(p.startswith("##") for p in pieces if p)
    special = set(tokenizer.all_special_ids)
    texts = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            texts.append("")
        elif piece.startswith("▁") or piece.startswith("Ġ"):
            texts.append(" " + piece[1:].lower())
        elif wordpiece:
            texts.append(piece[2:].lower() if piece.startswith("##") else " " + piece.lower())
        else:
            texts.append(piece.lower())
    return texts


class QuoteIndex:
    """What a tokenizer's tokens say, indexed for the processor (built once per model)."""

    def __init__(self, tokenizer: Any):
        self.texts = token_texts(tokenizer)
        self.by_text: dict[str, list[int]] = defaultdict(list)
        self.quote_ids: list[int] = []
        for i, text in enumerate(self.texts):
            if not text:
                continue
            if QUOTE in text:
                self.quote_ids.append(i)
            else:
                self.by_text[text].append(i)
        self.longest = max((len(t) for t in self.by_text), default=1)
        # Curly quotes delimit quotes for the checker too; the processor tracks straight
        # ones only, so curly ones are never emitted.
        self.curly_ids = [i for i, t in enumerate(self.texts) if CURLY & set(t)]


def _in_values(piece: str, values: Sequence[str]) -> bool:
    return any(piece in value for value in values)


class QuoteConstraint(LogitsProcessor):
    """Per row, ``sources[row]``: the values its quotes may come from. ``skip``: decoder
    positions before the rationale (start token and the forced verdict words)."""

    def __init__(self, index: QuoteIndex, sources: Sequence[Sequence[str]], skip: int):
        self.index = index
        self.sources = [[v for v in (normalize(s) for s in row) if v] for row in sources]
        self.skip = skip
        self._openers: dict[int, list[int]] = {}
        # Per row, the rationale's text so far and how many ids it covers: each step
        # appends the newest token instead of decoding the whole row again.
        self._texts: dict[int, tuple[int, str]] = {}

    def quote_state(self, row: int, ids: Sequence[int]) -> str | None:
        """The open quote's text so far in ``row``, or None outside quotes."""
        done, text = self._texts.get(row, (self.skip, ""))
        if done > len(ids):  # a new generation reusing this processor
            done, text = self.skip, ""
        text += "".join(self.index.texts[i] for i in ids[done:])
        self._texts[row] = (len(ids), text)
        if text.count(QUOTE) % 2 == 0:
            return None
        return text[text.rindex(QUOTE) + 1 :]

    def _barred_openers(self, row: int) -> list[int]:
        """Quote tokens this row may not emit outside a quote."""
        if row not in self._openers:
            values = self.sources[row]
            barred = []
            for i in self.index.quote_ids:
                after = self.index.texts[i].split(QUOTE, 1)[1]
                inner = after.lstrip()
                if not values or QUOTE in after or (inner and not _in_values(inner, values)):
                    barred.append(i)
            self._openers[row] = barred
        return self._openers[row]

    def allowed_inside(self, row: int, quoted: str) -> list[int]:
        """Token ids that continue (or close) the open quote ``quoted`` of ``row``."""
        values = self.sources[row]
        core = quoted.lstrip()
        index = self.index
        ends: list[tuple[int, int]] = []  # (value, position after the quote so far)
        for v, value in enumerate(values):
            if not core:  # a quote opens at the start of a word
                ends.extend((v, p) for p in range(len(value)) if p == 0 or value[p - 1] == " ")
                continue
            start = value.find(core)
            while start != -1:
                ends.append((v, start + len(core)))
                start = value.find(core, start + 1)
        allowed: set[int] = set()
        for v, end in ends:
            rest = values[v][end : end + index.longest]
            for k in range(1, len(rest) + 1):
                allowed.update(index.by_text.get(rest[:k], ()))
                if not core:  # a quote may open with a space before its first word
                    allowed.update(index.by_text.get(" " + rest[:k], ()))
        if core:
            for i in index.quote_ids:
                inside, after = index.texts[i].split(QUOTE, 1)
                if QUOTE not in after and (not inside or any(values[v].startswith(inside, e) for v, e in ends)):
                    allowed.add(i)
        if not allowed:  # nothing continues it: close the quote rather than stall
            allowed.update(i for i in index.quote_ids if index.texts[i] == QUOTE)
        return sorted(allowed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = input_ids.tolist()
        mask = torch.zeros_like(scores, dtype=torch.bool)
        if self.index.curly_ids:
            mask[:, self.index.curly_ids] = True
        for row, ids in enumerate(rows):
            quoted = self.quote_state(row, ids)
            if quoted is None:
                barred = self._barred_openers(row)
                if barred:
                    mask[row, barred] = True
            else:
                mask[row, :] = True
                mask[row, self.allowed_inside(row, quoted)] = False
        return scores.masked_fill(mask, float("-inf"))


class ClauseConstraint(LogitsProcessor):
    """Decoding within a list of texts: per row, ``candidates[row]`` (each true of the
    pair: em_spark.teacher.rules.explanation_candidates); the student picks, token by
    token, among the continuations that some candidate allows, and may end only where a
    candidate ends. ``skip``: decoder positions before the rationale."""

    def __init__(self, tokenizer: Any, candidates: Sequence[Sequence[str]], skip: int):
        self.skip = skip
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self.tries: list[dict] = []
        # per row, token ids -> the candidate they spell: the text is returned as written,
        # since decoding ids does not restore it with every tokenizer (WordPiece lower-cases
        # and spaces out punctuation)
        self.spelled: list[dict[tuple[int, ...], str]] = []
        for texts in candidates:
            root: dict = {}
            spelled: dict[tuple[int, ...], str] = {}
            # a leading space: the text continues the verdict words, as in training targets
            for text, ids in zip(texts, tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"]):
                spelled.setdefault(tuple(ids), text)
                node = root
                for token in [*ids, self.eos_id]:
                    node = node.setdefault(token, {})
            self.tries.append(root)
            self.spelled.append(spelled)

    def chosen(self, row: int, generated: Sequence[int]) -> str | None:
        """The candidate of ``row`` that the decoder output ``generated`` (start and
        verdict positions included) spells in full; None when decoding stopped inside one."""
        ids = list(generated[self.skip :])
        while ids and ids[-1] in (self.eos_id, self.pad_id):
            ids.pop()
        return self.spelled[row].get(tuple(ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.ones_like(scores, dtype=torch.bool)
        for row, ids in enumerate(input_ids.tolist()):
            node: dict | None = self.tries[row]
            for token in ids[self.skip :]:
                node = node.get(token) if node is not None else None
            # past the end (a finished row is padded): leave it to generate's own stopping
            allowed = list(node) if node else [self.eos_id]
            mask[row, allowed] = False
        return scores.masked_fill(mask, float("-inf"))
