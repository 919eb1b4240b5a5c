"""Display objects: figures drawn from a results document, never from recomputed metrics.

Each display is built ``from_results`` (plain numbers picked out of the document) and draws
itself with ``plot(ax=None)`` on a matplotlib axes, like scikit-learn's displays.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from vlroute.report.tables import BASELINE_NAMES, scenario_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: colours of the routers, in order of appearance (colour-blind safe, Okabe-Ito)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#117733", "#661100",
           "#6699CC", "#B8860B")


def _matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _matplotlib_ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _guess_kind(router: str) -> str:
    """Version 1 documents do not say which rows are baselines; their names do."""
    return "baseline" if router in BASELINE_NAMES else ""


@dataclass
class Point:
    """One router or model on the plane: mean and std over seeds."""

    name: str
    cost: float
    acc: float
    cost_std: float = 0.0
    acc_std: float = 0.0
    #: "quality", "policy", "baseline" (drawn hollow) or "" when the document does not say
    kind: str = ""


@dataclass
class CostAccuracyDisplay:
    """Accuracy against cost ($ per 10K, log axis): single models and their Pareto frontier,
    the Oracle, each router (mean +- std over seeds) and each router's dev sweep."""

    title: str
    singles: list[Point]
    frontier: list[str]
    routers: list[Point]
    oracle: Point | None = None
    sweeps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def from_results(cls, doc: dict[str, Any], *, scenario: str | None = None,
                     split: str = "test") -> CostAccuracyDisplay:
        """The plane of ``scenario`` (default: ``cost_weight@dev`` when the document has it,
        else its first) on ``split``."""
        scenario = scenario or scenario_order(doc)[0]
        rows = [r for r in doc["rows"] if r.get("seed") == "mean"
                and r["scenario"] == scenario and r["split"] == split]
        singles = [Point(r["model"], r["avg_cost_per_10k"], r["avg_acc"],
                         r.get("avg_cost_per_10k_std") or 0.0, r.get("avg_acc_std") or 0.0)
                   for r in doc["singles"] if r["scenario"] == scenario and r["split"] == split
                   and r["avg_cost_per_10k"] is not None and r["avg_acc"] is not None]
        frontier: list[str] = next((p["models"] for p in doc.get("pareto", [])
                         if p["scenario"] == scenario and p["split"] == split), [])
        points = [Point(r["router"], r["avg_cost_per_10k"], r["avg_acc"],
                        r.get("avg_cost_per_10k_std") or 0.0, r.get("avg_acc_std") or 0.0,
                        r.get("kind") or _guess_kind(r["router"]))
                  for r in rows if r["avg_cost_per_10k"] is not None]
        oracle = next((p for p in points if p.name == "oracle"), None)
        sweeps: dict[str, list[tuple[float, float]]] = {}
        for curve in doc.get("curves", []):
            if curve.get("seed") == 0 and curve["router"] not in sweeps:
                axis = curve.get("cost_axis", "log")        # the axis chosen on dev
                sweeps[curve["router"]] = [(p["avg_cost_per_10k"], p["avg_acc"])
                                           for p in curve["points"]
                                           if p.get("avg_cost_per_10k") is not None
                                           and p.get("cost_axis", "log") == axis]
        return cls(title=f"{doc['bench']['name']}: accuracy vs cost ({split}, {scenario})",
                   singles=singles, frontier=list(frontier),
                   routers=[p for p in points if p.name != "oracle"], oracle=oracle,
                   sweeps=sweeps)

    def plot(self, ax: Axes | None = None) -> Figure:
        """Draw on ``ax`` (a new 7.5 x 5 in figure by default); returns the figure."""
        plt = _matplotlib()
        if ax is None:
            fig, ax = plt.subplots(figsize=(9.0, 5.2), layout="constrained")
        fig = ax.figure
        by_name = {p.name: p for p in self.singles}
        ax.scatter([p.cost for p in self.singles], [p.acc * 100 for p in self.singles],
                   s=22, color="#9a9a9a", zorder=2, label="single models")
        right = max((p.cost for p in self.singles), default=0.0) / 3
        for p in self.singles:          # labels of the dearest models point left
            left = p.cost > right
            ax.annotate(p.name, (p.cost, p.acc * 100), fontsize=6.5, color="#6b6b6b",
                        xytext=(-3 if left else 3, 2), textcoords="offset points",
                        ha="right" if left else "left")
        front = [by_name[n] for n in self.frontier if n in by_name]
        if len(front) > 1:
            ax.plot([p.cost for p in front], [p.acc * 100 for p in front], "--",
                    color="#9a9a9a", lw=1, zorder=1, label="Pareto frontier (singles)")
        for i, p in enumerate(self.routers):
            colour = PALETTE[i % len(PALETTE)]
            sweep = self.sweeps.get(p.name)
            if sweep and len(sweep) > 1:
                xs, ys = zip(*sorted(sweep), strict=True)
                ax.plot(xs, [y * 100 for y in ys], "-", color=colour, lw=0.8, alpha=0.45)
            baseline, auto = p.kind == "baseline", p.name == "auto"
            ax.errorbar(p.cost, p.acc * 100, xerr=p.cost_std or None,
                        yerr=(p.acc_std * 100) or None, fmt="D" if auto else
                        "s" if baseline else "o", ms=9 if auto else 5 if baseline else 6.5,
                        color=colour, mfc="white" if baseline else colour,
                        mec="#111111" if auto else colour, ecolor=colour, elinewidth=0.8,
                        capsize=2, zorder=5 if auto else 3,
                        label=p.name + (" (baseline)" if baseline else
                                        " (chosen on dev)" if auto else ""))
        if self.oracle is not None:
            ax.scatter([self.oracle.cost], [self.oracle.acc * 100], marker="*", s=160,
                       color="#111111", zorder=4, label="oracle")
        ax.set_xscale("log")
        ticker = _matplotlib_ticker()
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("Avg cost ($ per 10K requests, log scale; estimated)")
        ax.set_ylabel("Avg accuracy (%)")
        ax.set_title(self.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return cast("Figure", fig)


@dataclass
class TauCurveDisplay:
    """The threshold curve of an edge/cloud pair: edge share, APSP, RCS (left) and AIL (right)
    against tau, with the tau chosen on dev marked."""

    title: str
    points: list[dict[str, Any]]
    chosen_tau: float | None = None

    @classmethod
    def from_curve(cls, curve: dict[str, Any], *, split: str = "test") -> TauCurveDisplay:
        """From one entry of a document's ``tau_curves``."""
        edge, cloud = curve["pair"]
        chosen = curve.get("chosen_on_dev")
        return cls(title=f"{edge} (edge) / {cloud} (cloud), MES {curve['mes']:g}, {split}",
                   points=curve["curve"][split],
                   chosen_tau=chosen["tau"] if chosen else None)

    def plot(self, ax: Axes | None = None) -> Figure:
        """Draw two panels (needs no ``ax``; one is accepted for the left panel)."""
        plt = _matplotlib()
        if ax is None:
            fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), layout="constrained")
        else:
            fig, left = ax.figure, ax
            right = left.twinx()
        tau = [p["tau"] for p in self.points]
        for key, label, colour in (("edge_share", "edge share", PALETTE[0]),
                                   ("apsp", "APSP", PALETTE[1]), ("rcs", "RCS", PALETTE[2])):
            left.plot(tau, [_nan(p.get(key)) for p in self.points], label=label, color=colour)
        right.plot(tau, [_nan(p.get("ail")) for p in self.points], color=PALETTE[3],
                   label="AIL (s)")
        for a in (left, right):
            if self.chosen_tau is not None:
                a.axvline(self.chosen_tau, color="#555555", ls=":", lw=1)
            a.set_xlabel("tau (P(solved) the edge model must reach)")
            a.grid(True, alpha=0.25)
        left.set_ylim(0, 1.02)
        left.set_ylabel("share / score")
        right.set_ylabel("average inference latency (s, estimated)")
        left.legend(fontsize=7, frameon=False, loc="best")
        right.legend(fontsize=7, frameon=False, loc="best")
        fig.suptitle(self.title + ("" if self.chosen_tau is None else
                                   f"; dotted: tau {self.chosen_tau:g} chosen on dev"),
                     fontsize=10)
        return cast("Figure", fig)


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def to_svg(fig: Figure) -> str:
    """The figure as an inline SVG element (no XML prolog), then closed."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    _matplotlib().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def save(fig: Figure, stem: Any) -> None:
    """Write ``stem``.png (150 dpi) and ``stem``.svg, then close the figure."""
    fig.savefig(f"{stem}.png", dpi=150)
    fig.savefig(f"{stem}.svg", metadata={"Date": None})
    _matplotlib().close(fig)
