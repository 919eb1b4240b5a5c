"""Scoring a response against a reference answer by rule, 0-10: what ``vlroute judge
reference`` records and what the dev stand-ins' stub judge answers.

- a number (``2.0944``): the response's **last** number must equal it within 0.1% (models
  put the final answer last, after their working);
- a choice letter (``B``): the response's last standalone capital A-H must be it;
- other short answers (up to 4 words, ``Sep``, ``right angle``): the words must appear in
  the response in that order;
- a longer reference (a free-form answer): word overlap, F1 x 10, rounded.

Short references score 10 or 0. A rule is a heuristic, not a judge: it cannot tell a wrong
answer that quotes the reference from a right one; use an LLM judge for free-form answers.

>>> match_score("2.0944", "The period is 2*pi/3, about 2.0944")
10
>>> match_score("B", "A is wrong; the answer is B.")
10
>>> match_score("Sep", "It was in September")
0
"""

from __future__ import annotations

import math
import re
from collections import Counter

_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_LETTER = re.compile(r"\b([A-H])\b")


def _number(text: str) -> float | None:
    found = _NUMBER.fullmatch(text.strip().rstrip("."))
    return float(found.group().replace(",", "")) if found else None


def match_score(reference: str, response: str) -> int:
    """0-10: how well ``response`` matches ``reference`` (see the module docstring)."""
    ref_words = _TOKEN.findall(reference.lower())
    if not ref_words or not response.strip():
        return 0
    value = _number(reference)
    if value is not None:
        numbers = _NUMBER.findall(response)
        last = float(numbers[-1].replace(",", "")) if numbers else None
        return 10 if last is not None and math.isclose(value, last, rel_tol=1e-3,
                                                        abs_tol=1e-6) else 0
    if re.fullmatch(r"\(?[A-Ha-h]\)?\.?", reference.strip()):
        letters = _LETTER.findall(response)
        return 10 if letters and letters[-1] == reference.strip(" ().").upper() else 0
    words = _TOKEN.findall(response.lower())
    if len(ref_words) <= 4:
        n = len(ref_words)
        return 10 if any(words[i:i + n] == ref_words for i in range(len(words) - n + 1)) else 0
    common = sum((Counter(ref_words) & Counter(words)).values())
    if not common:
        return 0
    precision, recall = common / len(words), common / len(ref_words)
    return round(10 * 2 * precision * recall / (precision + recall))


__all__ = ["match_score"]
