"""The data layer: readers, source tables, benches on disk, routing matrices and splits."""

from vlroute.data.bench import Bench, load_bench
from vlroute.data.build import build_bench
from vlroute.data.matrices import RoutingMatrices
from vlroute.data.readers import READERS
from vlroute.data.splits import SplitSpec, assign_splits
from vlroute.data.tables import SourceTables

__all__ = ["READERS", "Bench", "RoutingMatrices", "SourceTables", "SplitSpec", "assign_splits",
           "build_bench", "load_bench"]
