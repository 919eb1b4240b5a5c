"""Stand-ins for two OpenAI-compatible model servers, to try the gateway without models, and
to make them fail the ways real ones do.

Each answers ``POST /v1/chat/completions`` (JSON, or SSE chunks with ``stream: true``) with a
reply that names itself and counts the request's images, and ``GET /v1/models``. A JSON
answer carries ``usage`` (10 prompt tokens, one completion token per word); a stream ends
with a usage event when the request asks for one (``stream_options.include_usage``).

Faults
------
A fault config (``vlroute dev-backends --faults FILE``, YAML or JSON) maps a stand-in's name,
``edge`` or ``cloud``, to how it misbehaves::

    cloud: {status: 401}                         # every request: HTTP 401, OpenAI envelope
    edge: {status: 500, every: 3}                # requests 3, 6, 9, ...: HTTP 500
    edge: {mode: cut_stream, after_chunks: 2}    # the connection drops after 2 SSE chunks
    edge: {mode: slow, delay_s: 0.5}             # 0.5 s before the answer starts
    edge: {mode: no_usage}                       # answers without usage
    edge: {mode: bad_usage}                      # usage with unbelievable counts
    judge: {mode: malformed, every: 2}           # the judge forgets its SCORE line
    edge: {accuracy: 0.6, latency: {median_s: 0.2, sigma: 0.5}, status: 429, every: 5}

A timeout is ``{mode: slow, delay_s: 30}`` against a client that waits less.

The keys of one fault:

``mode``
    ``status``, ``slow``, ``cut_stream``, ``no_usage``, ``bad_usage``, ``malformed`` or
    ``ok``; default ``status`` when ``status`` is given, else ``ok``. ``malformed``: a
    model's 200 answer is not JSON; the judge's answer has no ``SCORE:`` line.
``status`` (400-599), ``message``
    Mode ``status``: the reply's status (required) and its error message.
``every`` (>= 1, default 1)
    Only every n-th chat request gets the fault (counted from 1, per stand-in); the others
    are answered normally.
``delay_s`` (default 1), ``chunk_delay_s`` (default 0)
    Mode ``slow``: seconds before the answer starts, and between a stream's chunks.
``after_chunks`` (default 1)
    Mode ``cut_stream``: SSE chunks sent before the connection is dropped. A non-streamed
    answer is cut half-way through its body (the connection drops short of its
    Content-Length).
``accuracy`` (0-1), ``latency`` (``{median_s, sigma}``)
    Apply to every request, faulty or not, of a stand-in started with a set of known answers
    (``--answers SET``, :mod:`vlroute.serve.dev_answers`): it answers a sample of the set
    correctly with probability ``accuracy``, fixed per sample by a hash (default 1), and
    starts its answer after a log-normal delay around ``median_s``, also fixed per sample.

The stand-in named ``judge`` is a stub judge: it reads a judge prompt (the rubric's
``[Question]``, ``[Reference answer]`` and ``[Response]`` sections), compares the response
with the reference (from the prompt, else from ``--answers``) and answers with a line
``SCORE: n`` (0-10). ``GET /admin/calls`` counts each stand-in's answered requests per
request key (a 200 each), so a test can see whether a sample was called twice.

A key that another mode uses, an unknown key or an out-of-range value is refused with a
one-line :class:`FaultConfigError`. While a stand-in runs, ``POST /admin/faults`` with one
fault (``{}``: none) replaces its fault and restarts the count; ``GET /admin/faults`` shows
it. :func:`spawn` runs one stand-in with a fault in a subprocess (through the CLI).
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Literal

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vlroute.errors import VlrouteError
from vlroute.serve.dev_answers import (
    Latency,
    judge_prompt_of,
    judge_reply,
    model_answer,
    prompt_of,
    request_key,
)
from vlroute.serve.dev_replies import Reply, answer, error_reply

#: the stand-ins ``vlroute dev-backends`` starts, in the order of ``--ports EDGE,CLOUD``
NAMES = ("edge", "cloud", "judge")
#: the keys only one mode uses
_MODE_KEYS = {"status": "status", "message": "status", "delay_s": "slow",
              "chunk_delay_s": "slow", "after_chunks": "cut_stream"}


class FaultConfigError(VlrouteError):
    """A fault config that is not a mapping of stand-in names to valid faults."""


class Fault(BaseModel):
    """How one stand-in misbehaves (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["ok", "status", "slow", "cut_stream", "no_usage", "bad_usage",
                  "malformed"] = "ok"
    status: int | None = Field(None, ge=400, le=599)
    message: str | None = None
    every: int = Field(1, ge=1)
    delay_s: float = Field(1.0, ge=0, le=600)
    chunk_delay_s: float = Field(0.0, ge=0, le=60)
    after_chunks: int = Field(1, ge=0)
    accuracy: float = Field(1.0, ge=0, le=1)
    latency: Latency | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "mode" not in raw and raw.get("status") is not None:
            return {**raw, "mode": "status"}
        return raw

    @model_validator(mode="after")
    def _keys_of_the_mode(self) -> Fault:
        for key in sorted(self.model_fields_set & set(_MODE_KEYS)):
            if _MODE_KEYS[key] != self.mode:
                raise ValueError(f"{key} applies to mode {_MODE_KEYS[key]} only, and the "
                                 f"mode is {self.mode}")
        if self.mode == "status" and self.status is None:
            raise ValueError("mode status needs a status (400-599)")
        return self

    def hits(self, count: int) -> bool:
        """Whether the ``count``-th request (from 1) gets the fault."""
        return self.mode != "ok" and count % self.every == 0


def parse_fault(raw: object, where: str) -> Fault:
    """One fault from its mapping; a one-line :class:`FaultConfigError` naming ``where``."""
    if not isinstance(raw, dict):
        raise FaultConfigError(f"{where}: a fault is a mapping (e.g. {{status: 401}}), got "
                               f"{type(raw).__name__}.")
    try:
        return Fault.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(": ".join([*(str(p) for p in e["loc"]),
                                        e["msg"].removeprefix("Value error, ")])
                             for e in exc.errors())
        raise FaultConfigError(f"{where}: {problems}.") from None


def parse_faults(raw: object, source: str) -> dict[str, Fault]:
    """A fault config (stand-in name -> fault) from its parsed YAML or JSON."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FaultConfigError(f"{source}: expected a mapping of backend names ({', '.join(NAMES)})"
                               f" to faults, got {type(raw).__name__}.")
    unknown = [str(name) for name in raw if name not in NAMES]
    if unknown:
        raise FaultConfigError(f"{source}: unknown backend {unknown[0]!r}; the stand-ins are "
                               f"{', '.join(NAMES)}.")
    return {name: parse_fault(fault, f"{source}: {name}") for name, fault in raw.items()}


def load_faults(handle: IO[str], source: str) -> dict[str, Fault]:
    """Read a fault config (YAML, or JSON, which YAML reads too) from ``handle``."""
    try:
        raw = yaml.safe_load(handle.read())
    except yaml.YAMLError as exc:
        line = " ".join(str(exc).split())
        raise FaultConfigError(f"{source}: not valid YAML or JSON ({line}).") from None
    return parse_faults(raw, source)


def _reply(name: str, body: dict[str, Any], fault: Fault, hit: bool,
           answers: Mapping[str, str]) -> tuple[Reply, str]:
    """The reply to ``body`` (a model's answer from the set, or the stub judge's) and the
    request's key."""
    text, images = prompt_of(body)
    key = request_key(text, images)
    said: str | None = None
    if name == "judge":                 # the rubric's prompt, also under a follow-up turn
        said = judge_reply(judge_prompt_of(body) or text, dict(answers))
        if hit and fault.mode == "malformed":
            said = said.rpartition("SCORE:")[0].strip() + " I would call it good overall."
    elif answers:
        said = model_answer(name, key, dict(answers), fault.accuracy)
    return Reply(name, body, said, bad_usage=hit and fault.mode == "bad_usage"), key


def stub_app(name: str, fault: Fault | None = None,
             answers: Mapping[str, str] | None = None) -> FastAPI:
    """An OpenAI-compatible backend called ``name``: instant, or misbehaving as ``fault``
    says (changed at run time through ``POST /admin/faults``); with ``answers`` (key ->
    reference, :func:`vlroute.serve.dev_answers.load_answers`) it answers the set's samples
    right or wrong as the fault's ``accuracy`` says, and the ``judge`` stand-in scores."""
    app = FastAPI(title=f"vlroute dev backend {name}")
    app.state.fault, app.state.requests = fault or Fault(), 0
    app.state.answered = collections.Counter()
    known = dict(answers or {})

    @app.get("/admin/calls")
    async def calls() -> JSONResponse:
        return JSONResponse({"backend": name, "requests": app.state.requests,
                             "answered": dict(app.state.answered)})

    def faults() -> JSONResponse:
        return JSONResponse({"backend": name, "fault": app.state.fault.model_dump(
            exclude_defaults=True), "requests": app.state.requests})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model"}]})

    @app.get("/admin/faults")
    async def show_faults() -> JSONResponse:
        return faults()

    @app.post("/admin/faults")
    async def change_faults(request: Request) -> JSONResponse:
        try:
            new = parse_fault(json.loads(await request.body() or b"{}"), name)
        except ValueError:
            return error_reply(400, "the body must be one fault as JSON, e.g. {\"status\": 401}.")
        except FaultConfigError as exc:
            return error_reply(400, str(exc))
        app.state.fault, app.state.requests = new, 0
        app.state.answered.clear()
        return faults()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error_reply(400, "the body must be a JSON object.")
        app.state.requests += 1
        fault: Fault = app.state.fault
        hit = fault.hits(app.state.requests)
        reply, key = _reply(name, body, fault, hit, known)
        if fault.latency is not None:
            await asyncio.sleep(fault.latency.draw(name, key))
        response = await answer(reply, fault, hit)
        if response.status_code == 200:
            app.state.answered[key] += 1
        return response

    return app


def spawn(name: str, port: int, fault: Mapping[str, Any] | Fault | None = None, *,
          host: str = "127.0.0.1", log: IO[bytes] | None = None,
          answers: Path | None = None) -> subprocess.Popen[bytes]:
    """Run stand-in ``name`` on ``port`` with ``fault`` (and the set of known ``answers``)
    in a subprocess (``vlroute dev-backends``, the fault given on its standard input);
    returns without waiting for it to listen. Stop it with ``terminate()``."""
    if isinstance(fault, Fault):
        fault = fault.model_dump(exclude_defaults=True)
    parse_faults({name: dict(fault or {})}, "spawn")           # refuse it here, not there
    command = [sys.executable, "-c", "from vlroute.cli import main; main()", "dev-backends",
               "--host", host, "--ports", f"{name}={port}", "--faults", "-",
               *(["--answers", str(answers)] if answers is not None else [])]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({name: dict(fault or {})}).encode())
    proc.stdin.close()
    return proc


def parse_ports(spec: str) -> dict[str, int]:
    """``EDGE,CLOUD`` or ``NAME=PORT[,NAME=PORT]`` -> {name: port}; ValueError when not."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts and all("=" not in p for p in parts):
        if len(parts) != 2:
            raise ValueError("give two ports, EDGE,CLOUD, or NAME=PORT pairs (edge=18001).")
        parts = [f"{n}={p}" for n, p in zip(NAMES[:2], parts, strict=True)]
    out: dict[str, int] = {}
    for part in parts:
        name, _, port = part.partition("=")
        if name not in NAMES or name in out:
            raise ValueError(f"{part!r}: the stand-ins are {', '.join(NAMES)}, each once.")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{part!r}: a port is a number from 1 to 65535.")
        out[name] = int(port)
    if not out:
        raise ValueError("give two ports, EDGE,CLOUD, or NAME=PORT pairs (edge=18001).")
    return out


def _quiet_cuts() -> None:
    """uvicorn logs an error for every response a fault cuts on purpose: not for these."""
    import logging

    class CutFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "without completing response" not in record.getMessage()

    logging.getLogger("uvicorn.error").addFilter(CutFilter())


async def serve(host: str, ports: Mapping[str, int], faults: Mapping[str, Fault],
                answers: Mapping[str, str] | None = None) -> None:
    """Serve the stand-ins named in ``ports`` until cancelled."""
    import uvicorn

    _quiet_cuts()
    servers = [uvicorn.Server(uvicorn.Config(stub_app(name, faults.get(name), answers),
                                             host=host,
                                             port=port, log_level="warning", backlog=4096))
               for name, port in ports.items()]
    await asyncio.gather(*(s.serve() for s in servers))


def describe(faults: Mapping[str, Fault]) -> str:
    """One line per faulty stand-in, for the CLI."""
    return "; ".join(f"{name}: {fault.model_dump(exclude_defaults=True)}"
                     for name, fault in faults.items() if fault.mode != "ok")


__all__ = ["NAMES", "Fault", "FaultConfigError", "load_faults", "parse_fault", "parse_faults",
           "parse_ports", "serve", "spawn", "stub_app"]
