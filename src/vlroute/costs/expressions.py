"""Safe evaluation of the catalog's small arithmetic expressions ("7000 / params_b")."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping

from vlroute.errors import CatalogError

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max}


def evaluate(expression: str | float | int, names: Mapping[str, float]) -> float:
    """Evaluate a number or an expression of numbers, ``names``, + - * /, min and max."""
    if isinstance(expression, int | float):
        return float(expression)
    try:
        tree = ast.parse(str(expression), mode="eval")
        return float(_eval(tree.body, names))
    except CatalogError:
        raise
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError) as exc:
        raise CatalogError(f"Cannot evaluate catalog expression {expression!r}: {exc}") from exc


def _eval(node: ast.AST, names: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id == "inf":
            return math.inf
        if node.id not in names:
            raise CatalogError(f"Unknown name {node.id!r} in a catalog expression; "
                               f"allowed: {', '.join(sorted(names))}.")
        return float(names[node.id])
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, names)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords):
        return float(_FUNCTIONS[node.func.id](*(_eval(a, names) for a in node.args)))
    raise CatalogError(f"Unsupported element {ast.dump(node)} in a catalog expression; "
                       "use numbers, names, + - * /, min() and max().")
