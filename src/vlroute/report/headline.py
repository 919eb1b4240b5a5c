"""The headline of a results document: the answer a user wants first.

Is routing worth it on this bench? ``auto`` (the router chosen on dev) against the best single
model and the Oracle, in the ``cost_weight@dev`` scenario on the test split, one sentence in
plain words, and what ``auto`` chose on each seed and why. A document without ``auto`` rows
leads with its best learned router instead. Like the rest of the report, this only picks
numbers out of the document; it computes no metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlroute.report.tables import (
    LEAD_SCENARIO,
    dev_setting,
    fmt,
    is_learned,
    pct,
    scenario_order,
)

AUTO = "auto"
#: the name ``auto`` gives a single model chosen for every request
CONSTANT = "constant"


@dataclass(frozen=True)
class Choice:
    """What ``auto`` chose on one seed's dev split, and the runner-up it beat."""

    seed: int
    #: the family ("knn", "prior", ...) or "single model"
    router: str
    #: the single model when ``router`` is "single model", else ""
    model: str
    labels: str
    #: "0.233" or "0.233 (linear axis)"; "" for a single model
    cost_weight: str
    dev_rank_score: float | None
    runner_up: str
    runner_up_rank_score: float | None
    #: auto's Rank Score on the lead split of this seed (None when not in the document)
    rank_score: float | None

    @property
    def routes(self) -> bool:
        return self.router != "single model"

    @property
    def chosen(self) -> str:
        return self.router if self.routes else f"single: {self.model}"


@dataclass(frozen=True)
class Headline:
    """The lead router against the best single model and the Oracle (aggregate rows)."""

    scenario: str
    split: str
    n_seeds: int
    #: the lead router's aggregate row (None when the document has no learned router)
    lead: dict[str, Any] | None
    best_single: dict[str, Any] | None
    oracle: dict[str, Any] | None
    #: the best single model of each seed (by Rank Score on train), deduplicated
    best_single_models: list[str]
    choices: list[Choice] = field(default_factory=list)
    #: the lead's setting chosen on dev per seed, in full, when it is not auto (whose
    #: ``choices`` say more)
    dev_choice: str = ""

    @property
    def lead_name(self) -> str:
        return self.lead["router"] if self.lead else ""

    @property
    def best_single_label(self) -> str:
        return "best single model (" + ", ".join(self.best_single_models) + ")" \
            if self.best_single_models else "best single model"

    def rows(self) -> list[tuple[dict[str, Any], str, bool]]:
        """(aggregate row, label, is the lead) of the lead, the best single model and the
        Oracle, those the document has."""
        rows = [(self.lead, self.lead_name, True), (self.best_single, self.best_single_label,
                                                    False), (self.oracle, "Oracle", False)]
        return [(row, label, lead) for row, label, lead in rows if row is not None]

    def caption(self) -> str:
        return (f"Scenario {self.scenario}, {self.split} split, mean ± std over "
                f"{self.n_seeds} seed(s). Gap closed: (Rank Score − the best single model's) / "
                "(the Oracle's − the best single model's), per seed, then averaged.")

    def dev_choice_sentence(self) -> str:
        return f"{self.lead_name}'s choice on dev, per seed: {self.dev_choice}." \
            if self.dev_choice else ""

    def sentences(self) -> list[str]:
        """The answer in plain words: the gap closed, then what dev said about routing."""
        return [s for s in (self._gap_sentence(), self._choice_sentence()) if s]

    def _gap_sentence(self) -> str:
        if self.lead is None:
            return (f"No learned router was evaluated; the {self.best_single_label} reaches "
                    f"Rank Score {fmt(_rs(self.best_single), 2)}, the Oracle "
                    f"{fmt(_rs(self.oracle), 2)}.")
        who = self.lead_name if self.lead_name == AUTO else \
            f"{self.lead_name}, the best learned router (this document has no auto),"
        gap = self.lead.get("gap_closed")
        where = f"({self.split}, {_seeds(self.n_seeds)})"
        scores = (f"Rank Score {fmt(_rs(self.lead), 2)} against {fmt(_rs(self.best_single), 2)}"
                  f" and the Oracle's {fmt(_rs(self.oracle), 2)} {where}")
        if gap is None or self.best_single is None or self.oracle is None:
            return f"{who.rstrip(',')}: Rank Score {fmt(_rs(self.lead), 2)} {where}."
        if abs(gap) < 0.005:
            return (f"{who} does no better than the {self.best_single_label}: it closes none "
                    f"of the gap to the Oracle: {scores}.")
        if gap < 0:
            return (f"{who} falls short of the {self.best_single_label} (gap closed "
                    f"{pct(gap)}): {scores}.")
        return (f"{who} closes {pct(gap)} of the gap between the {self.best_single_label} "
                f"and the Oracle: {scores}.")

    def _choice_sentence(self) -> str:
        if not self.choices:
            return ""
        n = len(self.choices)
        singles = [c for c in self.choices if not c.routes]
        if not singles:
            families = ", ".join(dict.fromkeys(c.router for c in self.choices))
            return f"On dev, routing paid on every seed: auto chose {families}."
        models = ", ".join(dict.fromkeys(c.model for c in singles))
        return (f"On dev, routing did not pay on {len(singles)} of {n} seed"
                f"{'s' if n > 1 else ''}: auto chose a single model there ({models}).")


def _rs(row: dict[str, Any] | None) -> float | None:
    return None if row is None else row.get("rank_score")


def _seeds(n: int) -> str:
    return "one seed" if n == 1 else f"mean over {n} seeds"


def lead_scenario(doc: dict[str, Any]) -> str:
    """``cost_weight@dev`` when the document has it, else its first scenario."""
    order = scenario_order(doc)
    return order[0] if order else LEAD_SCENARIO


def _lead_split(rows: list[dict[str, Any]]) -> str:
    splits = list(dict.fromkeys(r["split"] for r in rows))
    return "test" if "test" in splits or not splits else splits[0]


def headline(doc: dict[str, Any]) -> Headline:
    """The headline of ``doc`` (see the module docstring)."""
    scenario = lead_scenario(doc)
    rows = [r for r in doc["rows"] if r.get("seed") == "mean" and r["scenario"] == scenario]
    split = _lead_split(rows)
    by_name = {r["router"]: r for r in rows if r["split"] == split}
    learned = sorted((r for r in by_name.values() if is_learned(r)),
                     key=lambda r: -(r.get("rank_score") if r.get("rank_score") is not None
                                     else -1e9))
    lead = by_name.get(AUTO) or (learned[0] if learned else None)
    n_seeds = int((lead or by_name.get("oracle") or {}).get("n_seeds", len(doc["seeds"])))
    best = list(dict.fromkeys(str(s.get("best_single_by_rank")) for s in doc["seeds"]
                              if s.get("best_single_by_rank")))
    choices = auto_choices(doc, scenario, split)
    setting = dev_setting(doc, lead["router"])[1] if lead and not choices \
        and scenario == LEAD_SCENARIO else ""
    return Headline(scenario, split, n_seeds, lead, by_name.get("best_single_by_rank"),
                    by_name.get("oracle"), best, choices, setting)


def auto_choices(doc: dict[str, Any], scenario: str = LEAD_SCENARIO, split: str = "test"
                 ) -> list[Choice]:
    """One :class:`Choice` per entry of ``doc["auto"]`` (none for documents without it)."""
    per_seed = {r["seed"]: r.get("rank_score") for r in doc["rows"]
                if r["router"] == AUTO and r["scenario"] == scenario and r["split"] == split}
    return [_choice(entry, per_seed.get(entry.get("seed"))) for entry in doc.get("auto", [])]


def _choice(entry: dict[str, Any], rank_score: float | None) -> Choice:
    single = entry["router"] == CONSTANT
    others = [t for t in entry.get("tried", []) if not _same(t, entry)]
    runner = others[0] if others else None
    return Choice(
        seed=int(entry["seed"]), router="single model" if single else entry["router"],
        model=str(entry.get("params", {}).get("model", "")) if single else "",
        labels="" if single else str(entry.get("labels", "")),
        cost_weight="" if single else cost_weight_text(entry.get("scenario", "")),
        dev_rank_score=entry.get("dev", {}).get("rank_score"),
        runner_up=candidate_text(runner) if runner else "",
        runner_up_rank_score=runner.get("rank_score") if runner else None,
        rank_score=rank_score)


def _same(tried: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(tried.get(k) == entry.get(k) for k in ("router", "params", "labels"))


def candidate_text(tried: dict[str, Any]) -> str:
    """One candidate of ``auto`` in a few words: "knn, group_mean labels" or a model."""
    if tried["router"] == CONSTANT:
        return f"single model {tried.get('params', {}).get('model', '?')}"
    return f"{tried['router']}, {tried.get('labels', 'sample')} labels"


def cost_weight_text(spec: str) -> str:
    """The cost_weight (and a linear cost axis) of a scenario spec such as
    ``cost_weight=0.233025,by=usd,cost_axis=linear``."""
    fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    if "cost_weight" not in fields:
        return ""
    text = f"{float(fields['cost_weight']):.3g}"
    return text + (" (linear axis)" if fields.get("cost_axis") == "linear" else "")
