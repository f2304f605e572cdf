"""Rationales true to their records (issue 29): the checker (em_spark.rationale), the
score-time fallback to the rules explanation, and decoding that cannot invent a quote
(em_spark.student.constrained), without Spark.

Known bugs found while writing these tests (most by the property tests) are pinned by ``xfail(strict=True)`` tests at
the end of this file, each with its minimal example; the property strategies leave out
exactly those inputs (see ``_outside_known_bugs``) and stay strict for everything else.
When a bug is fixed, its xfail test passes, fails as XPASS, and the exclusion goes.
"""

from __future__ import annotations

import csv
import random
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor, LogitsProcessorList

from em_spark.rationale import CHECKS, QUOTED, check_rationale, normalize, rationale_failures, stance
from em_spark.serialize import SerializerSettings, clean_value, serialize_pair, serialize_record
from em_spark.student.constrained import QuoteConstraint, QuoteIndex
from em_spark.student.inference import StudentPredictor
from em_spark.student.presets import build_preset, train_tokenizer
from em_spark.teacher.rules import explain_pair, identifier_codes
from tests.conftest import DEMO_DATA

try:  # where the score-time helpers live moves with the scoring refactor
    from em_spark.match_model import checked_rationale, record_values
except ImportError:  # pragma: no cover - the layout before em_spark.match_model
    from em_spark.scorer import checked_rationale, record_values

MATCHER = "the matcher's score"

# Fodors-Zagats restaurants (the demo data), values as the serializer cleans them.
MARY_A = {"name": "mary mac 's tea room", "addr": "224 ponce de leon ave.", "city": "atlanta",
          "phone": "404/876 -1800", "type": "southern"}
MARY_B = {"name": "mary mac 's tea room", "addr": "224 ponce de leon ave.", "city": "atlanta",
          "phone": "404-876-1800", "type": "southern/soul"}
FRINGALE = {"name": "fringale", "addr": "570 fourth st.", "city": "san francisco",
            "phone": "415/543 -0573", "type": "french"}
FLEUR = {"name": "fleur de lys", "addr": "777 sutter st.", "city": "san francisco",
         "phone": "415/673 -7779", "type": "french"}
# As they are stored in the demo tables (backticks, a backslash), where issue 29 saw
# every name called identical to "` cafe '".
MARY_RAW_A = {"name": "` mary mac \\ 's tea room '", "addr": "' 224 ponce de leon ave. '",
              "city": "atlanta", "phone": "404/876 -1800", "type": "southern"}
MARY_RAW_B = {"name": "` mary mac \\ 's tea room '", "addr": "' 224 ponce de leon ave. '",
              "city": "atlanta", "phone": "404-876-1800", "type": "southern/soul"}
CAFE_LUNA = {"name": "cafe luna", "addr": "12 main st.", "city": "atlanta"}
CAFE_RITZ = {"name": "cafe ritz", "addr": "12 main st.", "city": "atlanta"}
CAMERA_A = {"title": "sony cyber-shot dsc-w55 7.2mp digital camera", "brand": "sony", "price": "199.99"}
CAMERA_B = {"title": "sony dsc-w55 cyber-shot camera silver", "brand": "sony", "price": "189.00"}
CAMERA_C = {"title": "sony cyber-shot dsc-w80 7.2mp digital camera", "brand": "sony", "price": "249.99"}
PRICE_10, PRICE_20 = {"price": "10"}, {"price": "20"}
MISSING = {"title": "canon powershot sd1000", "price": ""}
WITH_PRICE = {"title": "canon powershot sd1000 digital elph", "price": "179.00"}

SAME = "so they refer to the same entity."
DIFFERENT = "so they are different entities."
LOOP = ' and the addr is identical ("224 ponce de leon ave.")'


# --- 1. the checker catches each kind of false rationale -----------------------------

CATCHES = [
    # quote: text in neither record
    # (a quote in an "identical" clause is also a false claim: not in that attribute)
    ("hallucinated quote", f'The name is identical ("cafe"), {SAME}', "match", MARY_A, MARY_B, "quote+claim"),
    ("issue 29's demo rationale",
     f"The name is identical (\"` cafe '\") and the addr is identical (\"` cafe '\"), {SAME}",
     "match", MARY_RAW_A, MARY_RAW_B, "quote+claim"),
    ("a quote in free phrasing", f'B is "la cienega blvd", {DIFFERENT}', "no_match", FRINGALE, FLEUR, "quote"),
    # claim: "identical" where the values differ (each quote is in both records)
    ("identical names that differ", f'The name is identical ("cafe"), {SAME}', "match", CAFE_LUNA, CAFE_RITZ, "claim"),
    ("identical, a prefix of one name", f'The name is identical ("mary mac"), {SAME}',
     "match", MARY_A, {**MARY_B, "name": "mary mac 's"}, "claim"),
    ("identical, the other record's city", f'The city is identical ("san francisco"), {SAME}',
     "match", FRINGALE, MARY_A, "claim"),
    ("identical, quote from another attribute", f'The name is identical ("atlanta"), {SAME}',
     "match", MARY_A, MARY_B, "claim"),
    # claim: other phrasings of the rules teacher
    ("share, a word of one name", f'The names share "tea", {SAME}', "match", MARY_A, FLEUR, "claim"),
    ("share, a word of another attribute", f'The names share "st", {SAME}', "match", FRINGALE, FLEUR, "claim"),
    ("nothing in common, names that overlap",
     f'The names have nothing in common ("mary mac \'s tea room" vs "mary mac \'s"), {DIFFERENT}',
     "no_match", MARY_A, {**MARY_B, "name": "mary mac 's"}, "claim"),
    ("differ in, a shared word", f'The names differ in "mary" vs "fleur", {DIFFERENT}',
     "no_match", MARY_A, {**FLEUR, "name": "mary fleur"}, "claim"),
    ("numbers agree", f"The price values agree (10 vs 20), {SAME}", "match", PRICE_10, PRICE_20, "claim"),
    ("numbers far apart", f"The price values are far apart (199.99 vs 189.00), {DIFFERENT}",
     "no_match", CAMERA_A, CAMERA_B, "claim"),
    ("numbers not the records'", f"The price values agree (10 vs 10), {SAME}", "match", PRICE_10, PRICE_20, "claim"),
    ("an identifier of one record", f'Both records carry the identifier "dsc-w80", {SAME}',
     "match", CAMERA_C, CAMERA_B, "claim"),
    ("has no, where it has", f"A has no price, {SAME}", "match", CAMERA_A, CAMERA_B, "claim"),
    # verdict: the conclusion argues the other verdict
    ("a match argued for no_match", f'The name is identical ("mary mac \'s tea room"), {SAME}',
     "no_match", MARY_A, MARY_B, "verdict"),
    ("a non-match argued for match", f'The names have nothing in common ("fringale" vs "fleur de lys"), {DIFFERENT}',
     "match", FRINGALE, FLEUR, "verdict"),
    ("not the same, for match", "They are not the same restaurant.", "match", FRINGALE, FLEUR, "verdict"),
    # repeat: a decoding loop
    ("a repeated clause", f'The name is identical ("mary mac \'s tea room"){LOOP}{LOOP}{LOOP}, {SAME}',
     "match", MARY_A, MARY_B, "repeat"),
    ("a span said three times", "The name matches the name matches the name matches the name matches.",
     "match", MARY_A, MARY_B, "repeat"),
    # cut: stopped at the token limit
    ("no final period", f'The name is identical ("mary mac \'s tea room"), so they refer to the same',
     "match", MARY_A, MARY_B, "cut"),
    ("an open quote at the end", 'The name is identical ("mary mac', "match", MARY_A, MARY_B, "cut"),
]


@pytest.mark.parametrize("text, verdict, left, right, check", [c[1:] for c in CATCHES], ids=[c[0] for c in CATCHES])
def test_checker_catches_each_false_rationale(text, verdict, left, right, check):
    """``check``: the checks that fail, first one first ("quote+claim")."""
    expected = check.split("+")
    result = check_rationale(text, verdict, left, right)
    assert not result.ok and result.check == expected[0], result
    assert result.reason and str(result).startswith(f"{expected[0]}: ")
    # ... and nothing else is wrong with it: each case isolates its check
    assert [f.check for f in rationale_failures(text, verdict, left, right)] == expected


def test_checker_reports_every_failing_check_in_order():
    # issue 29's looping demo text, as generated: a hallucinated quote, a loop, cut mid-quote
    text = "The name is identical (\"` cafe '\")" + " and the addr is identical (\"'" * 12
    failed = rationale_failures(text, "match", MARY_RAW_A, MARY_RAW_B)
    assert [f.check for f in failed] == ["quote", "claim", "repeat", "cut"]
    assert [f.check for f in failed] == [c for c in CHECKS if c in {f.check for f in failed}]
    assert check_rationale(text, "match", MARY_RAW_A, MARY_RAW_B).check == "quote"


def test_checker_cut_when_empty_or_truncated():
    good = explain_pair(MARY_A, MARY_B, 1)
    assert check_rationale(good, "match", MARY_A, MARY_B).ok
    assert check_rationale(good, "match", MARY_A, MARY_B, truncated=True).check == "cut"
    for empty in (None, "", "   "):
        assert check_rationale(empty, "match", MARY_A, MARY_B).check == "cut"


TRUE_PAIRS = {
    "same restaurant": (MARY_A, MARY_B),
    "same restaurant, demo spelling": (MARY_RAW_A, MARY_RAW_B),
    "two restaurants": (FRINGALE, FLEUR),
    "names share a word": (CAFE_LUNA, CAFE_RITZ),
    "same camera, prices close": (CAMERA_A, CAMERA_B),
    "other camera model": (CAMERA_A, CAMERA_C),
    "prices 10 and 20": (PRICE_10, PRICE_20),
    "a missing price": (MISSING, WITH_PRICE),
    "identical records": (FLEUR, dict(FLEUR)),
}


@pytest.mark.parametrize("label", [1, 0])
@pytest.mark.parametrize("pair", TRUE_PAIRS.values(), ids=TRUE_PAIRS.keys())
@pytest.mark.parametrize("decided_by", ["the label", MATCHER])
def test_true_rules_explanations_pass(pair, label, decided_by):
    left, right = pair
    text = explain_pair(left, right, label, decided_by=decided_by)
    verdict = "match" if label else "no_match"
    assert rationale_failures(text, verdict, left, right) == [], text
    assert stance(text) == (1 if label else -1), text
    # the same text explains only its own verdict
    assert check_rationale(text, "no_match" if label else "match", left, right).check == "verdict"


def test_true_rationales_in_other_phrasing_pass():
    for text, verdict, left, right in [
        (f'Both are "mary mac \'s tea room" at "224 ponce de leon ave.", {SAME}', "match", MARY_A, MARY_B),
        ('"fringale" and "fleur de lys" are different restaurants.', "no_match", FRINGALE, FLEUR),
        (f'The camera models "dsc-w55" and "dsc-w80" differ, {DIFFERENT}', "no_match", CAMERA_A, CAMERA_C),
        ("Nothing here settles it.", "match", FRINGALE, FLEUR),  # no stance, no quote, no claim
    ]:
        assert check_rationale(text, verdict, left, right).ok, text


def test_quotes_are_compared_normalized():
    # case, runs of whitespace and the kind of double quote do not matter
    left = {"name": 'Mary  Mac\'s "Tea"\nRoom'}
    assert check_rationale(f"A is \"mary mac's 'tea' room\", {SAME}", "match", left, left).ok
    assert check_rationale(f"A is \u201cMARY MAC'S\u201d, {SAME}", "match", left, left).ok
    assert check_rationale(f'A is "mary macs", {SAME}', "match", left, left).check == "quote"


# --- 2. the score-time fallback ---------------------------------------------------------

def _long_text(seed: int, chars: int = 5000) -> str:
    rng = random.Random(seed)
    words = ["digital", "camera", "lens", "zoom", "battery", "optical", "sensor", "screen", "mode",
             "with", "and", "the", "image", "stabilizer", "7.2mp", "3x", "2.5", "inch", "lcd", "video"]
    out: list[str] = []
    while len(" ".join(out)) < chars:
        out.append(rng.choice(words) + rng.choice(["", "", "", str(rng.randint(0, 99))]))
    return " ".join(out)[:chars]


LONG_A, LONG_B = _long_text(1), _long_text(2)
EDGE_PAIRS = {
    "all values empty": ({"name": "", "price": None}, {"name": None, "price": ""}),
    "no attributes": ({}, {}),
    "right side empty": (MARY_A, {k: "" for k in MARY_A}),
    "left side empty": ({k: None for k in FLEUR}, FLEUR),
    "right lacks attributes": (CAMERA_A, {"title": CAMERA_B["title"]}),
    "whitespace only": ({"name": "  \n\t "}, {"name": "fringale"}),
    "numeric only, close": ({"price": "10.00", "year": "1999", "qty": "3"},
                            {"price": "10.25", "year": "1999", "qty": "3"}),
    "numeric only, apart": ({"price": "$1,299.00", "upc": "012345678905"}, {"price": "$49", "upc": "012345678912"}),
    "numeric, one missing": ({"price": "10", "year": ""}, {"price": "-20", "year": "2003"}),
    "very long descriptions": ({"title": "canon eos", "description": LONG_A},
                               {"title": "canon eos kit", "description": LONG_B}),
    "very long, identical": ({"description": LONG_A}, {"description": LONG_A}),
    "very long vs empty": ({"description": LONG_A, "price": "5"}, {"description": "", "price": "5"}),
}
BAD_TEXTS = [
    'The name is identical ("cafe") and the name is identical ("cafe") and the name is identical ("cafe',
    "",
    "They refer to the same entity and they are different entities",
]


@pytest.mark.parametrize("verdict", ["match", "no_match"])
@pytest.mark.parametrize("pair", EDGE_PAIRS.values(), ids=EDGE_PAIRS.keys())
def test_fallback_gives_a_passing_rules_rationale(pair, verdict):
    left, right = pair
    assert len(LONG_A) == 5000 and LONG_A != LONG_B
    label = 1 if verdict == "match" else 0
    for bad in BAD_TEXTS:
        assert not check_rationale(bad, verdict, left, right).ok  # the fallback is needed
        text, by = checked_rationale(bad, verdict, left, right, None)
        assert by == "rules"
        assert text == explain_pair(left, right, label, None, decided_by=MATCHER)
        assert rationale_failures(text, verdict, left, right) == [], text
        assert stance(text) == (1 if label else -1), text
    # its quotes are the records' own (what constrained decoding allows, too)
    values = [normalize(v) for v in record_values(left, right)]
    assert all(any(normalize(q) in v for v in values) for q in QUOTED.findall(text))


@pytest.mark.parametrize("order", [None, ["addr", "name"]])
def test_fallback_keeps_a_good_student_text(order):
    for text, verdict, left, right in [
        (f'The name is identical ("mary mac \'s tea room"), {SAME}', "match", MARY_A, MARY_B),
        (f'The names have nothing in common ("fringale" vs "fleur de lys"), {DIFFERENT}', "no_match", FRINGALE, FLEUR),
    ]:
        assert checked_rationale(text, verdict, left, right, order) == (text, "student")
        # the same text for the other verdict is replaced
        other = "no_match" if verdict == "match" else "match"
        replaced, by = checked_rationale(text, other, left, right, order)
        assert by == "rules" and replaced != text and check_rationale(replaced, other, left, right, order).ok


def test_record_values_are_what_may_be_quoted():
    assert record_values({"a": " x  y ", "b": None, "c": ""}, {"a": 3, "d": "\n"}) == ["x y", "3"]


# A few attribute names, none the plural of another (known bug 4 below).
NAMES = ["name", "addr", "price", "brand name", "modelno", "title"]
TRICKY_WORDS = [
    "vs", "and", "the", "is", "identical", "share", "only", "in", "A", "B", "has", "no", "(", ")", "'", '"',
    "match", "same", "entity", "different", "not", "refer", "to", "12ab34", "12-ab-34", "$10", "10", "10.5",
    "1,000", "café", "Straße", "İ", "ﬁ", "ü", "x", "\t", "  ", "\n",
]
VALUES = st.one_of(
    st.none(),
    st.text(max_size=30),  # any unicode, whitespace and straight quotes included
    st.text(alphabet=st.sampled_from(list("ab \"'.,;-()$0123456789xé\t\n")), max_size=30),
    st.lists(st.sampled_from(TRICKY_WORDS), max_size=8).map(" ".join),
    st.integers(-(10**6), 10**9).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(str),
    st.sampled_from([MARY_A["name"], MARY_B["addr"], FRINGALE["name"], CAMERA_A["title"], CAMERA_B["price"]]),
)

_CLAUSE_SEPARATOR_IN_VALUE = re.compile(r"[,;.]\s|\s(?:and|but|so)\s", re.I)


def _outside_known_bugs(record: dict) -> bool:
    """False for a record that triggers one of the known bugs pinned at the end of the file."""
    values = [clean_value(v) for v in record.values()]
    if any(c in v for v in values for c in "\u201c\u201d"):  # bug 1: a curly quote in a value
        return False
    if any('"' in code for code in identifier_codes(record, list(record)).values()):  # bug 2
        return False
    # bug 5: a clause separator inside a value (",", ";", "." then a space; and, but, so)
    return not any(_CLAUSE_SEPARATOR_IN_VALUE.search(v) for v in values)


# Values stay under 300 characters (bug 3) by their sizes above.
RECORDS = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=5).filter(_outside_known_bugs)


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(left=RECORDS, right=RECORDS, label=st.sampled_from([0, 1]))
def test_property_rules_explanation_always_passes(left, right, label):
    text = explain_pair(left, right, label, decided_by=MATCHER)
    verdict = "match" if label else "no_match"
    assert rationale_failures(text, verdict, left, right) == [], text
    assert checked_rationale(text, verdict, left, right, None) == (text, "student")


# --- 3. constrained decoding never quotes what is not in the input ----------------------

def _demo_table(name: str) -> list[dict[str, str]]:
    with open(DEMO_DATA / name, encoding="utf-8", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "id"} for r in csv.DictReader(fh)]


DEMO_A, DEMO_B = _demo_table("tableA.csv"), _demo_table("tableB.csv")
# What a student's tokenizer is trained on: serialized records and the rules teacher's
# explanations (which quote the records in double quotes).
CORPUS = [serialize_record(r) for r in DEMO_A + DEMO_B] + [
    explain_pair(a, b, i % 2) for i, (a, b) in enumerate(zip(DEMO_A, DEMO_B))
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads contend (measured: a
    6-pair generate took 10-18 s with two, 0.3-0.4 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    """A random-weight tiny preset T5 and its tokenizer, trained by the presets code."""
    torch.manual_seed(0)
    model, tokenizer = build_preset("tiny", CORPUS)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def index(tiny):
    return QuoteIndex(tiny[1])


def _ungrounded(text: str, sources: list[str]) -> list[str]:
    """The closed quoted spans of ``text`` that are in none of ``sources`` (normalized)."""
    values = [normalize(s) for s in sources]
    spans = [normalize(span).strip() for span in QUOTED.findall(text)]
    return [s for s in spans if not any(s in v for v in values)]


def _random_walk(tokenizer, index, sources, seed, prefix_words="match", steps=60, constrained=True):
    """Greedy decoding over seeded random logits, quote tokens made likely: the decoded text
    (as StudentPredictor.generate decodes it) and how many quoted spans it closed."""
    vocab = len(tokenizer)
    prefix = [tokenizer.pad_token_id] + tokenizer(prefix_words, add_special_tokens=False)["input_ids"]
    constraint = QuoteConstraint(index, [sources], skip=len(prefix))
    bias = torch.zeros(vocab)
    bias[index.quote_ids] = 6.0
    bias[tokenizer.eos_token_id] = float("-inf")  # run to the step limit
    gen = torch.Generator().manual_seed(seed)
    ids = list(prefix)
    for _ in range(steps):
        scores = torch.randn(1, vocab, generator=gen) * 2 + bias
        if constrained:
            scores = constraint(torch.tensor([ids]), scores)
        ids.append(int(scores[0].argmax()))
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return text, len(QUOTED.findall(text))


def test_tokenizer_has_quote_tokens_and_the_walk_can_fail(tiny, index):
    """The property below is not vacuous: quote tokens exist, the walk closes quotes, and
    without the constraint the same walk quotes text that is in neither record."""
    tokenizer = tiny[1]
    assert len(index.quote_ids) > 20
    assert not any(c in t for t in index.texts for c in "\u201c\u201d")  # see known bug 6
    sources = record_values(MARY_A, FRINGALE)
    unconstrained = [_random_walk(tokenizer, index, sources, seed, constrained=False) for seed in range(3)]
    assert all(_ungrounded(text, sources) for text, _ in unconstrained)
    constrained = [_random_walk(tokenizer, index, sources, seed) for seed in range(3)]
    assert sum(n for _, n in constrained) >= 10
    assert not any(_ungrounded(text, sources) for text, _ in constrained)


SOURCE_VALUES = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from(list("ab \"'.-0123456789stave")), max_size=30),
    st.sampled_from([r[k] for r in DEMO_A[:40] + DEMO_B[:40] for k in ("name", "addr", "city")]),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    sources=st.lists(SOURCE_VALUES, min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
    prefix=st.sampled_from(["match", "no match"]),
)
def test_property_constraint_never_quotes_outside_the_sources(tiny, index, sources, seed, prefix):
    text, _ = _random_walk(tiny[1], index, sources, seed, prefix)
    assert _ungrounded(text, sources) == [], (text, sources)


class _QuoteHappyNoise(LogitsProcessor):
    """Seeded noise that makes quote tokens likely: a random-weight model would rarely quote."""

    def __init__(self, quote_ids: list[int], seed: int):
        self.quote_ids, self.gen = quote_ids, torch.Generator().manual_seed(seed)

    def __call__(self, input_ids, scores):
        noise = torch.randn(scores.shape, generator=self.gen) * 3
        noise[:, self.quote_ids] += 8.0
        return scores + noise.to(scores.device, scores.dtype)


def test_student_generate_with_sources_quotes_only_the_pair(tiny, index, monkeypatch):
    model, tokenizer = tiny
    predictor = StudentPredictor(model, tokenizer, 0.5, SerializerSettings(), None)
    predictor._quote_index = index
    seed = [0]
    generate = model.generate

    def noisy_generate(**kwargs):
        constraint = list(kwargs.get("logits_processor") or [])
        processors = LogitsProcessorList([_QuoteHappyNoise(index.quote_ids, seed[0]), *constraint])
        return generate(**{**kwargs, "logits_processor": processors})

    monkeypatch.setattr(model, "generate", noisy_generate)
    lefts, rights = DEMO_A[:8], DEMO_B[:8]
    texts = [serialize_pair(left, right) for left, right in zip(lefts, rights)]
    sources = [record_values(left, right) for left, right in zip(lefts, rights)]
    spans = 0
    for seed[0], verdict in [(0, "match"), (1, "match"), (2, "no_match")]:
        out = predictor.generate(texts, max_new_tokens=40, verdict=verdict, sources=sources)
        for text, row in zip(out, sources):
            assert text.startswith("match" if verdict == "match" else "no match"), text
            assert _ungrounded(text, row) == [], (text, row)
            spans += len(QUOTED.findall(text))
    assert spans >= 30  # the noise made it quote: the assertion above had work to do
    # without sources the same noisy decoding quotes things that are in neither record
    seed[0] = 0
    free = predictor.generate(texts, max_new_tokens=40, verdict="match")
    assert any(_ungrounded(text, row) for text, row in zip(free, sources))


# --- known bugs (1, 2, 4, 5 found by the property tests above, 3 and 6 while writing them);
# strict: a fix makes its test XPASS, which fails the run until the marker goes ---------

@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug 1: rules._quote escapes '\"' but not curly quotes, which QUOTED reads as delimiters",
)
def test_known_bug_curly_quote_in_a_value_breaks_the_rules_explanation():
    left, right = {"title": "samsung 32\u201d lcd tv"}, {"title": "garden hose"}
    text = explain_pair(left, right, 0, decided_by=MATCHER)
    # 'The titles have nothing in common ("samsung 32” lcd tv" vs "garden hose"), ...' -> quote: 'vs'
    assert check_rationale(text, "no_match", left, right).ok, text


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug 2: rules._codes_phrase quotes identifiers without escaping '\"'",
)
def test_known_bug_double_quote_inside_an_identifier():
    left, right = {"title": 'acer aspire 15.6"hd'}, {"title": "acer aspire as5536"}
    for label, verdict in [(0, "no_match"), (1, "match")]:
        text = explain_pair(left, right, label, decided_by=MATCHER)
        # 'The identifiers differ ("15.6"hd" in A vs "as5536" in B) ...' -> quote: 'in a vs'
        assert check_rationale(text, verdict, left, right).ok, text


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug 3: QUOTED reads at most 300 characters between quotes; rules quotes 6 words of any length",
)
def test_known_bug_a_quote_over_300_characters():
    left, right = {"url": "http://x.example/" + "a" * 300}, {"url": "http://y.example/" + "b" * 300}
    text = explain_pair(left, right, 0, decided_by=MATCHER)
    assert check_rationale(text, "no_match", left, right).ok, text


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug 4: 'the names' is read as attribute 'names' where both 'name' and 'names' exist",
)
def test_known_bug_attribute_named_as_the_plural_of_another():
    left, right = {"name": "fringale"}, {"name": "fleur de lys", "names": None}
    text = explain_pair(left, right, 0, decided_by=MATCHER)
    # 'The names have nothing in common ("fringale" vs "fleur de lys")' -> claim: not in A's names
    assert check_rationale(text, "no_match", left, right).ok, text


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug 5: the repeat check splits clauses inside quoted values",
)
def test_known_bug_repeat_check_reads_inside_quotes():
    # title == description (common in product data), a value with " and " in it
    left = {"title": "salt and pepper set", "description": "salt and pepper set"}
    right = {"title": "garlic press", "description": "garlic press"}
    text = explain_pair(left, right, 0, decided_by=MATCHER)
    # -> repeat: the clause 'pepper set" vs "garlic press")' repeats
    assert check_rationale(text, "no_match", left, right).ok, text


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="bug 6: QuoteConstraint tracks only '\"' while QUOTED also reads curly quotes as delimiters",
)
def test_known_bug_constraint_lets_curly_quotes_through():
    # a student tokenizer whose corpus holds curly quotes (product titles: 32” lcd tv)
    tokenizer = train_tokenizer(CORPUS[:200] + ["samsung 32\u201d lcd tv \u201ccafe\u201d"] * 20, 2000)
    index = QuoteIndex(tokenizer)
    sources = record_values(MARY_A, MARY_B)
    prefix = [tokenizer.pad_token_id] + tokenizer("match", add_special_tokens=False)["input_ids"]
    ids = prefix + tokenizer(" the \u201ccafe\u201d.", add_special_tokens=False)["input_ids"]
    constraint = QuoteConstraint(index, [sources], skip=len(prefix))
    allowed = all(
        torch.isfinite(constraint(torch.tensor([ids[:t]]), torch.zeros(1, len(tokenizer)))[0, ids[t]])
        for t in range(len(prefix), len(ids))
    )
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if _ungrounded(text, sources) != ["cafe"]:  # not an AssertionError: this xfail needs it
        pytest.fail(f"the example should quote 'cafe', in neither record: {text!r}")
    assert not allowed, f"the constraint allowed {text!r}"


def test_known_bug_inputs_are_what_the_property_strategy_leaves_out():
    """The exclusions in _outside_known_bugs cover the bugs' examples and no more than
    their triggers (a value with quotes, unicode or long text is still generated)."""
    assert not _outside_known_bugs({"title": "samsung 32\u201d lcd tv"})
    assert not _outside_known_bugs({"title": 'acer aspire 15.6"hd'})
    assert not _outside_known_bugs({"title": "salt and pepper set"})
    assert _outside_known_bugs({"title": 'samsung 32" lcd tv', "name": "Straße café ﬁ", "x": None})
    assert _outside_known_bugs({"title": "224 ponce de leon ave."})
