"""Branch conditions: a small, safe expression language over a run's data.

``package == 'premium' and amount >= 1000`` — names, literals, comparisons,
``and``/``or``/``not`` and ``in``. No calls, attributes or subscripts. A money input is
compared as a number (the compiler hands it over as a ``Decimal``); an input left out
(None) is neither less nor more than anything; any other pair that has no order (words
and a number) raises ``ConditionError``, never a silent False.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _left_out(op: ast.cmpop, left: Any, right: Any) -> bool:
    """Whether a comparison meets an input left out (None) where it needs a value: on
    either side of an order, or as what ``in`` looks in."""
    if isinstance(op, ast.In | ast.NotIn):
        return right is None
    return not isinstance(op, ast.Eq | ast.NotEq) and (left is None or right is None)


class ConditionError(ValueError):
    """A condition whose values cannot be compared: the run fails, visibly."""


class Condition:
    def __init__(self, source: str) -> None:
        self.source = source
        self.names: set[str] = set()
        try:
            tree = ast.parse(source, mode="eval")
            self._check(tree.body)
        except SyntaxError as exc:
            raise ValueError(f"cannot parse condition {source!r}: {exc.msg}") from None
        except RecursionError:  # `not not not …` thousands deep
            raise ValueError(f"{source[:40]!r}… is nested too deeply") from None
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            if not all(type(op) in _COMPARE for op in node.ops):
                raise ValueError(f"unsupported comparison in {self.source!r}")
            for part in (node.left, *node.comparators):
                self._check(part)
        elif isinstance(node, ast.Name):
            self.names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(
            node.value, str | int | float | bool | type(None)
        ):
            pass
        elif isinstance(node, ast.List | ast.Tuple):
            for element in node.elts:
                self._check(element)
        else:
            raise ValueError(
                f"{self.source!r}: only names, literals, comparisons, and/or/not are allowed"
            )

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        return bool(self._eval(self._tree, values))

    def _eval(self, node: ast.AST, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.BoolOp):
            results = (self._eval(v, values) for v in node.values)
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.UnaryOp):
            return not self._eval(node.operand, values)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, values)
                if _left_out(op, left, right):  # an input left out: no order, holds nothing
                    if not isinstance(op, ast.NotIn):
                        return False
                    left = right
                    continue
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError:  # a definition comparing a number with words, say
                    raise ConditionError(
                        f"{self.source!r} cannot compare {left!r} with {right!r}"
                    ) from None
                left = right
            return True
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return [self._eval(e, values) for e in node.elts]
        raise AssertionError("unreachable: checked at parse time")
