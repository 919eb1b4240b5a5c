"""vlroute: route vision-language requests to the right model, and prove the choice is good.

The package follows one arrow: data -> features -> routers -> scenarios -> metrics / report,
with the gateway on top. Importing ``vlroute`` is light; subpackages import what they need.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
