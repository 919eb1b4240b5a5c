"""Metrics: pure functions of decisions and matrices."""

from vlroute.metrics.calibration import expected_calibration_error
from vlroute.metrics.ecvl import ail, apsp, cost_advantage, edge_share, rcs
from vlroute.metrics.pareto import pareto_area
from vlroute.metrics.routing import avg_acc, avg_cost_per_10k, cost_bounds, gap_closed
from vlroute.objectives import oracle_decisions, pareto_frontier, rank_score, solved

__all__ = ["ail", "apsp", "avg_acc", "avg_cost_per_10k", "cost_advantage", "cost_bounds",
           "edge_share", "expected_calibration_error", "gap_closed", "oracle_decisions",
           "pareto_area", "pareto_frontier", "rank_score", "rcs", "solved"]
