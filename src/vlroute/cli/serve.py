"""``vlroute serve`` (the gateway) and ``vlroute dev-backends`` (two local stand-ins)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import IO, Any

import click

from vlroute.cli._ui import console


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path), required=True,
              help="Gateway YAML (see examples/gateway.yaml).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes (each loads the router and encoders).")
def serve(config_path: Path, host: str, port: int, workers: int) -> None:
    """Serve the OpenAI-compatible routing gateway."""
    import uvicorn

    from vlroute.serve.config import load_config

    config = load_config(config_path)          # fail here, with a clear message, not later
    artifact = config.router.artifact
    if artifact is not None and not (artifact / "router.json").is_file():
        console.print(f"[yellow]router artifact {artifact} not found: routing without a "
                      "router (each backend's prior_quality); run `vlroute demo` to make "
                      "one.[/yellow]")
    console.print(f"vlroute gateway on http://{host}:{port}/v1 ({len(config.backends)} "
                  f"backends, default scenario {config.default_scenario})")
    import os

    from vlroute.serve.protocol import HEADER_TIMEOUT_ENV, HeaderDeadlineProtocol

    os.environ[HEADER_TIMEOUT_ENV] = str(config.limits.header_timeout_s)
    if workers == 1:
        from vlroute.serve.app import create_app

        uvicorn.run(create_app(config), host=host, port=port, log_level="warning",
                    http=HeaderDeadlineProtocol)
        return
    import shutil
    import tempfile

    from vlroute.serve.metrics import METRICS_DIR_ENV

    os.environ["VLROUTE_CONFIG"] = str(config_path.resolve())
    # the workers add up their metrics, and follow reloads, through this directory
    shared = tempfile.mkdtemp(prefix="vlroute-metrics-")
    os.environ[METRICS_DIR_ENV] = shared
    try:
        settings = uvicorn.Config("vlroute.serve.factory:app_from_env", factory=True,
                                  host=host, port=port, workers=workers, log_level="warning",
                                  http=HeaderDeadlineProtocol)
        _reloading_workers(settings, Path(shared), sockets=[settings.bind_socket()]).run()
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _workers_class() -> type:
    from uvicorn.supervisors import Multiprocess

    class ReloadingWorkers(Multiprocess):
        """uvicorn's worker supervisor, except that SIGHUP asks every worker to reload its
        bundle in place (requests in flight finish, a broken bundle is refused and the old
        one keeps serving) instead of restarting the processes."""

        def __init__(self, config: object, shared: Path, **kwargs: object) -> None:
            super().__init__(config, **kwargs)  # type: ignore[arg-type]
            self.shared = shared

        def handle_hup(self) -> None:
            from vlroute.serve.gateway import request_reload

            request_reload(self.shared, None)

    return ReloadingWorkers


def _reloading_workers(config: object, shared: Path, **kwargs: object) -> Any:
    return _workers_class()(config, shared, **kwargs)


@click.command("dev-backends")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--ports", default="18001,18002", show_default=True,
              help="EDGE,CLOUD ports (examples/gateway.yaml expects 18001 and 18002), or "
                   "NAME=PORT pairs to start only some (edge=18011).")
@click.option("--faults", "faults_file", type=click.File("r", encoding="utf-8"), default=None,
              metavar="FILE", help="Fault config, YAML or JSON ('-': standard input): "
                   "backend name -> fault (see below).")
@click.option("--answers", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, metavar="SET", help="A set folder with known answers: the "
              "stand-ins answer its samples right with probability `accuracy`, and the "
              "judge stand-in scores against them.")
def dev_backends(host: str, ports: str, faults_file: IO[str] | None,
                 answers: Path | None) -> None:
    """Start two instant OpenAI-compatible stand-ins ("edge" and "cloud") until Ctrl-C;
    judge=PORT in --ports also starts a stub judge.

    --faults FILE makes them misbehave. It maps a backend name to one fault:

    \b
      cloud: {status: 401}                       every request: HTTP 401
      edge: {status: 500, every: 3}              requests 3, 6, 9, ...: HTTP 500
      edge: {mode: cut_stream, after_chunks: 2}  connection dropped after 2 SSE chunks
                                                 (a JSON answer: half-way through)
      edge: {mode: slow, delay_s: 0.5, chunk_delay_s: 0.1}
                                                 0.5 s before the answer, 0.1 s between
                                                 stream chunks
      edge: {mode: no_usage}                     answers without usage
      edge: {mode: bad_usage}                    usage with unbelievable counts
      judge: {mode: malformed, every: 2}         no SCORE line (a model: not JSON)
      edge: {accuracy: 0.6, latency: {median_s: 0.2, sigma: 0.5}}
                                                 with --answers: right on 60% of the
                                                 set's samples (fixed per sample), after
                                                 a log-normal delay (fixed per sample)

    mode is status (the default when status is given), slow, cut_stream, no_usage,
    bad_usage, malformed or ok; a timeout is slow with a delay_s longer than the client
    waits;
    status (400-599) may come with a message; delay_s defaults to 1, chunk_delay_s to 0,
    after_chunks to 1; every N (default 1) makes only every N-th request faulty.
    POST /admin/faults on a stand-in, with one fault as JSON ({} for none), changes it
    while it runs; GET /admin/faults shows it.
    """
    from vlroute.serve.dev_answers import load_answers
    from vlroute.serve.dev_backends import describe, load_faults, parse_ports, serve

    try:
        numbers = parse_ports(ports)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ports") from None
    faults = {}
    if faults_file is not None:
        faults = load_faults(faults_file, faults_file.name)
        missing = sorted(set(faults) - set(numbers))
        if missing:
            raise click.BadParameter(f"the fault config names {missing[0]!r}, which is not "
                                     "started (see --ports).", param_hint="--faults")
    console.print(", ".join(f"{name} on http://{host}:{port}/v1" for name, port in
                            numbers.items()) + " (Ctrl-C stops)")
    if describe(faults):
        console.print(f"faults: {describe(faults)}")
    known = load_answers(answers) if answers is not None else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, numbers, faults, known))


@click.group("logs")
def logs() -> None:
    """Gateway telemetry."""


@logs.command("export")
@click.option("--telemetry", "url", default="sqlite:///vlroute-telemetry.db", show_default=True,
              help="The gateway's telemetry store.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Set folder to write (the shared data contract).")
@click.option("--include-unscored", is_flag=True, help="Also export requests without feedback.")
@click.option("--overwrite", is_flag=True)
def export(url: str, out: Path, include_unscored: bool, overwrite: bool) -> None:
    """Write scored requests as a set folder that `vlroute bench build` reads."""
    from vlroute.serve.export import export_scored
    from vlroute.serve.telemetry import open_store, sqlite_path

    if url.startswith("sqlite:///") and not sqlite_path(url).is_file():
        raise click.ClickException(f"no telemetry store at {sqlite_path(url)}.")
    store = open_store(url)
    try:
        counts = export_scored(store, out, include_unscored=include_unscored,
                               overwrite=overwrite)
    finally:
        store.close()
    console.print(f"{out}: {counts['exported']} request(s) exported; skipped "
                  f"{counts['unscored']} without a score and {counts['no_prompt']} without a "
                  "stored prompt (telemetry.store_prompts).")
