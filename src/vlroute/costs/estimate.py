"""Per (sample, model) tokens, cost, latency and energy from the catalog's rules.

cost    = tokens_in * price_in + tokens_out * price_out            (prices per 1M tokens)
latency = network + queue + upload of the image bytes + tokens_in / prefill + tokens_out / decode
energy  = power * (tokens_in / prefill + tokens_out / decode) + radio energy of the upload

Edge models upload nothing. Measured values (NaN where absent) always win over estimates, and
every quantity carries a per-pair flag saying whether it was estimated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vlroute._typing import BoolArray, FloatArray, IntArray
from vlroute.costs.catalog import Catalog, ModelEconomics

QUANTITIES = ("tokens_in", "tokens_out", "cost_usd", "latency_s", "energy_j")


@dataclass(frozen=True)
class SampleInputs:
    """What the estimates need to know of each sample.

    ``text_chars`` is (n_samples,); the image arrays are flat, one entry per image, with
    ``image_sample`` the index of the sample it belongs to.
    """

    text_chars: FloatArray
    image_sample: IntArray
    image_w: FloatArray
    image_h: FloatArray
    image_bytes: FloatArray


@dataclass(frozen=True)
class PairEconomics:
    """Estimated (or measured) economics of each (sample, model) pair, flat arrays."""

    values: dict[str, FloatArray]
    estimated: dict[str, BoolArray]


def _per_model(econ: Sequence[ModelEconomics], catalog: Catalog) -> dict[str, FloatArray]:
    rates = [catalog.rates(e) for e in econ]
    return {
        "price_in": np.array([e.price_in for e in econ]),
        "price_out": np.array([e.price_out for e in econ]),
        "is_edge": np.array([e.tier == "edge" for e in econ], dtype=float),
        "power_w": np.array([catalog.power_w(e) for e in econ]),
        **{key: np.array([r[key] for r in rates]) for key in rates[0]},
    } if econ else {}


def _image_tokens(catalog: Catalog, econ: Sequence[ModelEconomics], samples: SampleInputs
                  ) -> tuple[FloatArray, IntArray]:
    """Image tokens per (rule, sample) and each model's rule: (n_rules, n_samples) and
    (n_models,). Models sharing a rule share the work, and a 2M x 50 bench needs no
    (n_samples, n_models) table."""
    n = len(samples.text_chars)
    rules = sorted({e.image_rule for e in econ})
    out = np.zeros((len(rules), n))
    for r, rule_name in enumerate(rules):
        per_image = catalog.image_rule(rule_name)(samples.image_w, samples.image_h)
        out[r] = np.bincount(samples.image_sample, weights=per_image, minlength=n)
    return out, np.array([rules.index(e.image_rule) for e in econ], dtype=np.int64)


CHUNK = 1 << 21  # pairs per step: bounds the temporaries on very large benches


class PairEstimator:
    """Estimates the economics of (sample, model) pairs, a chunk at a time: what depends on
    samples and models alone is computed once, so a stream of records can be estimated in
    pieces (:func:`estimate_pairs` for all pairs at once)."""

    def __init__(self, catalog: Catalog, econ: Sequence[ModelEconomics],
                 samples: SampleInputs) -> None:
        self.catalog = catalog
        self.per_model = _per_model(econ, catalog)
        n = len(samples.text_chars)
        text_tokens = np.ceil(samples.text_chars / catalog.chars_per_token)
        upload_mb = np.bincount(samples.image_sample, weights=samples.image_bytes,
                                minlength=n) / 1e6
        self.per_sample = (text_tokens, upload_mb, *_image_tokens(catalog, econ, samples))

    def estimate(self, sample_idx: IntArray, model_idx: IntArray, response_chars: FloatArray,
                 measured: Mapping[str, FloatArray]) -> PairEconomics:
        """Economics of each pair ``(sample_idx[i], model_idx[i])``; see
        :func:`estimate_pairs`."""
        n_pairs = len(sample_idx)
        values = {q: np.empty(n_pairs) for q in QUANTITIES}
        flags = {q: np.empty(n_pairs, dtype=bool) for q in QUANTITIES}
        for start in range(0, n_pairs, CHUNK):
            part = slice(start, start + CHUNK)
            pairs = {"sample": sample_idx[part], "model": model_idx[part],
                     "response_chars": response_chars[part]}
            _estimate_chunk(self.catalog, self.per_model, self.per_sample, pairs,
                            {k: v[part] for k, v in measured.items()},
                            ({q: values[q][part] for q in QUANTITIES},
                             {q: flags[q][part] for q in QUANTITIES}))
        return PairEconomics(values, flags)


def estimate_pairs(
    catalog: Catalog,
    econ: Sequence[ModelEconomics],
    samples: SampleInputs,
    sample_idx: IntArray,
    model_idx: IntArray,
    response_chars: FloatArray,
    measured: Mapping[str, FloatArray],
) -> PairEconomics:
    """Economics of each pair ``(sample_idx[i], model_idx[i])``.

    ``response_chars`` is NaN where no response is stored (then the catalog's default output
    length is used); ``measured`` maps quantity names to arrays, NaN where not measured.
    """
    return PairEstimator(catalog, econ, samples).estimate(sample_idx, model_idx,
                                                          response_chars, measured)


def _estimate_chunk(catalog: Catalog, m: dict[str, FloatArray],
                    per_sample: tuple[FloatArray, FloatArray, FloatArray, IntArray],
                    pairs: dict[str, np.ndarray], measured: Mapping[str, FloatArray],
                    out: tuple[dict[str, FloatArray], dict[str, BoolArray]]) -> None:
    """Fill ``out`` = (values, flags), views into the outputs, for one chunk of pairs."""
    cpt = catalog.chars_per_token
    text_tokens, upload_mb, img, rule_of = per_sample
    s_idx, m_idx, response_chars = pairs["sample"], pairs["model"], pairs["response_chars"]
    values, flags = out

    def settle(name: str, estimate: FloatArray) -> FloatArray:
        given = measured.get(name)
        if given is None:
            flags[name][:] = True
            values[name][:] = estimate
        else:
            flags[name][:] = np.isnan(given)
            values[name][:] = np.where(flags[name], estimate, given)
        return values[name]

    t_in = settle("tokens_in", text_tokens[s_idx] + img[rule_of[m_idx], s_idx])
    t_out = settle("tokens_out", np.where(np.isnan(response_chars),
                                          catalog.default_output_tokens,
                                          np.ceil(np.nan_to_num(response_chars) / cpt)))
    settle("cost_usd", (t_in * m["price_in"][m_idx] + t_out * m["price_out"][m_idx]) / 1e6)
    compute_s = t_in / m["prefill_tokens_per_s"][m_idx] + t_out / m["decode_tokens_per_s"][m_idx]
    remote = 1.0 - m["is_edge"][m_idx]
    mbit = m["upload_mbit_per_s"][m_idx]
    upload_s = np.divide(upload_mb[s_idx] * 8.0, mbit, out=np.zeros(len(s_idx)), where=mbit > 0)
    settle("latency_s", m["network_rtt_s"][m_idx] + m["queue_s"][m_idx] + remote * upload_s
           + compute_s)
    settle("energy_j", m["power_w"][m_idx] * compute_s
           + remote * catalog.radio_j_per_mb * upload_mb[s_idx])
