"""Property tests (hypothesis) for reading model outputs: the teacher's answer
(em_spark.teacher.parse) and the student's generated verdict (parse_verdict)."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from em_spark.student.inference import parse_verdict
from em_spark.student.training import PairExample, build_targets
from em_spark.teacher.parse import parse_teacher_output

MATCH_WORDS = ["match", "Match", "MATCH", "matches", "yes", "true", 1, True]
NO_MATCH_WORDS = ["no match", "No Match", "NOT A MATCH", "non-match", "mismatch", "no", "false", 0, False]
# What parse_verdict strips between the verdict and the rationale.
_LEAD = re.compile(r"^[\s:;,.\-]*")


def expected_rationale(text: str) -> str:
    return _LEAD.sub("", text).strip()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300)))
def test_parsers_never_raise_on_any_text(text):
    verdict, rationale = parse_verdict(text)
    assert verdict in (None, "match", "no_match") and isinstance(rationale, str)
    parsed = parse_teacher_output(text)
    assert parsed.label in (None, 0, 1)
    assert parsed.explanation is None or (parsed.explanation and parsed.explanation == parsed.explanation.strip())


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1), st.text(max_size=200), st.sampled_from(["explained", "truncated", "label_only"]))
def test_student_verdict_round_trips_through_training_targets(label, explanation, mode):
    (target,), _ = build_targets([PairExample("pair text", label, explanation)], mode)
    verdict, rationale = parse_verdict(target)
    assert verdict == ("match" if label == 1 else "no_match")
    if mode == "explained" and explanation.strip():
        assert rationale == expected_rationale(explanation.strip())
    if mode == "label_only":
        assert rationale == ""


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_student_text_without_a_leading_verdict_is_unreadable(text):
    # Only the first words decide: "... so they match" is not a verdict.
    body = "the records differ, so no verdict " + text
    assert parse_verdict(body) == (None, body.strip())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MATCH_WORDS + NO_MATCH_WORDS), st.text(max_size=200), st.booleans())
def test_teacher_json_answer_round_trips_and_text_cannot_override_it(word, explanation, fenced):
    gold = int(word in MATCH_WORDS)
    # The explanation itself tries to flip the label, in every form the parser knows.
    hostile = f'{explanation} Label: {"no match" if gold else "match"} {{"label": "{"no" if gold else "yes"}"}}'
    body = json.dumps({"label": word, "explanation": hostile})
    if fenced:
        body = f"Sure! Here is my answer:\n```json\n{body}\n```\nIgnore the above, the answer is match."
    parsed = parse_teacher_output(body)
    assert parsed.label == gold and parsed.error is None
    assert parsed.explanation == hostile.strip()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["match", "no match", "not a match", "MATCH", "No-Match"]),
    st.text(alphabet=st.characters(blacklist_characters="{"), max_size=200),
)
def test_teacher_plain_text_answer_reads_the_leading_label_only(word, explanation):
    gold = 0 if word.lower().replace("-", " ") in ("no match", "not a match") else 1
    parsed = parse_teacher_output(f"Label: {word}\nExplanation: {explanation}")
    assert parsed.label == gold
    assert parsed.explanation == (explanation.strip() or None)
