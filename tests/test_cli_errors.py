"""Every malformed CLI input ends in one ``Error: ...`` line naming the culprit (file and line,
option or parameter) and what was expected, with a non-zero exit and no traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from conftest import make_set, write_jsonl
from PIL import Image

from vlroute.cli import cli
from vlroute.routers import ROUTERS
from vlroute.routers._params import param_names

FEATURES = "hashing-text,hashing-image"


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result: Result, *culprits: str) -> str:
    """The one ``Error:`` line of a failed command, checked to name every culprit."""
    output = result.output
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    for culprit in culprits:
        assert culprit in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built toy bench with hashing features (shared: tests copy it before damaging it)."""
    root = tmp_path_factory.mktemp("errors")
    out = root / "bench"
    assert invoke("bench", "build", make_set(root / "toy"), "--out", out).exit_code == 0
    result = invoke("features", out, "--text", "hashing-text", "--image", "hashing-image")
    assert result.exit_code == 0, result.output
    return out


def damaged(bench: Path, tmp_path: Path, change: Callable[[Path], object]) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(bench, copy)
    change(copy)
    return copy


def corrupt_bytes(path: Path, old: bytes = b"What", new: bytes = b"Wh\xffat") -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


# ---- source sets and files -----------------------------------------------------------------

@pytest.mark.parametrize(("name", "old", "culprits"), [
    ("samples.jsonl", b"What", ("samples.jsonl", "line 1", "0xfe", "UTF-8")),
    ("models.jsonl", b"Small", ("models.jsonl", "line 1", "UTF-8")),
    ("outcomes.jsonl", b'"G2_v1"', ("outcomes.jsonl", "line 22", "UTF-8")),
    ("set.json", b"binary", ("set.json", "line 1", "UTF-8")),
])
def test_bytes_that_are_not_utf8_name_the_file_and_line(
        tmp_path: Path, name: str, old: bytes, culprits: tuple[str, ...]) -> None:
    src = make_set(tmp_path / "set", images=False)
    corrupt_bytes(src / name, old, old[:1] + b"\xfe" + old[1:])
    error_line(invoke("bench", "build", src, "--out", tmp_path / "b"), *culprits)


def test_invalid_json_line_names_the_line(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", images=False)
    with (src / "samples.jsonl").open("a") as handle:
        handle.write("{not json\n")
    error_line(invoke("bench", "build", src, "--out", tmp_path / "b"),
               "samples.jsonl", "line 19", "not valid JSON")


def test_missing_set_file_is_named(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", images=False)
    (src / "outcomes.jsonl").unlink()
    error_line(invoke("bench", "build", src, "--out", tmp_path / "b"), "outcomes.jsonl", "missing")


def test_jsonl_image_outside_the_set_is_refused(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", images=False)
    rows = [json.loads(line) for line in (src / "samples.jsonl").read_text().splitlines()]
    rows[2]["images"] = ["../secret.png"]
    write_jsonl(src / "samples.jsonl", rows)
    error_line(invoke("bench", "build", src, "--out", tmp_path / "b"),
               "samples.jsonl", "line 3", "'../secret.png'", "must be relative")


def _long_table(tmp_path: Path, image: str) -> pd.DataFrame:
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (tmp_path / "src").mkdir()
    return pd.DataFrame({"sample_id": ["s1", "s1", "s2", "s2"], "model": ["a", "b"] * 2,
                         "score": [1, 0, 0, 1], "image": [image] * 2 + ["", ""]})


@pytest.mark.parametrize("reader", ["csv", "parquet"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_tabular_images_outside_the_source_folder_are_refused(
        tmp_path: Path, reader: str, kind: str) -> None:
    image = str(tmp_path / "outside.png") if kind == "absolute" else "../outside.png"
    frame = _long_table(tmp_path, image)
    path = tmp_path / "src" / f"runs.{reader}"
    if reader == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    line = error_line(invoke("bench", "build", path, "--reader", reader, "--out",
                             tmp_path / "b"), f"runs.{reader}", "must be relative")
    assert "row" in line and not (tmp_path / "b").exists()


def test_csv_images_list_with_dotdot_is_refused(tmp_path: Path) -> None:
    frame = _long_table(tmp_path, "").drop(columns="image")
    frame["images"] = ['["../outside.png"]'] * 2 + ["[]"] * 2
    frame.to_csv(tmp_path / "src" / "runs.csv", index=False)
    error_line(invoke("bench", "build", tmp_path / "src" / "runs.csv", "--reader", "csv",
                      "--out", tmp_path / "b"), "runs.csv", "row 2", "must be relative")


def test_csv_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "runs.csv").write_bytes(b"sample_id,model,score,question\ns1,a,1,fine\n"
                                        b"s2,a,0,caf\xe9\n")
    error_line(invoke("bench", "build", tmp_path / "runs.csv", "--reader", "csv", "--out",
                      tmp_path / "b"), "runs.csv", "line 3", "0xe9", "UTF-8")


def test_cost_catalog_override_that_is_not_utf8(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", images=False)
    (tmp_path / "costs.yaml").write_bytes(b"models:\n  caf\xe9: {}\n")
    error_line(invoke("bench", "build", src, "--costs", tmp_path / "costs.yaml", "--out",
                      tmp_path / "b"), "costs.yaml", "line 2", "UTF-8")


def test_unknown_reader(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", images=False)
    error_line(invoke("bench", "build", src, "--reader", "jsnol", "--out", tmp_path / "b"),
               "'jsnol'", "Did you mean: jsonl")


# ---- router names and parameters ---------------------------------------------------------

def test_train_unknown_parameter_lists_the_valid_ones(bench: Path, tmp_path: Path) -> None:
    error_line(invoke("train", "knn", bench, "--param", "n_neighborz=3", "--features", FEATURES,
                      "--out", tmp_path / "a"),
               "n_neighborz", "Did you mean: n_neighbors", "candidates, n_neighbors, per, weighted")
    assert not (tmp_path / "a").exists()


def test_eval_unknown_parameter_lists_the_valid_ones(bench: Path) -> None:
    error_line(invoke("eval", bench, "--routers", "knn", "--features", FEATURES, "--param",
                      "knn.n_neighborz=3"), "knn: unknown parameter 'n_neighborz'",
               "Did you mean: n_neighbors")


@pytest.mark.parametrize(("param", "expected"), [
    ("knn.n_neighbors=0", "n_neighbors must be an integer >= 1, got 0"),
    ("knn.n_neighbors=-5", "n_neighbors must be an integer >= 1, got -5"),
    ("knn.n_neighbors=abc", "n_neighbors must be an integer >= 1, got 'abc'"),
    ("knn.n_neighbors=2.5", "n_neighbors must be an integer >= 1, got 2.5"),
    ("knn.weighted=maybe", "weighted must be True or False"),
    ("knn.candidates=some", "candidates must be one of 'all', 'pareto'"),
    ("linear.C=0", "C must be a number > 0, got 0"),
    ("gbdt.n_estimators=0", "n_estimators must be an integer >= 1"),
    ("gbdt.learning_rate=-0.1", "learning_rate must be a number > 0"),
    ("gbdt.num_leaves=1", "num_leaves must be an integer >= 2"),
    ("mlp.hidden_sizes=[64,0]", "hidden_sizes must be a list of integers >= 1"),
    ("mf.rank=0", "rank must be an integer >= 1"),
    ("mlp_soft.label_lambda=-1", "label_lambda must be a number >= 0"),
    ("random.random_state=-1", "random_state must be an integer >= 0"),
])
def test_eval_refuses_out_of_range_parameters(bench: Path, param: str, expected: str) -> None:
    router = param.split(".")[0]
    error_line(invoke("eval", bench, "--routers", router, "--features", FEATURES, "--param",
                      param), f"{router}: {expected}")


def test_train_refuses_out_of_range_parameters(bench: Path, tmp_path: Path) -> None:
    error_line(invoke("train", "knn", bench, "--param", "n_neighbors=0", "--features", FEATURES,
                      "--out", tmp_path / "a"), "knn: n_neighbors must be an integer >= 1, got 0")


def test_parameters_of_an_unknown_router(bench: Path) -> None:
    error_line(invoke("eval", bench, "--param", "knnn.n_neighbors=3"),
               "--param knnn.n_neighbors=3", "Unknown router 'knnn'", "Did you mean: knn")


@pytest.mark.parametrize("command", ["eval", "train"])
def test_unknown_router_names(bench: Path, tmp_path: Path, command: str) -> None:
    args = (["eval", bench, "--routers", "oracle,knnn"] if command == "eval"
            else ["train", "knnn", bench, "--out", tmp_path / "a"])
    error_line(invoke(*args), "Unknown router 'knnn'", "Did you mean: knn")


def test_every_router_parameter_has_a_constraint() -> None:
    for name in ROUTERS:
        cls = ROUTERS.get(name)
        assert set(param_names(cls)) <= set(cls._parameter_constraints), name


# ---- options, scenarios and targets ------------------------------------------------------

@pytest.mark.parametrize(("features", "culprit"), [
    ("none,none", "no features asked for"), ("minilm,none", "no features named 'minilm'")])
def test_missing_features(bench: Path, tmp_path: Path, features: str, culprit: str) -> None:
    error_line(invoke("train", "knn", bench, "--features", features, "--out", tmp_path / "a"),
               culprit)
    error_line(invoke("eval", bench, "--routers", "knn", "--features", features), culprit)


@pytest.mark.parametrize("seeds", ["0", "abc", "1000"])
def test_bad_seeds_are_a_usage_error(bench: Path, seeds: str) -> None:
    result = invoke("eval", bench, "--seeds", seeds)
    assert result.exit_code == 2
    error_line(result, "'--seeds'")


@pytest.mark.parametrize(("scenario", "culprit"), [
    ("turbo", "'turbo'"), ("cost_weight=abc", "cost_weight"), ("tau=0.5,by=watts", "watts")])
def test_bad_scenarios(bench: Path, scenario: str, culprit: str) -> None:
    error_line(invoke("eval", bench, "--scenario", scenario), culprit)


@pytest.mark.parametrize(("target", "expected"), [
    ("edge_share>=1.2.3", "'1.2.3' is not a number"),
    ("edge_share>=1.5", "edge_share must be a share in [0, 1]"),
    ("apsp_drop<=2", "apsp_drop must be a fraction in [0, 1]"),
    ("cost_per_request<=-0.01", "cost_per_request must be a finite cost in USD >= 0"),
    ("edge_share<=0.5", "expected cost_per_request<=USD"),
])
def test_bad_targets(bench: Path, tmp_path: Path, target: str, expected: str) -> None:
    error_line(invoke("train", "knn", bench, "--features", FEATURES, "--scenario",
                      "tau=0.5,by=usd", "--target", target, "--out", tmp_path / "a"),
               repr(target), expected)
    assert not (tmp_path / "a").exists()


# ---- bench folders -----------------------------------------------------------------------

def test_a_folder_that_is_not_a_bench(tmp_path: Path) -> None:
    error_line(invoke("eval", tmp_path), str(tmp_path), "no manifest.json")
    error_line(invoke("train", "knn", tmp_path, "--out", tmp_path / "a"), "no manifest.json")


def test_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("train", "knn", tmp_path / "nowhere", "--out", tmp_path / "a")
    assert result.exit_code == 2
    error_line(result, "nowhere", "does not exist")


@pytest.mark.parametrize(("change", "culprits"), [
    (lambda b: corrupt_bytes(b / "manifest.json", b'"schema"', b'"sch\xffema"'),
     ("manifest.json", "line 2", "UTF-8")),
    (lambda b: (b / "manifest.json").write_text("[1, 2]"), ("manifest.json", "JSON object")),
    (lambda b: (b / "manifest.json").write_text("{garbage"), ("manifest.json", "not valid JSON")),
    (lambda b: (b / "samples.parquet").write_bytes(b"garbage"),
     ("samples.parquet", "not a readable Parquet table")),
    (lambda b: (b / "records.parquet").write_bytes(b"garbage"), ("records.parquet",)),
    (lambda b: (b / "models.parquet").unlink(), ("missing models.parquet",)),
    (lambda b: (b / "features" / "index.json").write_text("{garbage"),
     ("index.json", "vlroute features")),
])
def test_garbage_bench_folders(bench: Path, tmp_path: Path, change: Callable[[Path], Any],
                               culprits: tuple[str, ...]) -> None:
    broken = damaged(bench, tmp_path, change)
    error_line(invoke("eval", broken, "--routers", "knn", "--features", FEATURES), *culprits)
    error_line(invoke("train", "knn", broken, "--features", FEATURES, "--out",
                      tmp_path / "a"), *culprits)


# ---- zero costs ----------------------------------------------------------------------------

def _priced_set(root: Path, cost: Callable[[str], float]) -> Path:
    src = make_set(root, images=False)
    rows = [json.loads(line) for line in (src / "outcomes.jsonl").read_text().splitlines()]
    write_jsonl(src / "outcomes.jsonl", [{**r, "cost_usd": cost(r["model"])} for r in rows])
    return src


@pytest.mark.parametrize("free", ["one", "all"])
def test_free_models_are_valid(tmp_path: Path, free: str) -> None:
    src = _priced_set(tmp_path / "set", lambda m: 0.0 if free == "all" or m == "small-2b"
                      else 0.002)
    assert invoke("bench", "build", src, "--out", tmp_path / "b").exit_code == 0
    result = invoke("eval", tmp_path / "b", "--routers", "baselines",
                    "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert all(0 <= r["rank_score"] <= 100 for r in rows)


# ---- anything else -------------------------------------------------------------------------

def test_unexpected_errors_are_one_line_unless_debug(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("vlroute.cli.bench.Catalog.load", boom)
    src = make_set(tmp_path / "set", images=False)
    line = error_line(invoke("bench", "build", src, "--out", tmp_path / "b"),
                      "RuntimeError: boom second line", "--debug")
    assert line.startswith("Error: RuntimeError")
    result = invoke("--debug", "bench", "build", src, "--out", tmp_path / "b")
    assert isinstance(result.exception, RuntimeError)


def test_value_errors_are_their_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("split fractions must sum to 1")

    monkeypatch.setattr("vlroute.cli.bench.Catalog.load", refuse)
    src = make_set(tmp_path / "set", images=False)
    line = error_line(invoke("bench", "build", src, "--out", tmp_path / "b"))
    assert line == "Error: split fractions must sum to 1"


def test_debug_shows_the_traceback_of_vlroute_errors_too(tmp_path: Path) -> None:
    result = invoke("--debug", "eval", tmp_path)
    assert type(result.exception).__name__ == "BenchError"
