"""Evaluation: fit routers, decide under scenarios, score, and write results documents."""

from vlroute.evaluation.results import (
    SCHEMA,
    flat_rows,
    load_result_set,
    load_results,
    save_results,
)
from vlroute.evaluation.runner import EvalSpec, evaluate_bench

__all__ = ["SCHEMA", "EvalSpec", "evaluate_bench", "flat_rows", "load_result_set", "load_results",
           "save_results"]
