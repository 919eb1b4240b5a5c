"""Constructor parameters of the routers: their names (the ``__init__`` signature is the
schema) and the values each accepts (a class's ``_parameter_constraints``, sklearn style).

Checks run where a router is made (:func:`vlroute.routers.make_router`) and again in ``fit``
(parameters may be set after construction); ``__init__`` only stores. A failure raises
:class:`~vlroute.errors.ParameterError` naming the router, the parameter, what it accepts
and what it got.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlroute.errors import ParameterError


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (int or float) between ``low`` and ``high`` (None: unbounded);
    ``open_low`` / ``open_high`` exclude the bound. NaN is never accepted, infinity only with
    ``allow_inf``; an int is accepted where a float is, a bool nowhere."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    allow_inf: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(
                value, numbers.Integral if self.kind is int else numbers.Real):
            return False
        number = float(value)
        if math.isnan(number) or (math.isinf(number) and not self.allow_inf):
            return False
        if self.low is not None and (number < self.low or (self.open_low
                                                           and number == self.low)):
            return False
        return self.high is None or not (number > self.high or (self.open_high
                                                                and number == self.high))

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        low = None if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        bounds = " and ".join(b for b in (low, high) if b)
        text = f"{noun} {bounds}" if bounds else noun
        return text + (" (inf allowed)" if self.allow_inf else "")


@dataclass(frozen=True)
class Options:
    """One of a few strings."""

    values: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Flag:
    """True or False."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool | np.bool_)

    def describe(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class Sizes:
    """A list (or tuple) of integers >= 1, e.g. layer widths; empty only with
    ``allow_empty``."""

    allow_empty: bool = False

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, list | tuple) or (not value and not self.allow_empty):
            return False
        return all(Interval(int, 1).accepts(v) for v in value)

    def describe(self) -> str:
        return "a list of integers >= 1, e.g. [256, 128]"


@dataclass(frozen=True)
class Name:
    """A non-empty string (e.g. a model id)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def describe(self) -> str:
        return "a non-empty string"


Constraint = Interval | Options | Flag | Sizes | Name


def param_names(cls: type) -> list[str]:
    """The keyword parameters of the constructor of ``cls`` (none without an ``__init__``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind in kinds]


def check_value(label: str, name: str, value: Any, constraint: Constraint | None) -> None:
    """Raise ParameterError unless ``constraint`` (None: anything) accepts ``value``."""
    if constraint is not None and not constraint.accepts(value):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ParameterError(f"{label}: {name} must be {constraint.describe()}, got {shown}.")


def check_params(label: str, cls: type, params: Mapping[str, Any]) -> None:
    """Raise ParameterError for a name ``cls.__init__`` does not take (with the close
    matches and the valid names) or a value its constraints refuse."""
    names = param_names(cls)
    for name in params:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            valid = ", ".join(sorted(names)) if names else "none (it takes no parameters)"
            raise ParameterError(f"{label}: unknown parameter {name!r}.{hint} "
                                 f"Valid parameters: {valid}.")
    constraints: Mapping[str, Constraint] = getattr(cls, "_parameter_constraints", {})
    for name, value in params.items():
        check_value(label, name, value, constraints.get(name))


def validate_params(router: object, label: str | None = None) -> None:
    """Check the current value of each constructor parameter of ``router``."""
    cls = type(router)
    constraints: Mapping[str, Constraint] = getattr(cls, "_parameter_constraints", {})
    for name in param_names(cls):
        if hasattr(router, name):
            check_value(label or cls.__name__, name, getattr(router, name),
                        constraints.get(name))
