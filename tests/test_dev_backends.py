"""The dev stand-ins and their faults (``vlroute dev-backends --faults``), in-process."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tests._process import free_port, wait_for
from vlroute.cli import cli
from vlroute.serve.dev_backends import (
    Fault,
    FaultConfigError,
    load_faults,
    parse_faults,
    parse_ports,
    spawn,
    stub_app,
)

ASK = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
USAGE = {"include_usage": True}


def stub(**fault: Any) -> TestClient:
    return TestClient(stub_app("edge", Fault.model_validate(fault)))


def events(c: TestClient, **extra: Any) -> list[bytes]:
    with c.stream("POST", "/v1/chat/completions", json={**ASK, "stream": True, **extra}) as r:
        assert r.status_code == 200
        return [e for e in b"".join(r.iter_bytes()).split(b"\n\n") if e]


def test_answers_name_the_stand_in_and_report_usage() -> None:
    with stub() as c:
        assert c.get("/v1/models").json()["data"][0]["id"] == "edge"
        reply = c.post("/v1/chat/completions", json=ASK).json()
        assert reply["choices"][0]["message"]["content"].startswith("[edge] got 1 message")
        assert reply["model"] == "small" and reply["usage"]["prompt_tokens"] == 10
        plain = events(c)
        assert plain[-1] == b"data: [DONE]" and b'"usage"' not in b"".join(plain)
        asked = events(c, stream_options=USAGE)
        usage = json.loads(asked[-2].removeprefix(b"data: "))["usage"]
        assert usage["completion_tokens"] == len(plain) - 1        # one token per chunk
        bad = c.post("/v1/chat/completions", content=b"[1]")
        assert bad.status_code == 400 and set(bad.json()["error"]) >= {"message", "type"}


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
def test_a_status_fault_answers_the_openai_envelope(status: int) -> None:
    with stub(status=status, message="no") as c:
        r = c.post("/v1/chat/completions", json=ASK)
        assert r.status_code == status
        assert r.json()["error"]["message"] == "no"
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert c.post("/v1/chat/completions", json={**ASK, "stream": True}).status_code == status


def test_every_nth_request_gets_the_fault() -> None:
    with stub(status=500, every=3) as c:
        codes = [c.post("/v1/chat/completions", json=ASK).status_code for _ in range(7)]
    assert codes == [200, 200, 500, 200, 200, 500, 200]


@pytest.mark.parametrize("after", [0, 2])
def test_cut_stream_drops_the_connection_after_some_chunks(after: int) -> None:
    with stub(mode="cut_stream", after_chunks=after) as c:
        cut = events(c, stream_options=USAGE)
        assert len(cut) == after and b"[DONE]" not in b"".join(cut)
        r = c.post("/v1/chat/completions", json=ASK)            # JSON: half of the body
        assert int(r.headers["content-length"]) > len(r.content) > 0


def test_slow_waits_before_the_answer_and_between_chunks() -> None:
    with stub(mode="slow", delay_s=0.2, chunk_delay_s=0.05) as c:
        start = time.perf_counter()
        assert c.post("/v1/chat/completions", json=ASK).status_code == 200
        assert time.perf_counter() - start >= 0.2
        start = time.perf_counter()
        chunks = events(c)
        assert time.perf_counter() - start >= 0.2 + 0.05 * (len(chunks) - 1)


def test_no_usage_leaves_usage_out() -> None:
    with stub(mode="no_usage") as c:
        assert "usage" not in c.post("/v1/chat/completions", json=ASK).json()
        assert b'"usage"' not in b"".join(events(c, stream_options=USAGE))


def test_admin_faults_changes_the_fault_at_run_time() -> None:
    with stub() as c:
        assert c.post("/v1/chat/completions", json=ASK).status_code == 200
        changed = c.post("/admin/faults", json={"status": 403, "every": 2}).json()
        assert changed == {"backend": "edge", "requests": 0,
                           "fault": {"mode": "status", "status": 403, "every": 2}}
        codes = [c.post("/v1/chat/completions", json=ASK).status_code for _ in range(2)]
        assert codes == [200, 403]
        assert c.get("/admin/faults").json()["requests"] == 2
        refused = c.post("/admin/faults", json={"mode": "slow", "after_chunks": 1})
        assert refused.status_code == 400
        assert "after_chunks applies to mode cut_stream only" in refused.json()["error"][
            "message"]
        assert c.post("/admin/faults", content=b"{").status_code == 400
        assert c.post("/admin/faults", json={}).json()["fault"] == {}
        assert c.post("/v1/chat/completions", json=ASK).status_code == 200


@pytest.mark.parametrize(("raw", "message"), [
    ([1], "expected a mapping of backend names (edge, cloud, judge) to faults, got list"),
    ({"gpu": {}}, "unknown backend 'gpu'; the stand-ins are edge, cloud, judge"),
    ({"edge": 3}, "edge: a fault is a mapping"),
    ({"edge": {"status": 200}}, "edge: status: Input should be greater than or equal to 400"),
    ({"edge": {"mode": "status"}}, "edge: mode status needs a status (400-599)"),
    ({"edge": {"mode": "fast"}}, "edge: mode: Input should be 'ok', 'status'"),
    ({"edge": {"every": 0}}, "edge: every: Input should be greater than or equal to 1"),
    ({"edge": {"delay_s": 1}}, "edge: delay_s applies to mode slow only, and the mode is ok"),
    ({"cloud": {"mode": "cut_stream", "status": 500}}, "status applies to mode status only"),
    ({"cloud": {"mode": "slow", "delay_s": -1}}, "cloud: delay_s: Input should be greater"),
    ({"cloud": {"status": 401, "colour": "red"}}, "colour: Extra inputs are not permitted"),
])
def test_a_bad_fault_config_is_one_line_naming_the_culprit(raw: object, message: str) -> None:
    with pytest.raises(FaultConfigError) as caught:
        parse_faults(raw, "faults.yaml")
    assert str(caught.value).startswith("faults.yaml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_fault_configs_read_as_yaml_or_json() -> None:
    yaml_text = "cloud: {status: 401}\nedge: {mode: cut_stream, after_chunks: 2}\n"
    faults = load_faults(io.StringIO(yaml_text), "f.yaml")
    assert faults["cloud"] == Fault(mode="status", status=401)
    assert faults["edge"].after_chunks == 2
    as_json = load_faults(io.StringIO(json.dumps({"edge": {"mode": "slow", "delay_s": 0.5}})),
                          "f.json")
    assert as_json["edge"].delay_s == 0.5 and load_faults(io.StringIO(""), "empty") == {}
    with pytest.raises(FaultConfigError, match=r"^f\.yaml: not valid YAML or JSON"):
        load_faults(io.StringIO("edge: {status: [}"), "f.yaml")


def test_ports_are_edge_cloud_or_named_pairs() -> None:
    assert parse_ports("18001,18002") == {"edge": 18001, "cloud": 18002}
    assert parse_ports("cloud=9") == {"cloud": 9}
    for bad in ("1", "1,2,3", "gpu=1", "edge=1,edge=2", "edge=x", "edge=70000", ""):
        with pytest.raises(ValueError):
            parse_ports(bad)


def test_the_cli_refuses_a_bad_fault_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "faults.yaml"
    bad.write_text("edge: {mode: cut_stream, delay_s: 1}\n")
    result = CliRunner().invoke(cli, ["dev-backends", "--faults", str(bad)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {bad}: edge: delay_s applies to mode slow only, and "
                             "the mode is cut_stream.\n")
    result = CliRunner().invoke(cli, ["dev-backends", "--ports", "edge=1", "--faults", "-"],
                                input='{"cloud": {"status": 401}}')
    assert result.exit_code == 2 and "names 'cloud', which is not started" in result.output
    assert "mode is status (the default when status is given)" in CliRunner().invoke(
        cli, ["dev-backends", "--help"]).output


def test_spawn_runs_one_stand_in_with_its_fault(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "stub.log").open("wb") as log:
        proc = spawn("cloud", port, {"status": 404}, log=log)
        try:
            wait_for(f"http://127.0.0.1:{port}/v1/models")
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=ASK)
            assert r.status_code == 404
            assert httpx.get(f"http://127.0.0.1:{port}/admin/faults").json()["fault"] == {
                "mode": "status", "status": 404}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    with pytest.raises(FaultConfigError, match="spawn: cloud: every"):
        spawn("cloud", port, {"every": -1})
