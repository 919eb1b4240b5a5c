"""Remote image URLs: refused by default; when enabled, fetched only from allow-listed hosts
that resolve to public addresses, never following redirects, and checked like data URLs."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.test_serve import Upstream, config
from vlroute.serve import remote_images
from vlroute.serve.app import create_app
from vlroute.serve.remote_images import host_allowed, public


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, format="PNG")
    return buf.getvalue()


class Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
            "/ok.png": (200, "image/png", png(), {}),
            "/moved": (302, "text/plain", b"", {"Location": "/ok.png"}),
            "/page": (200, "text/html", b"<html></html>", {}),
            "/big.png": (200, "image/png", b"\x89PNG" + b"\0" * 5000, {}),
            "/broken.png": (200, "image/png", b"\x89PNG not really", {}),
        }
        status, kind, body, extra = routes.get(self.path, (404, "text/plain", b"", {}))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def ask_image(url: str) -> dict[str, Any]:
    return {"model": "edge", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]}


def test_remote_urls_are_refused_by_default(tmp_path: Path) -> None:
    up = Upstream()
    with TestClient(create_app(config(tmp_path), transport=up)) as c:
        r = c.post("/v1/chat/completions", json=ask_image("https://example.com/cat.png"))
    assert r.status_code == 400 and "disabled" in r.json()["error"]["message"]
    assert up.seen == []


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
                                     "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1",
                                     "2002:7f00:1::1", "64:ff9b::a00:1"])
def test_private_loopback_and_link_local_addresses_are_not_public(address: str) -> None:
    assert not public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert public(address)


def test_allow_list_matching() -> None:
    allow = ["images.example.com", "*.cdn.example.org"]
    assert host_allowed("images.example.com", allow)
    assert host_allowed("IMAGES.example.com.", allow)
    assert host_allowed("a.b.cdn.example.org", allow)
    assert not host_allowed("cdn.example.org", allow)
    assert not host_allowed("evilcdn.example.org", allow)
    assert not host_allowed("images.example.com.evil.net", allow)


def enabled(tmp_path: Path, hosts: list[str]) -> Any:
    return config(tmp_path, remote_images={"enabled": True, "allow_hosts": hosts},
                  limits={"max_image_bytes": 2048})


def test_hosts_off_the_list_and_private_targets_are_refused(tmp_path: Path,
                                                           image_server: int) -> None:
    up = Upstream()
    with TestClient(create_app(enabled(tmp_path, ["localhost", "127.0.0.1"]),
                               transport=up)) as c:
        off_list = c.post("/v1/chat/completions",
                          json=ask_image("http://images.example.net/cat.png"))
        loopback = c.post("/v1/chat/completions",
                          json=ask_image(f"http://localhost:{image_server}/ok.png"))
        literal = c.post("/v1/chat/completions",
                         json=ask_image(f"http://127.0.0.1:{image_server}/ok.png"))
    assert off_list.status_code == 403 and "allow list" in off_list.json()["error"]["message"]
    for r in (loopback, literal):
        assert r.status_code == 403, r.text
        assert "private, loopback or link-local" in r.json()["error"]["message"]
    assert up.seen == []


def test_allowed_images_are_fetched_checked_and_inlined(tmp_path: Path, image_server: int,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    # the test server is on loopback: let this test treat loopback as public
    monkeypatch.setattr(remote_images, "public", lambda address: True)
    up = Upstream()
    base = f"http://127.0.0.1:{image_server}"
    with TestClient(create_app(enabled(tmp_path, ["127.0.0.1"]), transport=up)) as c:
        ok = c.post("/v1/chat/completions", json=ask_image(f"{base}/ok.png"))
        assert ok.status_code == 200, ok.text
        sent = up.seen[-1][1]["messages"][0]["content"][1]["image_url"]["url"]
        assert sent == "data:image/png;base64," + base64.b64encode(png()).decode()
        seen = len(up.seen)
        refused = {path: c.post("/v1/chat/completions", json=ask_image(f"{base}{path}"))
                   for path in ("/moved", "/page", "/big.png", "/broken.png", "/missing")}
    assert len(up.seen) == seen                  # none of them reached a backend
    assert refused["/moved"].status_code == 400
    assert "redirects are not followed" in refused["/moved"].json()["error"]["message"]
    assert refused["/page"].status_code == 400
    assert "not image/*" in refused["/page"].json()["error"]["message"]
    assert refused["/big.png"].status_code == 413
    assert refused["/broken.png"].status_code == 400
    assert "does not decode" in refused["/broken.png"].json()["error"]["message"]
    assert refused["/missing"].status_code == 400
