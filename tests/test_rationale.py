"""Rationales true to their records (issue 29): the checker (em_spark.rationale), the
score-time fallback to the rules explanation, and decoding that cannot invent a quote
(em_spark.student.constrained), without Spark.

The property tests draw records with curly and straight quotes inside values and
identifiers, values over 300 characters, clause separators and repeated phrases inside
values, and attribute names that are the plural of another; the regression tests at the
end keep one minimal example of each of those inputs that once broke a rationale.
"""

from __future__ import annotations

import csv
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor, LogitsProcessorList

from em_spark.rationale import CHECKS, QUOTED, check_rationale, normalize, rationale_failures, stance
from em_spark.serialize import SerializerSettings, serialize_pair, serialize_record
from em_spark.student.constrained import QuoteConstraint, QuoteIndex
from em_spark.student.inference import StudentPredictor
from em_spark.student.presets import build_preset, train_tokenizer
from em_spark.teacher.rules import explain_pair
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


# Attribute names, some the plural of another ("names" is also the plural of "name").
NAMES = ["name", "names", "addr", "price", "prices", "brand name", "modelno", "title", "titles"]
TRICKY_WORDS = [
    "vs", "and", "but", "so", "the", "is", "identical", "share", "only", "in", "A", "B", "has", "no", "(", ")",
    "'", '"', "\u201c", "\u201d", ",", ";", ".", "match", "same", "entity", "different", "not", "refer", "to",
    "12ab34", "12-ab-34", '15.6"hd', 'ab"12', "32\u201d", "\u201ccafe\u201d", "dsc-w55\u201d", "$10", "10",
    "10.5", "1,000", "café", "Straße", "İ", "ﬁ", "ü", "x", "\t", "  ", "\n",
]
_QUOTEY = list("ab \"'\u201c\u201d.,;-()$0123456789xé\t\n")
_PHRASES = st.one_of(
    st.lists(st.sampled_from(TRICKY_WORDS), min_size=1, max_size=4).map(" ".join),
    st.sampled_from(["salt and pepper set", "mary mac 's tea room", "224 ponce de leon ave.", 'samsung 32" lcd']),
)
VALUES = st.one_of(
    st.none(),
    st.text(max_size=30),  # any unicode, whitespace and straight quotes included
    st.text(alphabet=st.sampled_from(_QUOTEY), max_size=30),
    st.lists(st.sampled_from(TRICKY_WORDS), max_size=8).map(" ".join),
    st.integers(-(10**6), 10**9).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(str),
    st.sampled_from([MARY_A["name"], MARY_B["addr"], FRINGALE["name"], CAMERA_A["title"], CAMERA_B["price"]]),
    # over 300 characters: one long word (quoted whole), or long words among short ones
    st.text(alphabet=st.sampled_from(list("ab0-./:\"\u201c\u201d")), min_size=290, max_size=700),
    st.tuples(st.sampled_from(["http://x.example/", "sku ", ""]), st.text("ab1", min_size=300, max_size=500),
              st.sampled_from(["", " and more", ' 15.6"hd'])).map("".join),
    # a phrase said again inside the value
    st.tuples(_PHRASES, st.integers(2, 4), st.sampled_from([" ", ", ", " and ", "; ", ". "])).map(
        lambda t: t[2].join([t[0]] * t[1])
    ),
)
# Records, with one value often copied to other attributes (title == description).
RECORDS = st.builds(
    lambda record, value, names: {**record, **{n: value for n in names}},
    st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=5),
    VALUES,
    st.lists(st.sampled_from(NAMES), max_size=3),
)


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(left=RECORDS, right=RECORDS, label=st.sampled_from([0, 1]))
def test_property_rules_explanation_always_passes(left, right, label):
    text = explain_pair(left, right, label, decided_by=MATCHER)
    verdict = "match" if label else "no_match"
    assert rationale_failures(text, verdict, left, right) == [], text
    assert checked_rationale(text, verdict, left, right, None) == (text, "student")
    # a text the checker rejects falls back to that same rules explanation
    assert checked_rationale(BAD_TEXTS[0], verdict, left, right, None) == (text, "rules")


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


# Product titles with curly quotes in them (32\u201d lcd tv), as a student's corpus may hold.
CURLY_CORPUS = CORPUS + ["samsung 32\u201d lcd tv \u201ccafe\u201d", "\u201cthe\u201d \u201cmary\u201d st."] * 20


@pytest.fixture(scope="module")
def curly():
    """A tokenizer with curly-quote tokens, and its index."""
    tokenizer = train_tokenizer(CURLY_CORPUS, 2000)
    return tokenizer, QuoteIndex(tokenizer)


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
    bias[index.quote_ids + index.curly_ids] = 6.0  # straight and curly quotes made likely
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


@pytest.mark.parametrize("which", ["tiny", "curly"])
def test_tokenizer_has_quote_tokens_and_the_walk_can_fail(tiny, index, curly, which):
    """The property below is not vacuous: quote tokens exist, the walk closes quotes, and
    without the constraint the same walk quotes text that is in neither record."""
    tokenizer, index = (tiny[1], index) if which == "tiny" else curly
    assert len(index.quote_ids) > 20
    # the preset tokenizer has no curly-quote token; the other has several
    assert (len(index.curly_ids) >= 2) == (which == "curly")
    sources = record_values(MARY_A, FRINGALE)
    unconstrained = [_random_walk(tokenizer, index, sources, seed, constrained=False) for seed in range(3)]
    assert all(_ungrounded(text, sources) for text, _ in unconstrained)
    if which == "curly":
        assert any(c in text for text, _ in unconstrained for c in "\u201c\u201d")
    constrained = [_random_walk(tokenizer, index, sources, seed) for seed in range(3)]
    assert sum(n for _, n in constrained) >= 10
    assert not any(_ungrounded(text, sources) for text, _ in constrained)
    assert not any(c in text for text, _ in constrained for c in "\u201c\u201d")


SOURCE_VALUES = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from(list("ab \"'\u201c\u201d.-0123456789stave")), max_size=30),
    st.sampled_from([r[k] for r in DEMO_A[:40] + DEMO_B[:40] for k in ("name", "addr", "city")]),
    st.sampled_from(["samsung 32\u201d lcd tv", "\u201ccafe\u201d", 'acer aspire 15.6"hd']),
    st.text(alphabet=st.sampled_from(list("ab \"\u201c\u201d.-0123456789stave")), min_size=300, max_size=500),
    st.tuples(_PHRASES, st.integers(2, 4)).map(lambda t: " ".join([t[0]] * t[1])),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    sources=st.lists(SOURCE_VALUES, min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
    prefix=st.sampled_from(["match", "no match"]),
    which=st.sampled_from(["tiny", "curly"]),
)
def test_property_constraint_never_quotes_outside_the_sources(tiny, index, curly, sources, seed, prefix, which):
    tokenizer, index = (tiny[1], index) if which == "tiny" else curly
    text, _ = _random_walk(tokenizer, index, sources, seed, prefix)
    assert _ungrounded(text, sources) == [], (text, sources)
    assert not any(c in text for c in "\u201c\u201d"), text


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


# --- 4. regressions: one minimal example of each input that once broke a rationale ------

def _rules_texts_pass(left, right) -> dict[str, str]:
    """The rules explanation of either label passes the checker on these records, and the
    score-time fallback gives it in place of a bad text (and keeps it as it is)."""
    texts = {}
    for label, verdict in [(1, "match"), (0, "no_match")]:
        text = explain_pair(left, right, label, decided_by=MATCHER)
        assert rationale_failures(text, verdict, left, right) == [], text
        assert stance(text) == (1 if label else -1), text
        assert checked_rationale(BAD_TEXTS[0], verdict, left, right, None) == (text, "rules")
        assert checked_rationale(text, verdict, left, right, None) == (text, "student")
        texts[verdict] = text
    return texts


def test_curly_quote_in_a_value_is_quoted_safely():
    # once: '("samsung 32” lcd tv" vs "garden hose")', the ” read as a closing quote -> quote: 'vs'
    left, right = {"title": "samsung 32\u201d lcd tv"}, {"title": "garden hose"}
    texts = _rules_texts_pass(left, right)
    assert '"samsung 32\' lcd tv"' in texts["no_match"], texts
    assert not any(c in text for text in texts.values() for c in "\u201c\u201d"), texts


def test_double_quote_inside_an_identifier_is_quoted_safely():
    # once: '("15.6"hd" in A vs "as5536" in B)' -> quote: 'in a vs'
    left, right = {"title": 'acer aspire 15.6"hd'}, {"title": "acer aspire as5536"}
    texts = _rules_texts_pass(left, right)
    assert all("15.6'hd" in text for text in texts.values()), texts


def test_a_quote_over_300_characters_is_read_whole():
    # once: QUOTED read at most 300 characters between quotes, the rules quote 6 words of any length
    left, right = {"url": "http://x.example/" + "a" * 300}, {"url": "http://y.example/" + "b" * 300}
    texts = _rules_texts_pass(left, right)
    assert normalize(left["url"]) in [normalize(q) for q in QUOTED.findall(texts["no_match"])], texts
    # a long quote in neither record is still caught
    text = f'A is "{"c" * 400}", {DIFFERENT}'
    assert check_rationale(text, "no_match", left, right).check == "quote"


def test_attribute_named_as_the_plural_of_another_is_checked_under_either_name():
    # once: 'The names have nothing in common' was read as attribute "names" (empty) alone
    left, right = {"name": "fringale"}, {"name": "fleur de lys", "names": None}
    _rules_texts_pass(left, right)
    both = {"name": "fringale", "names": "fleur de lys"}
    _rules_texts_pass(both, {"name": "fleur de lys", "names": "fringale"})
    # a claim false under both readings still fails
    false = f'The names have nothing in common ("fringale" vs "fringale"), {DIFFERENT}'
    assert check_rationale(false, "no_match", both, both).check == "claim"


def test_repeat_check_ignores_repeats_inside_quotes():
    # title == description (common in product data), a value with " and " in it;
    # once: the clause 'pepper set" vs "garlic press")' read as repeated
    left = {"title": "salt and pepper set", "description": "salt and pepper set"}
    right = {"title": "garlic press", "description": "garlic press"}
    _rules_texts_pass(left, right)
    # a value that repeats itself is data, not a loop
    loud = {"name": "buy now, buy now, buy now, buy now"}
    _rules_texts_pass(loud, {"name": "buy now, buy now, buy now, buy later"})
    # a repeated clause around the quotes still is one
    looped = f'The name is identical ("mary mac \'s tea room"){LOOP}{LOOP}{LOOP}, {SAME}'
    assert check_rationale(looped, "match", MARY_A, MARY_B).check == "repeat"


def test_constraint_never_emits_curly_quotes(curly):
    # once: QuoteConstraint tracked only '"', and let ' the “cafe”.' through (cafe is in neither record)
    tokenizer, index = curly
    assert index.curly_ids
    sources = record_values(MARY_A, MARY_B)
    prefix = [tokenizer.pad_token_id] + tokenizer("match", add_special_tokens=False)["input_ids"]
    ids = prefix + tokenizer(" the \u201ccafe\u201d.", add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert _ungrounded(text, sources) == ["cafe"], text  # what it would have let through
    constraint = QuoteConstraint(index, [sources], skip=len(prefix))
    allowed = [
        bool(torch.isfinite(constraint(torch.tensor([ids[:t]]), torch.zeros(1, len(tokenizer)))[0, ids[t]]))
        for t in range(len(prefix), len(ids))
    ]
    assert not all(allowed), text
    # curly quotes are barred at every step, inside a straight quote or outside one
    inside = prefix + tokenizer(' the "mary', add_special_tokens=False)["input_ids"]
    assert QuoteConstraint(index, [sources], skip=len(prefix)).quote_state(0, inside) == "mary"
    for ids_so_far in (prefix, ids[: len(prefix) + 1], inside):
        fresh = QuoteConstraint(index, [sources], skip=len(prefix))
        scores = fresh(torch.tensor([ids_so_far]), torch.zeros(1, len(tokenizer)))[0]
        assert torch.isinf(scores[index.curly_ids]).all(), tokenizer.decode(ids_so_far)
