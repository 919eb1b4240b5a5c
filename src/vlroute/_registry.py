"""A small registry for pluggable components (readers, routers, encoders, scenarios).

Entries are either objects or lazy ``"module:attr"`` strings, imported on first use, so that
heavy optional dependencies are only imported when their component is asked for.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vlroute.errors import UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """Map names to components, with lazy imports and did-you-mean errors.

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages ("reader", "router", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._frozen = False

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | None:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if obj is not None:
            self._add(name, obj)
            return None

        def decorator(target: T) -> T:
            self._add(name, target)
            return target

        return decorator

    def _add(self, name: str, obj: T | str) -> None:
        if self._frozen:
            raise RuntimeError(f"The {self.kind} registry is frozen; cannot add {name!r}.")
        if name in self._entries:
            raise ValueError(f"A {self.kind} named {name!r} is already registered.")
        self._entries[name] = obj

    def freeze(self) -> None:
        """Refuse further registrations."""
        self._frozen = True

    def get(self, name: str) -> T:
        """Return the component registered under ``name``, importing it if lazy."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownComponentError(
                f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self))}."
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry

    def origin(self, name: str) -> str:
        """Where the component lives, as ``module:attr``."""
        entry = self._entries[name]
        if isinstance(entry, str):
            return entry
        return f"{getattr(entry, '__module__', '?')}:{getattr(entry, '__qualname__', '?')}"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
