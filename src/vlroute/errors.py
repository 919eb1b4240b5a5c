"""The exception tree of vlroute.

Every error raised on purpose by the library derives from :class:`VlrouteError`; the CLI turns
them into a one-line message and a non-zero exit status. Messages say what was wrong and what
was expected.

* VlrouteError
  * DataError                 - input data breaks the contract
    * ReaderError             - a source file is malformed (names the file and line / row)
    * BenchError              - a bench directory is missing, corrupt or of another schema
    * MatrixShapeError        - arrays of a RoutingMatrices disagree in shape or ids
  * CatalogError              - the cost / latency / energy catalog is malformed
  * UnknownComponentError     - a registry miss ("Did you mean ...? Available: ...")
  * ParameterError            - a component's parameter is unknown, of the wrong type or out
                                of range (names the component, the parameter and what it
                                accepts)
  * ScenarioError             - a scenario spec cannot be parsed or applied
    * ScenarioMismatchError   - a policy router asked to decide under another scenario
  * NotFittedError            - a router was used before ``fit``
  * ResultsError              - a results document is malformed
"""

from __future__ import annotations


class VlrouteError(Exception):
    """Base class of every error vlroute raises on purpose."""


class DataError(VlrouteError):
    """Input data breaks the contract."""


class ReaderError(DataError):
    """A source file is malformed; the message names the file, the line or row, and what was
    expected."""

    def __init__(self, path: object, where: str | None, message: str) -> None:
        self.path = str(path)
        self.where = where
        location = f"{self.path}, {where}" if where else self.path
        super().__init__(f"{location}: {message}")


class BenchError(DataError):
    """A bench directory is missing, incomplete, corrupt or of an unsupported schema."""


class MatrixShapeError(DataError):
    """The arrays of a RoutingMatrices disagree in shape, dtype or ids."""


class CatalogError(VlrouteError):
    """The economics catalog (prices, token rules, latency and energy profiles) is malformed."""


class UnknownComponentError(VlrouteError, KeyError):
    """A name was looked up in a registry and not found."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ParameterError(VlrouteError, ValueError):
    """A constructor parameter is unknown, of the wrong type or out of range."""


class ScenarioError(VlrouteError, ValueError):
    """A scenario spec cannot be parsed, or a scenario cannot be applied to the inputs."""


class ScenarioMismatchError(ScenarioError):
    """A policy router (trained for one trade-off) was asked to decide under another."""


class NotFittedError(VlrouteError, ValueError, AttributeError):
    """A router was asked to route before it was fitted."""


class ResultsError(VlrouteError):
    """A results document is malformed or of an unsupported schema."""
