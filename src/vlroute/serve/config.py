"""Gateway configuration: a YAML file validated into typed settings.

Secrets never live in the file: a backend names the environment variable that holds its API
key (``api_key_env``), and auth keys are stored as SHA-256 hashes. ``VLROUTE_DEFAULT_SCENARIO``
and ``VLROUTE_TELEMETRY_URL`` override the file.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vlroute.errors import VlrouteError
from vlroute.scenarios import AUTO, PRESETS, Scenario, parse_scenario


class ConfigError(VlrouteError):
    """The gateway configuration is missing, malformed or inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(_Strict):
    """One OpenAI-compatible upstream."""

    name: str = Field(description="Name used in decisions, headers and `model` (no routing).")
    base_url: str = Field(description="Up to /v1, e.g. http://127.0.0.1:18001/v1.")
    model: str = Field(description="Model id sent upstream.")
    router_model: str | None = Field(None, description="The router's id of this model "
                                     "(a column of the bench it was trained on).")
    api_key_env: str | None = Field(None, description="Environment variable with the key.")
    tier: Literal["edge", "cloud"] = "cloud"
    price_in_per_1m: float = Field(0.0, ge=0, description="USD per 1M input tokens.")
    price_out_per_1m: float = Field(0.0, ge=0, description="USD per 1M output tokens.")
    latency_s: float = Field(2.0, gt=0, description="Expected latency before measurements.")
    energy_j: float = Field(0.0, ge=0, description="Expected energy per request.")
    power_w: float | None = Field(None, gt=0, description="Power drawn while answering "
                                  "(W): `vlroute collect` measures energy per request as "
                                  "this x the measured latency.")
    prior_quality: float = Field(0.7, ge=0, le=1, description="Quality used when no router "
                                 "artifact is loaded or the router does not know the model.")
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(64, ge=1)
    vision: bool = Field(True, description="Takes images; a text-only backend is left out "
                         "of the candidates of a request with images.")
    context_tokens: int | None = Field(None, ge=256, description="Context window; a backend "
                                       "is left out of the candidates of a request whose "
                                       "estimated prompt tokens plus max_tokens exceed it.")
    image_tokens: str | int | None = Field(None, description="Tokens an image costs this "
                                           "model, for estimates: a rule of the cost catalog "
                                           "by name (qwen2-vl, openai-4o, claude, gemini, ...) "
                                           "applied to the image's size, or a number; "
                                           "unset: 765.")

    @field_validator("image_tokens")
    @classmethod
    def _image_rule(cls, value: str | int | None) -> str | int | None:
        from vlroute.costs.image_tokens import BUILTIN_RULES

        if isinstance(value, str) and value not in BUILTIN_RULES:
            raise ValueError(f"image_tokens must be a number or one of "
                             f"{', '.join(sorted(BUILTIN_RULES))}; got {value!r}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"image_tokens must be >= 0, got {value}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    def api_key(self) -> str | None:
        """The key from the environment (None when the backend needs none)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"backend {self.name!r}: environment variable "
                              f"{self.api_key_env} is not set.")
        return key


class RouterSettings(_Strict):
    """The router artifact and the encoders that make its features."""

    artifact: Path | None = Field(None, description="Folder written by `vlroute train` or "
                                  "`vlroute demo` (OUT/router); absent: training-free.")
    text_encoder: str | None = "minilm"
    image_encoder: str | None = "efficientnet-lite0"
    cache_size: int = Field(4096, ge=0, description="Feature rows kept per process, keyed by "
                            "a hash of the request's text and images (0: off).")
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="What computes the features: torch (the encoders' packages), "
        "onnx (onnxruntime on the bundle's exported graphs, `vlroute export onnx`; no torch "
        "imported), or auto: onnx when the bundle carries graphs for the configured "
        "encoders, else torch.")
    onnx_variant: Literal["fp32", "int8"] = Field(
        "fp32", description="Which exported graphs the onnx runtime runs: fp32 (features "
        "equal torch's to 1e-4) or int8 (`export onnx --quantize int8`; measured drift in "
        "docs/edge.md).")
    onnx_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads "
                              "per encoder.")


class AuthKey(_Strict):
    """An API key, stored as its SHA-256, with optional spend budgets (USD)."""

    id: str
    sha256: str = Field(min_length=64, max_length=64)
    budget_usd_day: float | None = Field(None, ge=0)
    budget_usd_month: float | None = Field(None, ge=0)


class AdminKey(_Strict):
    """A key for the admin endpoints (``POST /admin/reload``), stored as its SHA-256."""

    id: str
    sha256: str = Field(min_length=64, max_length=64)


class Limits(_Strict):
    max_body_bytes: int = Field(20_000_000, ge=1024)
    header_timeout_s: float = Field(10.0, gt=0, le=300, description="A client must send "
                                    "a request's headers within this time, else its "
                                    "connection is closed (slow-loris clients).")
    max_header_bytes: int = Field(16_384, ge=1024, le=1_000_000, description="Request "
                                  "headers, names and values together, at most (a 431 "
                                  "beyond).")
    max_image_bytes: int = Field(10_000_000, ge=1024)
    max_images: int = Field(8, ge=0)
    max_image_pixels: int = Field(40_000_000, ge=1, le=150_000_000, description="Width x "
                                  "height of an image at most (a small file can hold a huge "
                                  "image; PIL refuses over 178,956,970 in any case).")
    max_retries_429: int = Field(2, ge=0, le=5)
    max_wait_429_s: float = Field(2.0, ge=0, le=60, description="The longest wait before a "
                                  "429 retry; a backend asking (Retry-After) for longer is "
                                  "left for the next candidate at once.")


class RemoteImages(_Strict):
    """Fetching ``image_url`` parts given as http(s) URLs: off unless enabled, and then only
    from the listed hosts, never from private, loopback or link-local addresses."""

    enabled: bool = False
    allow_hosts: list[str] = Field(default_factory=list, description="Exact host names, or "
                                   "'*.example.com' for its subdomains.")
    timeout_s: float = Field(10.0, gt=0, le=120)

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            bare = host.removeprefix("*.")
            try:
                ipaddress.ip_address(host)
                continue                          # an address literal (still checked)
            except ValueError:
                pass
            if not bare or "*" in bare or "/" in bare or ":" in bare:
                raise ValueError(f"allow_hosts entries are host names or '*.domain', got "
                                 f"{host!r}")
        return [h.lower() for h in value]


class Telemetry(_Strict):
    url: str = Field("sqlite:///vlroute-telemetry.db", description="sqlite:///PATH or "
                     "postgresql://user@host/db (password from PGPASSWORD or from "
                     "VLROUTE_TELEMETRY_URL, never from the file).")
    store_prompts: bool = False
    spool: Path | None = Field(None, description="Where rows go while the database does not "
                               "take them (a file per worker, BASE.<pid>.jsonl); default: "
                               "beside the SQLite file, or vlroute-telemetry.spool in the "
                               "working directory for PostgreSQL.")

    def spool_base(self) -> Path:
        """The spool's base path (see ``spool``)."""
        if self.spool is not None:
            return self.spool
        if self.url.startswith("sqlite:///"):
            return Path(self.url.removeprefix("sqlite:///") + ".spool")
        return Path("vlroute-telemetry.spool")


class GatewayConfig(_Strict):
    """Everything ``vlroute serve`` needs."""

    backends: list[Backend] = Field(min_length=1)
    router: RouterSettings = RouterSettings()
    scenarios: dict[str, str] = Field(default_factory=dict,
                                      description="Custom scenarios: name -> inline spec.")
    default_scenario: str = "quality"
    auth_keys: list[AuthKey] = Field(default_factory=list, description="Empty: auth off.")
    admin_keys: list[AdminKey] = Field(default_factory=list, description="Keys for "
                                       "POST /admin/reload; empty: the endpoint is off "
                                       "(SIGHUP still reloads).")
    limits: Limits = Limits()
    remote_images: RemoteImages = RemoteImages()
    telemetry: Telemetry = Telemetry()

    @field_validator("backends")
    @classmethod
    def _unique(cls, value: list[Backend]) -> list[Backend]:
        names = [b.name for b in value]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique, got {names}")
        return value

    def scenario(self, name: str) -> Scenario:
        """A preset, a configured scenario or an inline spec (``vlroute/`` prefix allowed);
        ``auto`` here is a placeholder the routing engine replaces with its bundle's
        scenario."""
        key = name.removeprefix("vlroute/")
        if key == AUTO:
            return PRESETS["quality"].with_params(name=AUTO)
        if key in self.scenarios:
            return Scenario(**{**vars(parse_scenario(self.scenarios[key])), "name": key})
        return parse_scenario(key)

    def scenario_names(self) -> list[str]:
        return [AUTO, *PRESETS, *self.scenarios]


def hash_key(key: str) -> str:
    """How auth keys are stored: SHA-256 hex of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _has_password(url: str) -> bool:
    auth = url.partition("://")[2].split("/", 1)[0].rpartition("@")[0]
    return ":" in auth


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a YAML config; paths in it are relative to the file."""
    try:
        raw: Any = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the gateway config ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'backends', got "
                          f"{type(raw).__name__}.")
    if os.environ.get("VLROUTE_DEFAULT_SCENARIO"):
        raw["default_scenario"] = os.environ["VLROUTE_DEFAULT_SCENARIO"]
    url = str((raw.get("telemetry") or {}).get("url", ""))
    if _has_password(url):
        raise ConfigError(f"{path}: telemetry.url carries a password; secrets stay out of the "
                          "file: set PGPASSWORD, or give the whole URL in "
                          "VLROUTE_TELEMETRY_URL.")
    if os.environ.get("VLROUTE_TELEMETRY_URL"):
        raw.setdefault("telemetry", {})["url"] = os.environ["VLROUTE_TELEMETRY_URL"]
    artifact = (raw.get("router") or {}).get("artifact")
    if artifact and not Path(artifact).is_absolute():
        raw["router"]["artifact"] = str(Path(path).parent / artifact)
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    try:
        config.scenario(config.default_scenario)
    except VlrouteError as exc:
        raise ConfigError(f"{path}: default_scenario: {exc}") from None
    return config
