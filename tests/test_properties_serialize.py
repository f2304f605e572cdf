"""Property tests (hypothesis) for pair serialization, the text both teacher and student see."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from em_spark.errors import InputError
from em_spark.serialize import (
    HINT_ATTRIBUTE_FEATURES,
    HINT_RECORD_FEATURES,
    HINT_VOCABULARY,
    SerializerSettings,
    serialize_pair,
    serialize_record,
)
from em_spark.values import clean_value

# Attribute names as ingest admits them: any unicode but line breaks (ingest rejects those).
names = st.text(min_size=1, max_size=12).filter(lambda s: len(s.splitlines()) == 1 and s == s.strip() and s)
plain_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
values = st.one_of(st.none(), st.text(max_size=200), st.integers(), st.floats(allow_nan=True), st.booleans())
word_lists = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Z", "Cc")), min_size=1, max_size=6), max_size=80)
budgets = st.builds(
    SerializerSettings,
    max_words_per_attribute=st.integers(min_value=1, max_value=20),
    max_words_per_record=st.integers(min_value=1, max_value=40),
)


def record_segments(text: str, ordered: list[str]) -> list[tuple[str, list[str]]]:
    """Split ``COL n1 VAL w w COL n2 VAL ...`` back into (name, words) by the known names."""
    out = []
    rest = text
    for i, name in enumerate(ordered):
        head = f"COL {name} VAL"
        assert rest.startswith(head), (rest[:80], name)
        rest = rest[len(head):]
        if i + 1 < len(ordered):
            nxt = f" COL {ordered[i + 1]} VAL"
            cut = rest.index(nxt)
            value, rest = rest[:cut], rest[cut + 1:]
        else:
            value, rest = rest, ""
        out.append((name, value.split()))
    return out


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, values, max_size=8), st.dictionaries(names, values, max_size=8), budgets)
def test_never_raises_and_is_one_line(left, right, conf):
    text = serialize_pair(left, right, None, conf)
    assert text.startswith("Entity A: ") and " Entity B: " in text
    assert len(text.splitlines()) == 1 and "\n" not in text and "\r" not in text


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(plain_names, st.lists(st.sampled_from(["sony", "tv", "4k", "x1", "é", "日本"]), max_size=30).map(" ".join), min_size=1, max_size=6), budgets, st.randoms())
def test_order_stable_names_round_trip_and_budgets_hold(record, conf, rnd):
    assume(not ({"COL", "VAL"} & set(record)))
    order = sorted(record)
    shuffled_keys = list(record)
    rnd.shuffle(shuffled_keys)
    shuffled = {k: record[k] for k in shuffled_keys}
    text = serialize_record(record, order, conf)
    # Stable: the attribute order comes from `order`, not from the dict's own order.
    assert serialize_record(shuffled, order, conf) == text
    segments = record_segments(text, order)
    assert [n for n, _ in segments] == order
    total = 0
    for name, words in segments:
        source_words = clean_value(record[name]).split()
        assert len(words) <= conf.max_words_per_attribute
        assert words == source_words[: len(words)]  # cut at the end, never reordered
        total += len(words)
    assert total <= conf.max_words_per_record
    # Nothing is cut when everything fits.
    if all(len(clean_value(v).split()) <= conf.max_words_per_attribute for v in record.values()) and sum(
        len(clean_value(v).split()) for v in record.values()
    ) <= conf.max_words_per_record:
        assert [w for _, w in segments] == [clean_value(record[n]).split() for n in order]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(plain_names, values, max_size=6), st.lists(plain_names, max_size=6, unique=True))
def test_order_lists_named_attributes_first_then_the_rest(record, order):
    text = serialize_record(record, order)
    found = re.findall(r"(?:^| )COL (\S+) VAL", text)
    assume(len(found) == len(record))  # a value that itself reads "COL x VAL" is ambiguous
    expected = [n for n in order if n in record] + [n for n in record if n not in order]
    assert found == expected


@settings(max_examples=200, deadline=None)
@given(word_lists, st.integers(min_value=1, max_value=120))
def test_a_long_value_never_crowds_out_the_others(words, budget):
    record = {"description": " ".join(words), "title": "acme widget", "price": "9.99"}
    conf = SerializerSettings(max_words_per_attribute=1000, max_words_per_record=budget)
    segments = dict(record_segments(serialize_record(record, ["title", "price", "description"], conf), ["title", "price", "description"]))
    # Water-filling: short attributes keep their words while the budget allows an even share.
    share = budget // 3
    if share >= 2:
        assert segments["title"] == ["acme", "widget"]
    if share >= 1:
        assert segments["price"] == ["9.99"]
    assert sum(len(w) for w in segments.values()) <= budget



lower_values = st.one_of(st.none(), st.from_regex(r"[a-z0-9 ]{0,60}", fullmatch=True))


@given(
    st.dictionaries(plain_names, lower_values, min_size=1, max_size=6),
    st.dictionaries(plain_names, lower_values, max_size=6),
    budgets,
)
@settings(max_examples=100, deadline=None)
def test_similarity_hints_prefix_the_pair_with_scores_per_attribute(left, right, budget):
    hinted = SerializerSettings(budget.max_words_per_attribute, budget.max_words_per_record, similarity_hints=True)
    text = serialize_pair(left, right, None, hinted)
    head, sep, rest = text.partition(" Entity A: ")
    # the pair itself is exactly the unhinted serialization
    assert sep and f"Entity A: {rest}" == serialize_pair(left, right, None, budget)
    words = head.split(" ")
    width = 1 + len(HINT_ATTRIBUTE_FEATURES)
    names = list(left) + [n for n in right if n not in left]
    assert words[0] == "SIM" and len(words) == 1 + width * len(names) + 1 + len(HINT_RECORD_FEATURES)
    assert words[1 + width * len(names)] == "all"
    for i, name in enumerate(names):
        chunk = words[1 + width * i : 1 + width * (i + 1)]
        assert chunk[0] == name
        # each hint word is its feature's letter and a score in tenths, or "-"
        assert [w[0] for w in chunk[1:]] == list(HINT_ATTRIBUTE_FEATURES.values())
        assert set(chunk[1:]) <= set(HINT_VOCABULARY)
        scores = dict(zip(HINT_ATTRIBUTE_FEATURES, (w[1:] for w in chunk[1:])))
        a, b = clean_value(left.get(name)), clean_value(right.get(name))
        if not (a and b):
            assert set(scores.values()) == {"-"}
        elif a == b:
            assert scores["ratio"] == scores["token_set"] == "10"
    assert SerializerSettings.from_dict(hinted.to_dict()) == hinted


def test_settings_saved_by_older_versions_load_unless_a_removed_option_was_on():
    saved = SerializerSettings(similarity_hints=True).to_dict()
    assert set(saved) == {"max_words_per_attribute", "max_words_per_record", "similarity_hints"}
    # pair_layout and feature_score_hint at the values every model now has are dropped
    older = {**saved, "pair_layout": "sequential", "feature_score_hint": False}
    assert SerializerSettings.from_dict(older) == SerializerSettings.from_dict(saved)
    for key, value in (("pair_layout", "interleaved"), ("feature_score_hint", True)):
        with pytest.raises(InputError, match=f"trained with {key}=.*an option since removed"):
            SerializerSettings.from_dict({**saved, key: value})
    with pytest.raises(InputError, match="unknown serializer setting 'layout'"):
        SerializerSettings.from_dict({**saved, "layout": "x"})


def test_similarity_hints_take_a_100kb_value():
    long = {"title": "sony tv", "description": "word " * 20_000}
    text = serialize_pair(long, long, None, SerializerSettings(similarity_hints=True))
    assert text.startswith("SIM title r10 s10 c- n- description r10 s10 c- n- all s10 o10 j10 c- Entity A:")
