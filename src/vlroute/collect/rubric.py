"""The judge's rubric, versioned: what the judge is asked, and how its answer is read.

The prompt puts the question, the reference answer (when the sample has one) and the
response under the headers ``[Question]``, ``[Reference answer]`` and ``[Response]``, and asks
for a last line ``SCORE: <integer 0-10>``. :func:`parse_score` reads exactly that and nothing
else: a missing, out-of-range, fractional or contradictory score is malformed (``None``), and
the caller asks again (the judge's answer and :data:`REMINDER` as a follow-up turn), then
records the response as unscored; a score is never guessed.

Changing the wording or the parsing makes a new :data:`RUBRIC_VERSION`; the version is stored
with every score and is part of the cache key, so scores of two rubrics never mix.
"""

from __future__ import annotations

import re

RUBRIC_VERSION = "vlroute-rubric/1"

SYSTEM = ("You are a strict, fair grader of answers to questions about images and text. "
          "You follow the rubric exactly and end with the score line it asks for.")

SCALE = """Scale:
10 = fully correct and complete;
7-9 = correct in substance, with minor omissions or imprecision;
4-6 = partly correct;
1-3 = mostly wrong, with some relevant content;
0 = wrong, empty, or a refusal."""

_WITH_REFERENCE = ("A reference answer is given: judge the response's correctness against it. "
                   "A response that reaches the reference's final answer in other words or by "
                   "another route is correct; extra detail neither helps nor hurts unless it "
                   "is wrong.")
_WITHOUT_REFERENCE = ("No reference answer is given: judge correctness, helpfulness and "
                      "faithfulness to the question (and the image, when shown) yourself.")
_NO_IMAGE = ("The question refers to an image that is not shown to you: judge from the "
             "question and the reference answer only, and do not penalise the response for "
             "describing the image.")

#: the follow-up turn after a malformed answer
REMINDER = ("Your answer did not end with a line of the form SCORE: <integer from 0 to 10>. "
            "Reply with that line only.")

_SCORE_LINE = re.compile(r"^\W*score\W*[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\**\s*\.?$",
                         re.IGNORECASE)
_ANY_SCORE = re.compile(r"score\W*[:=]\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def judge_prompt(question: str, response: str, reference: str | None, *,
                 image_hidden: bool) -> str:
    """The rubric's user message for one response."""
    rules = [_WITH_REFERENCE if reference is not None else _WITHOUT_REFERENCE]
    if image_hidden:
        rules.append(_NO_IMAGE)
    parts = ["Rate the response to the question below on a scale of 0 to 10.", *rules, SCALE,
             "", "[Question]", question.strip()]
    if reference is not None:
        parts += ["", "[Reference answer]", reference.strip()]
    parts += ["", "[Response]", response.strip() or "(empty)", "", "[End]",
              "Reply with one or two sentences of justification, then a last line of the "
              "form SCORE: <integer from 0 to 10>."]
    return "\n".join(parts)


def parse_score(text: str) -> int | None:
    """The score of a judge's answer, or None when it is malformed: the last non-empty line
    must be ``SCORE: n`` (n an integer 0-10, ``/10`` allowed, markdown emphasis ignored),
    and no other score line may name a different number."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    found = _SCORE_LINE.match(lines[-1])
    if found is None:
        return None
    value = float(found.group(1))
    if value != int(value) or not 0 <= value <= 10:
        return None
    others = {float(v) for v in _ANY_SCORE.findall("\n".join(lines[:-1]))}
    if others - {value}:
        return None
    return int(value)


__all__ = ["REMINDER", "RUBRIC_VERSION", "SCALE", "SYSTEM", "judge_prompt", "parse_score"]
