"""``vlroute judge run | agree``: score a run's responses with an LLM judge, and measure the
judge's agreement with human labels."""

from __future__ import annotations

from pathlib import Path

import click

from vlroute.cli._ui import console, fmt, table
from vlroute.cli.collect import progress_bar


@click.group("judge")
def judge() -> None:
    """Score responses 0-10 with an LLM judge; check it against human labels."""


@judge.command("run")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--judge", "config_path", required=True, type=click.Path(
    exists=True, dir_okay=False, path_type=Path), help="Judge YAML: a `judge:` backend "
    "(base_url, model, vision, ...), max_tokens, malformed_retries.")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score cache (default RUN/judge.jsonl); share one across runs.")
@click.option("--in-place", "in_place", is_flag=True, help="Score a folder that is not a "
              "collect run (no run.json), rewriting its outcomes.jsonl.")
def run_command(run: Path, config_path: Path, cache: Path | None, in_place: bool) -> None:
    """Score every response of RUN (a collect run; any set with responses with --in-place)
    0-10."""
    from vlroute.collect.judge import judge_run, load_judge_config
    from vlroute.collect.rubric import RUBRIC_VERSION

    config = load_judge_config(config_path)
    with progress_bar("judge") as update:
        report = judge_run(run, config, progress=update, cache=cache, in_place=in_place)
    console.print(f"{run}: {report.scored} of {report.outcomes} outcome(s) scored by "
                  f"{config.judge.model} ({RUBRIC_VERSION}); {report.cached} from the cache, "
                  f"{report.asked} judge call(s), {report.malformed_answers} malformed "
                  f"answer(s) asked again; {report.unscored} left unscored, "
                  f"{report.no_response} without a response.")


@judge.command("reference")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--in-place", "in_place", is_flag=True, help="Score a folder that is not a "
              "collect run (no run.json), rewriting its outcomes.jsonl.")
def reference_command(run: Path, in_place: bool) -> None:
    """Score every response of RUN against its sample's reference answer by rule, no judge
    model: a number must be the response's last one (within 0.1%), a choice letter its last
    capital A-H, a short answer must appear in it; a long one scores by word overlap."""
    from vlroute.collect.judge import REFERENCE_VERSION, reference_run

    report = reference_run(run, in_place=in_place)
    console.print(f"{run}: {report.scored} of {report.outcomes} outcome(s) scored against "
                  f"the reference answer ({REFERENCE_VERSION}); {report.unscored} without a "
                  f"reference left unscored, {report.no_response} without a response.")


@judge.command("agree")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--human", required=True, type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="JSON lines with sample_id, model and a score (e.g. a set's outcomes).")
@click.option("--field", default="score", show_default=True,
              help="The human score's field (raw_score for a set's original scores).")
@click.option("--scale", default="0,10", show_default=True,
              help="The human scale LO,HI, mapped linearly to 0-10 (Vibe-Eval: 1,5).")
@click.option("--mes", default=6.0, show_default=True, type=click.FloatRange(0, 10),
              help="Minimal Expected Score of the solved / not-solved confusion table.")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              type=click.IntRange(10, 100_000))
@click.option("--seed", default=0, show_default=True)
@click.option("--resample", default="sample", show_default=True,
              type=click.Choice(["sample", "pair"]), help="Bootstrap unit: whole questions "
              "(all responses to a sample_id together; they are not independent) or single "
              "(sample, model) pairs.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results JSON (default RUN/agreement.json).")
@click.option("--results", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Also add it to this results document (`vlroute eval "
              "--results`), so that `vlroute report` shows it.")
def agree_command(  # noqa: PLR0913 - one parameter per CLI option
        run: Path, human: Path, field: str, scale: str, mes: float, n_boot: int, seed: int,
        resample: str, out: Path | None, results: Path | None) -> None:
    """Agreement of RUN's judge scores with human labels: Spearman, quadratic weighted kappa,
    MAE and solved at MES, with bootstrap intervals."""
    from vlroute._io import write_json_atomic
    from vlroute.collect.agree import ScaleMapping, agree, attach_to_results

    try:
        mapping = ScaleMapping.parse(scale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from None
    doc = agree(run, human, field=field, scale=mapping, mes=mes, n_boot=n_boot, seed=seed,
                resample=resample)
    target = out or run / "agreement.json"
    write_json_atomic(target, doc)
    if results is not None:
        attach_to_results(results, doc)
    rows = [[name, fmt(m["value"]), f"[{fmt(m['ci'][0])}, {fmt(m['ci'][1])}]"]
            for name, m in doc["metrics"].items()]
    console.print(f"judge {', '.join(doc['judge']['models'])} vs {human} (n={doc['n']} "
                  f"pairs; human scale mapped to 0-10 as {doc['mapping']['formula']})")
    console.print(table("", ["statistic", "value", "95% bootstrap"], rows))
    c = doc["confusion"]
    console.print(f"Solved at MES {mes:g}: both {c['both']}, judge only {c['judge_only']}, "
                  f"human only {c['human_only']}, neither {c['neither']}. Written to "
                  f"{target}.")
