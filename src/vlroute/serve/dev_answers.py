"""What the dev stand-ins answer when they are given a set with known answers: a model that
is right with a set probability, deterministically per sample, and a stub judge that scores a
response by comparing it with the reference answer
(:func:`vlroute.data.answers.match_score`).

A request is known by its **key**: the SHA-256 of its last user turn's text and of the bytes
of each of its images (decoded from their data URLs), so the same sample gets the same draw
on every run, whatever client sends it. A set's samples are indexed by that key (their image
files' bytes) and, when a question's text is unique in the set, by the text alone (the
gateway's telemetry keeps no images, so exported requests come back text only).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vlroute.data.answers import match_score

#: the section headers of a judge prompt that the stub judge reads (vlroute's rubric writes
#: them; a real judge reads them as plain text)
JUDGE_SECTIONS = ("[Question]", "[Reference answer]", "[Response]")
#: what a stand-in says when its draw makes it wrong
WRONG = "I am not sure; I cannot tell from what I see."


class Latency(BaseModel):
    """Seconds before a stand-in's answer starts: log-normal around ``median_s`` with shape
    ``sigma`` (0: always the median), drawn deterministically per (stand-in, request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    median_s: float = Field(ge=0, le=60)
    sigma: float = Field(0.0, ge=0, le=3)

    def draw(self, name: str, key: str) -> float:
        """The delay for request ``key`` at stand-in ``name`` (at most 120 s)."""
        z = NormalDist().inv_cdf(uniform(name, key, "latency"))
        return min(self.median_s * math.exp(self.sigma * z), 120.0)


def uniform(name: str, key: str, salt: str) -> float:
    """A number in (0, 1) fixed by (stand-in, request, purpose)."""
    digest = hashlib.sha256(f"{name}|{key}|{salt}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0 ** 64


def request_key(text: str, images: list[bytes]) -> str:
    """The key of a request: its text and its images' bytes."""
    digest = hashlib.sha256(text.strip().encode())
    for image in images:
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


def _image_bytes(url: str) -> bytes:
    head, _, data = url.partition(",")
    if not head.startswith("data:") or ";base64" not in head:
        return url.encode()                       # a remote URL: its text stands for it
    try:
        return base64.b64decode(data, validate=False)
    except ValueError:
        return data.encode()


def prompt_of(body: dict[str, Any]) -> tuple[str, list[bytes]]:
    """The text and image bytes of a chat request's last user turn."""
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content, []
        texts, images = [], []
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
                images.append(_image_bytes(str(part["image_url"].get("url", ""))))
        return "\n".join(texts), images
    return "", []


def judge_prompt_of(body: dict[str, Any]) -> str | None:
    """The text of the latest user turn that holds a rubric's ``[Response]`` section (a
    reminder after a malformed answer comes after it)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            text, _ = prompt_of({"messages": [message]})
            if "[Response]" in text:
                return text
    return None


def load_answers(folder: Path) -> dict[str, str]:
    """Key -> reference answer of every sample of a set folder (the shared contract) that
    has one; raises ``ValueError`` naming the file when it cannot be read."""
    path = Path(folder) / "samples.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: missing; --answers names a set folder with samples.jsonl.")
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}, line {number}: not valid JSON.") from None
        if isinstance(row, dict) and row.get("answer") is not None:
            rows.append(row)
    texts = Counter(str(r.get("question", "")).strip() for r in rows)
    out: dict[str, str] = {}
    for row in rows:
        question = str(row.get("question", ""))
        images = [(Path(folder) / p).read_bytes() for p in row.get("images") or []]
        answer = row["answer"] if isinstance(row["answer"], str) else json.dumps(row["answer"])
        out[request_key(question, images)] = answer
        if texts[question.strip()] == 1:
            out.setdefault(request_key(question, []), answer)
    return out


def model_answer(name: str, key: str, answers: dict[str, str], accuracy: float) -> str | None:
    """What stand-in ``name`` answers: the reference with probability ``accuracy`` (fixed per
    request), else :data:`WRONG`; None when the request is not a sample of the set."""
    reference = answers.get(key)
    if reference is None:
        return None
    return f"The answer is {reference}" if uniform(name, key, "correct") < accuracy else WRONG


def sections(prompt: str) -> dict[str, str]:
    """The judge prompt's sections (:data:`JUDGE_SECTIONS`), by header."""
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in [*prompt.splitlines(), "[End]"]:
        header = line.strip()
        if header.startswith("[") and header.endswith("]"):
            if current is not None:
                found[current] = "\n".join(lines).strip()
            current, lines = (header if header in JUDGE_SECTIONS else None), []
        elif current is not None:
            lines.append(line)
    return found


def judge_reply(prompt: str, answers: dict[str, str]) -> str:
    """The stub judge's answer to a judge prompt: a comparison with the reference (from the
    prompt, else from the set by the question's key), ending with ``SCORE: n``."""
    parts = sections(prompt)
    reference = parts.get("[Reference answer]") or answers.get(
        request_key(parts.get("[Question]", ""), []))
    response = parts.get("[Response]", "")
    if reference is None:
        return "There is no reference answer to compare with.\nSCORE: 5"
    score = match_score(reference, response)
    return f"Compared with the reference answer, word by word.\nSCORE: {score}"


__all__ = ["JUDGE_SECTIONS", "WRONG", "Latency", "judge_prompt_of", "judge_reply",
           "load_answers", "model_answer", "prompt_of", "request_key", "sections", "uniform"]
