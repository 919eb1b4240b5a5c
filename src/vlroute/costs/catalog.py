"""The economics catalog: prices, tiers, token rules, latency and energy profiles.

The default catalog ships with the package (``default_costs.yaml``, the frozen economics of the
shared evaluation sets). Users override any entry with a YAML file of the same shape; mappings
are merged key by key, everything else is replaced.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from vlroute._io import describe_decode_error, read_utf8
from vlroute.costs.expressions import evaluate
from vlroute.costs.image_tokens import BUILTIN_RULES, Rule
from vlroute.errors import CatalogError

Tier = Literal["edge", "cloud"]
Profile = Literal["edge", "cloud_open", "cloud_api"]
_REQUIRED = ("open_weight_prices", "unknown_api_model", "models", "text_tokens",
             "output_tokens", "image_tokens", "latency", "energy")


@dataclass(frozen=True)
class ModelEconomics:
    """How one model is priced and profiled, and how sure we are of it.

    ``price_status`` is ``list`` (a published list price), ``approx``, ``tier`` (priced by the
    open-weight size tiers), ``unknown-size`` or ``unknown-api`` (fallback prices, flagged).
    """

    model: str
    tier: Tier
    profile: Profile
    price_in: float
    price_out: float
    price_status: str
    image_rule: str
    params_b: float | None
    notes: tuple[str, ...] = field(default=())


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_model_id(model: str) -> str:
    """The catalog key of a model id: a trailing ``@variant`` (``@cot``) is ignored."""
    return model.split("@", 1)[0]


class Catalog:
    """Economics of models, read from a catalog mapping (see ``default_costs.yaml``).

    Parameters
    ----------
    data : dict
        The parsed catalog.
    source : str
        Where it came from, for provenance.
    """

    def __init__(self, data: dict[str, Any], source: str = "<memory>") -> None:
        self.data = data
        self.source = source

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def default(cls) -> Catalog:
        """The catalog shipped with vlroute."""
        text = resources.files("vlroute.costs").joinpath("default_costs.yaml").read_text("utf-8")
        return cls.from_mapping(yaml.safe_load(text), source="vlroute:default_costs.yaml")

    @classmethod
    def load(cls, override: Path | None = None) -> Catalog:
        """The default catalog, with the entries of the YAML file ``override`` merged over it."""
        catalog = cls.default()
        if override is None:
            return catalog
        try:
            extra = yaml.safe_load(read_utf8(Path(override)))
        except UnicodeDecodeError as exc:
            where, what = describe_decode_error(exc)
            raise CatalogError(f"{override}, {where}: {what}.") from None
        except (OSError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())   # YAML errors span several lines
            raise CatalogError(f"Cannot read catalog override {override}: {detail}") from exc
        if not isinstance(extra, dict):
            raise CatalogError(f"{override}: expected a YAML mapping at the top level.")
        return cls.from_mapping(_merge(catalog.data, extra),
                                source=f"{catalog.source} + {Path(override).name}")

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<memory>") -> Catalog:
        """Validate the shape of a catalog mapping and wrap it."""
        if not isinstance(data, dict):
            raise CatalogError(f"{source}: a catalog must be a mapping.")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise CatalogError(f"{source}: missing catalog section(s) {', '.join(missing)}; "
                               f"expected all of {', '.join(_REQUIRED)}.")
        catalog = cls(data, source)
        for name in data["image_tokens"]:
            catalog.image_rule(name)  # every named rule must be implementable
        return catalog

    def digest(self) -> str:
        """SHA-256 of the catalog content, for provenance."""
        blob = json.dumps(self.data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    # ---- per-model economics -----------------------------------------------------------
    def economics(self, model: str, *, params_b: float | None, open_weights: bool
                  ) -> ModelEconomics:
        """Price, tier and latency profile of ``model``; catalog entries win over tiers."""
        entry = dict(self.data["models"].get(base_model_id(model)) or {})
        if entry.get("params_b") is not None:
            params_b = float(entry["params_b"])
        notes = [str(entry["note"])] if entry.get("note") else []
        price_in, price_out, status = self._price(entry, params_b, open_weights, notes)
        tier = entry.get("tier") or self._tier(params_b, open_weights)
        if tier not in ("edge", "cloud"):
            raise CatalogError(f"Model {model!r}: tier must be 'edge' or 'cloud', got {tier!r}.")
        profile: Profile = "edge" if tier == "edge" else (
            "cloud_open" if open_weights else "cloud_api")
        rule = str(entry.get("image_rule") or self.data["unknown_api_model"].get("image_rule")
                   or "default")
        self.image_rule(rule)
        return ModelEconomics(model, tier, profile, price_in, price_out, status, rule,
                              params_b, tuple(notes))

    def _price(self, entry: dict[str, Any], params_b: float | None, open_weights: bool,
               notes: list[str]) -> tuple[float, float, str]:
        if entry.get("price") is not None:
            p_in, p_out = _price_pair(entry["price"])
            return p_in, p_out, str(entry.get("status", "list"))
        if not open_weights:
            fallback = self.data["unknown_api_model"]
            notes.append(str(fallback.get("note", "unknown API model: fallback price")))
            return (*_price_pair(fallback["price"]), "unknown-api")
        tiers = self.data["open_weight_prices"]
        if params_b is None:
            unknown = tiers["unknown_params"]
            notes.append(str(unknown.get("note", "open model of unknown size")))
            return (*_price_pair(unknown["price"]), "unknown-size")
        for row in tiers["tiers"]:
            if params_b <= float(row["max_params_b"]):
                return (*_price_pair(row["price"]), "tier")
        raise CatalogError(f"No open-weight price tier covers {params_b} B parameters.")

    @staticmethod
    def _tier(params_b: float | None, open_weights: bool) -> Tier:
        # costs.yaml: "edge if open_weights and params_b <= 10, else cloud; API models are cloud"
        return "edge" if open_weights and params_b is not None and params_b <= 10 else "cloud"

    # ---- token rules -------------------------------------------------------------------
    def image_rule(self, name: str) -> Rule:
        """The image-token rule called ``name``: a built-in, or ``{tokens_per_image: N}``."""
        spec = self.data["image_tokens"].get(name)
        if isinstance(spec, dict) and "tokens_per_image" in spec:
            per_image = float(spec["tokens_per_image"])
            return lambda w, h: w * 0.0 + per_image
        if name in BUILTIN_RULES:
            return BUILTIN_RULES[name]
        raise CatalogError(
            f"Unknown image-token rule {name!r}: give it 'tokens_per_image: N' in the catalog, "
            f"or use a built-in rule ({', '.join(sorted(BUILTIN_RULES))}).")

    @property
    def chars_per_token(self) -> float:
        """Characters per text token ("ceil(characters / 4)" in the default catalog)."""
        return float(self.data["text_tokens"].get("chars_per_token", 4))

    @property
    def default_output_tokens(self) -> float:
        """Output tokens assumed when a record stores no response."""
        return float(self.data["output_tokens"]["without_response"])

    # ---- latency and energy ------------------------------------------------------------
    def rates(self, econ: ModelEconomics) -> dict[str, float]:
        """Latency constants of a model's profile with expressions evaluated."""
        profile = self.data["latency"].get(econ.profile)
        if not isinstance(profile, dict):
            raise CatalogError(f"Missing latency profile {econ.profile!r} in the catalog.")
        # Undisclosed sizes are profiled as a 7-9B model, as the catalog prices them.
        names = {"params_b": econ.params_b if econ.params_b else 8.0}
        out = {key: evaluate(profile.get(key, 0.0), names)
               for key in ("network_rtt_s", "queue_s", "upload_mbit_per_s",
                           "prefill_tokens_per_s", "decode_tokens_per_s")}
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            if not out[key] > 0 or math.isnan(out[key]):
                raise CatalogError(f"{econ.model}: {key} must be positive, got {out[key]}.")
        return out

    def power_w(self, econ: ModelEconomics) -> float:
        """Power drawn while the model computes one request."""
        energy = self.data["energy"]
        key = "edge_power_w" if econ.tier == "edge" else "cloud_power_per_stream_w"
        return float(energy[key])

    @property
    def radio_j_per_mb(self) -> float:
        """The device's radio energy per MB uploaded."""
        return float(self.data["energy"].get("device_radio_j_per_mb", 0.0))


def _price_pair(value: Any) -> tuple[float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise CatalogError(f"A price must be [input, output] USD per 1M tokens, got {value!r}.")
    return float(value[0]), float(value[1])
