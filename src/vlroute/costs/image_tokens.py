"""Image-token rules of the economics catalog, vectorised over image sizes.

Each rule maps arrays of widths and heights (pixels, the size the model saw) to the number of
input tokens one image costs. The rule names and their definitions are those of the catalog's
``image_tokens`` section (``costs/default_costs.yaml``); where the catalog text leaves a detail
open, the choice made here is written next to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vlroute._typing import FloatArray

Rule = Callable[[FloatArray, FloatArray], FloatArray]


def _constant(tokens: float) -> Rule:
    def rule(w: FloatArray, h: FloatArray) -> FloatArray:
        return np.full(np.shape(w), float(tokens))

    return rule


def _scale_to_fit(w: FloatArray, h: FloatArray, limit: float) -> tuple[FloatArray, FloatArray]:
    """Downscale (never upscale) so that the longer side is at most ``limit``."""
    scale = np.minimum(1.0, limit / np.maximum(np.maximum(w, h), 1.0))
    return w * scale, h * scale


def _openai_tiles(w: FloatArray, h: FloatArray) -> FloatArray:
    # Fit within 2048 x 2048, then bring the shortest side down to 768 (OpenAI's published
    # calculator only downscales), then count 512 px tiles.
    w, h = _scale_to_fit(w, h, 2048.0)
    short = np.minimum(w, h)
    scale = np.where(short > 768.0, 768.0 / np.maximum(short, 1.0), 1.0)
    w, h = np.floor(w * scale), np.floor(h * scale)
    return np.ceil(w / 512.0) * np.ceil(h / 512.0)


def openai_4o(w: FloatArray, h: FloatArray) -> FloatArray:
    """85 + 170 per 512 px tile."""
    return 85.0 + 170.0 * _openai_tiles(w, h)


def openai_4o_mini(w: FloatArray, h: FloatArray) -> FloatArray:
    """As 4o's tiling with 4o-mini's token multipliers: 2833 + 5667 per tile."""
    return 2833.0 + 5667.0 * _openai_tiles(w, h)


def claude(w: FloatArray, h: FloatArray) -> FloatArray:
    """Scale the long edge to at most 1568 px, then width * height / 750 (rounded up)."""
    w, h = _scale_to_fit(w, h, 1568.0)
    return np.ceil(np.floor(w) * np.floor(h) / 750.0)


def qwen2_vl(w: FloatArray, h: FloatArray) -> FloatArray:
    """Qwen2-VL's smart resize to multiples of 28 within 3,136..1,003,520 pixels; one token per
    28 x 28 block, plus the two vision delimiter tokens."""
    factor, min_px, max_px = 28.0, 3136.0, 1003520.0
    w = np.maximum(w, 1.0)
    h = np.maximum(h, 1.0)
    hb = np.maximum(factor, np.round(h / factor) * factor)
    wb = np.maximum(factor, np.round(w / factor) * factor)
    too_big = hb * wb > max_px
    beta_big = np.sqrt(h * w / max_px)
    too_small = hb * wb < min_px
    beta_small = np.sqrt(min_px / (h * w))
    hb = np.where(too_big, np.floor(h / beta_big / factor) * factor, hb)
    wb = np.where(too_big, np.floor(w / beta_big / factor) * factor, wb)
    hb = np.where(too_small, np.ceil(h * beta_small / factor) * factor, hb)
    wb = np.where(too_small, np.ceil(w * beta_small / factor) * factor, wb)
    return (hb / factor) * (wb / factor) + 2.0


def internvl2(w: FloatArray, h: FloatArray) -> FloatArray:
    """InternVL2 dynamic tiling: the (cols, rows) grid of at most 12 tiles of 448 px whose aspect
    ratio is closest to the image's (ties go to the larger grid when the image is large enough),
    plus one thumbnail tile when there is more than one tile; 256 tokens per tile."""
    size, max_num = 448.0, 12
    grids = sorted(
        {(i, j) for n in range(1, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if i * j <= max_num},
        key=lambda g: g[0] * g[1],
    )
    w = np.maximum(w, 1.0)
    h = np.maximum(h, 1.0)
    aspect = w / h
    area = w * h
    best_diff = np.full(aspect.shape, np.inf)
    best_tiles = np.ones(aspect.shape)
    for cols, rows in grids:
        diff = np.abs(aspect - cols / rows)
        better = diff < best_diff
        tie = (diff == best_diff) & (area > 0.5 * size * size * cols * rows)
        take = better | tie
        best_diff = np.where(better, diff, best_diff)
        best_tiles = np.where(take, float(cols * rows), best_tiles)
    out: FloatArray = 256.0 * (best_tiles + (best_tiles > 1))
    return out


_LLAVA_NEXT_GRIDS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


def llava_next(w: FloatArray, h: FloatArray) -> FloatArray:
    """LLaVA-NeXT anyres: the grid resolution that keeps the most effective pixels (least waste
    on ties) among the 1.6 pinpoints; 576 for the base view plus 576 per 336 px tile."""
    w = np.maximum(w, 1.0)
    h = np.maximum(h, 1.0)
    best_eff = np.full(w.shape, -1.0)
    best_waste = np.full(w.shape, np.inf)
    best_tiles = np.ones(w.shape)
    for gw, gh in _LLAVA_NEXT_GRIDS:
        scale = np.minimum(gw / w, gh / h)
        eff = np.minimum(np.floor(w * scale) * np.floor(h * scale), w * h)
        waste = gw * gh - eff
        take = (eff > best_eff) | ((eff == best_eff) & (waste < best_waste))
        best_eff = np.where(take, eff, best_eff)
        best_waste = np.where(take, waste, best_waste)
        best_tiles = np.where(take, (gw // 336) * (gh // 336), best_tiles)
    out: FloatArray = 576.0 + 576.0 * best_tiles
    return out


def _tiles(w: FloatArray, h: FloatArray, side: float, most: float) -> FloatArray:
    out: FloatArray = np.clip(np.ceil(w / side) * np.ceil(h / side), 1.0, most)
    return out


def llama_32_vision(w: FloatArray, h: FloatArray) -> FloatArray:
    """560 px tiles, at most 4, 1,601 tokens each (approximate)."""
    return 1601.0 * _tiles(w, h, 560.0, 4.0)


def phi_35_vision(w: FloatArray, h: FloatArray) -> FloatArray:
    """336 px crops, at most 16, plus one global view; 144 tokens per crop (approximate)."""
    return 144.0 * (_tiles(w, h, 336.0, 16.0) + 1.0)


def pixtral(w: FloatArray, h: FloatArray) -> FloatArray:
    """Long edge scaled to at most 1024 px; one token per 16 px patch plus one break per row."""
    w, h = _scale_to_fit(w, h, 1024.0)
    rows = np.ceil(h / 16.0)
    cols = np.ceil(w / 16.0)
    return rows * cols + rows


BUILTIN_RULES: dict[str, Rule] = {
    "openai-4o": openai_4o,
    "openai-4o-mini": openai_4o_mini,
    "claude": claude,
    "gemini": _constant(258),
    "qwen2-vl": qwen2_vl,
    "qwen-vl": _constant(256),
    "internvl2": internvl2,
    "llava-1.5": _constant(576),
    "llava-next": llava_next,
    "llama-3.2-vision": llama_32_vision,
    "phi-3.5-vision": phi_35_vision,
    "pixtral": pixtral,
    "deepseek-vl": _constant(576),
    "internlm-xcomposer2": _constant(1225),
    "default": _constant(576),
}
