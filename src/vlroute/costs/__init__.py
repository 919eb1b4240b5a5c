"""Cost, latency and energy: the economics catalog and the estimates derived from it."""

from vlroute.costs.catalog import Catalog, ModelEconomics, base_model_id
from vlroute.costs.estimate import PairEconomics, estimate_pairs

__all__ = ["Catalog", "ModelEconomics", "PairEconomics", "base_model_id", "estimate_pairs"]
