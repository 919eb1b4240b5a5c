"""What collect sends: the samples of a set folder (the shared jsonl contract) or of a bench,
and the OpenAI-compatible chat body of one sample (text, then each image as a base64 data
URL of the file's own bytes, so a backend sees exactly the stored image)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlroute.data.readers._checks import iter_jsonl, read_json_object, relative_image_path
from vlroute.errors import DataError, ReaderError

_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp"}


@dataclass(frozen=True)
class Sample:
    """One request to collect: its contract fields and where its images are."""

    sample_id: str
    question: str
    answer: str | None
    images: tuple[str, ...]                      # relative to ``root``
    root: Path
    row: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)
    #: the image files, joined once (collect builds each sample's body, fingerprint and
    #: token estimate from them, at thousands of calls a second)
    _paths: tuple[Path, ...] = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_paths", tuple(self.root / rel for rel in self.images))

    def image_paths(self) -> list[Path]:
        """The image files, absolute."""
        return list(self._paths)


@dataclass(frozen=True)
class SampleSet:
    """The samples of a source, its set info and the file it came from."""

    name: str
    samples: list[Sample]
    info: dict[str, Any]
    source: Path


def read_samples(src: Path) -> SampleSet:
    """The samples of a set folder (``samples.jsonl``) or a bench directory
    (``manifest.json``); errors name the file and line and what was expected."""
    src = Path(src)
    if (src / "manifest.json").is_file():
        return _bench_samples(src)
    path = src / "samples.jsonl"
    if not src.is_dir() or not path.is_file():
        raise ReaderError(src, None, "expected a set folder holding samples.jsonl (the shared "
                                     "data contract) or a bench directory (manifest.json)")
    samples, seen = [], set()
    for number, obj in iter_jsonl(path):
        where = f"line {number}"
        sid, question = obj.get("sample_id"), obj.get("question")
        if not isinstance(sid, str) or not isinstance(question, str):
            raise ReaderError(path, where, "expected 'sample_id' and 'question' strings")
        if sid in seen:
            raise ReaderError(path, where, f"duplicate sample_id {sid!r}")
        seen.add(sid)
        images = obj.get("images") or []
        if not isinstance(images, list):
            raise ReaderError(path, where, "'images' must be a list of relative paths")
        rels = tuple(relative_image_path(v, path=path, where=where) for v in images)
        answer = obj.get("answer")
        samples.append(Sample(sid, question, None if answer is None else (
            answer if isinstance(answer, str) else json.dumps(answer)), rels, src, obj))
    if not samples:
        raise ReaderError(path, None, "no samples; expected at least one JSON object")
    info = read_json_object(src / "set.json", missing_ok=True)
    return SampleSet(str(info.get("name") or src.name), samples, info, src)


def _bench_samples(root: Path) -> SampleSet:
    from vlroute.data.bench import load_bench

    bench = load_bench(root)
    by_sample: dict[int, list[str]] = {}
    for idx, rel in zip(bench.images["sample_idx"], bench.images["path"], strict=True):
        by_sample.setdefault(int(idx), []).append(str(rel))
    samples = []
    for i, row in enumerate(bench.samples.itertuples(index=False)):
        answer = getattr(row, "answer", None)
        raw_meta = getattr(row, "meta", None)
        meta = json.loads(raw_meta) if isinstance(raw_meta, str) else {}
        sid, question = str(row.sample_id), str(row.question)
        images = by_sample.get(i, [])
        contract: dict[str, Any] = {
            "sample_id": sid, "dataset": str(row.dataset), "group": str(row.group),
            "task": None if row.task is None else str(row.task), "question": question,
            "images": images, "answer": answer if isinstance(answer, str) else None,
            "meta": meta}
        samples.append(Sample(sid, question, contract["answer"], tuple(images), root,
                              contract))
    info = dict(bench.manifest.get("set_info") or {})
    return SampleSet(bench.name, samples, info, root)


def data_url(path: Path, encode: Any = None) -> str:
    """``data:<mime>;base64,...`` of the file's bytes (``encode``: a base64 function, default
    pybase64's when installed, else the standard library's)."""
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise DataError(f"{path}: unknown image type {path.suffix!r}; expected one of "
                        f"{', '.join(sorted(_MIME))}.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc.strerror or exc}).") from exc
    return f"data:{mime};base64,{(encode or _b64)(data).decode('ascii')}"


def image_bytes(path: Path) -> tuple[bytes, bytes]:
    """``(b"data:<mime>;base64,", base64 of the file's bytes)``: :func:`data_url` as bytes,
    in two parts (errors as :func:`data_url`'s)."""
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise DataError(f"{path}: unknown image type {path.suffix!r}; expected one of "
                        f"{', '.join(sorted(_MIME))}.")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc.strerror or exc}).") from exc
    return f"data:{mime};base64,".encode("ascii"), _b64(data)


def _b64(data: bytes) -> bytes:
    try:
        import pybase64

        return bytes(pybase64.b64encode(data))
    except ImportError:                      # pragma: no cover - pybase64 ships with [serve]
        import base64

        return base64.b64encode(data)


def chat_body(sample: Sample, model: str, *, max_tokens: int, stream: bool,
              temperature: float = 0.0,
              image_url: Callable[[Path], str] | None = None) -> dict[str, Any]:
    """The chat request for ``sample``: one user turn, the question then its images
    (``image_url`` makes each image's URL; default :func:`data_url`)."""
    content: Any = sample.question
    url = image_url or data_url
    if sample.images:
        content = [{"type": "text", "text": sample.question}, *(
            {"type": "image_url", "image_url": {"url": url(p)}}
            for p in sample.image_paths())]
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, "temperature": temperature}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


#: stands for the i-th image URL while the rest of a body is serialised
_SLOT = "@vlroute-image-slot-{}@"


def chat_payload(sample: Sample, model: str, *, max_tokens: int, stream: bool,
                 temperature: float = 0.0) -> bytes:
    """``orjson.dumps(chat_body(...))``, byte for byte, built without copying each image's
    base64 text three times: the body is serialised with a short slot per image URL and the
    base64 bytes are joined in its place (base64 needs no JSON escaping)."""
    import orjson

    if not sample.images:
        return orjson.dumps(chat_body(sample, model, max_tokens=max_tokens, stream=stream,
                                      temperature=temperature))
    paths = sample.image_paths()
    numbers = iter(range(len(paths)))
    raw = orjson.dumps(chat_body(sample, model, max_tokens=max_tokens, stream=stream,
                                 temperature=temperature,
                                 image_url=lambda _path: _SLOT.format(next(numbers))))
    parts: list[bytes] = []
    for k, path in enumerate(paths):
        slot = _SLOT.format(k).encode()
        head, found, raw = raw.partition(slot)
        if not found or slot in raw:      # the question holds a slot's text: do it plainly
            return orjson.dumps(chat_body(sample, model, max_tokens=max_tokens,
                                          stream=stream, temperature=temperature))
        parts += [head, *image_bytes(path)]
    parts.append(raw)
    return b"".join(parts)
