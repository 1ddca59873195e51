"""The multi grader's ``calculate_output``: a tiny arithmetic language, parsed with ``ast`` and walked
against a whitelist. Never ``eval``: a formula comes from a user (or an API caller) and runs in the server.

Allowed: numbers, the names of the sub-graders, ``+ - * /``, ``**`` and ``^`` (both power, as OpenAI's
formulas write ``^``), unary ``+``/``-``, parentheses, and the functions ``min max abs floor ceil exp sqrt
log``. Attribute access, subscripts, calls of anything else, keywords, strings and comprehensions are refused
at validation time, so a spec that validates can always be evaluated.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

from tunesmith.graders.types import GraderError

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: _power(a, b),
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}
MAX_LENGTH = 2000


def _power(a: float, b: float) -> float:
    # A formula like 10 ** 10 ** 10 would otherwise compute for minutes inside the server.
    if abs(b) > 1000:
        raise OverflowError("exponent too large")
    return float(a) ** float(b)


def parse_formula(text: str, names: set[str], where: str = "calculate_output") -> ast.Expression:
    """The formula's syntax tree, or GraderError naming the first thing it may not contain."""
    if len(text) > MAX_LENGTH:
        raise GraderError(f"{where}: calculate_output is longer than {MAX_LENGTH} characters")
    try:
        # OpenAI's formulas write power as ^; as **, it also gets power's precedence (Python's ^ binds
        # looser than + and -, so "a + b ^ 2" would otherwise mean (a + b) ^ 2).
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise GraderError(f"{where}: calculate_output is not a formula: {e.msg}") from None
    for node in ast.walk(tree):
        _check(node, names, where)
    return tree


def _check(node: ast.AST, names: set[str], where: str) -> None:
    if isinstance(node, ast.Expression | ast.Load) or type(node) in _BINARY or type(node) in _UNARY:
        return
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        op = node.op
        if type(op) not in _BINARY and type(op) not in _UNARY:
            raise GraderError(f"{where}: calculate_output may not use the operator {type(op).__name__}")
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise GraderError(f"{where}: calculate_output may only contain numbers, not {node.value!r}")
        return
    if isinstance(node, ast.Name):
        if node.id not in names and node.id not in FUNCTIONS:
            known = ", ".join(sorted(names))
            raise GraderError(f"{where}: calculate_output names '{node.id}', which is not a sub-grader ({known})")
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            allowed = ", ".join(FUNCTIONS)
            raise GraderError(f"{where}: calculate_output may only call {allowed}")
        if not node.args or any(isinstance(a, ast.Starred) for a in node.args):
            raise GraderError(f"{where}: {node.func.id}() in calculate_output needs plain arguments")
        return
    raise GraderError(f"{where}: calculate_output may not contain {type(node).__name__} (only arithmetic)")


def evaluate(tree: ast.Expression, values: dict[str, float]) -> float:
    """The formula's value with each sub-grader's score bound to its name. Arithmetic errors (a division
    by zero, log of 0) raise ArithmeticError/ValueError for the caller to turn into a failed grade."""
    return float(_eval(tree.body, values))


def _eval(node: ast.AST, values: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id in values:
            return values[node.id]
        raise ValueError(f"'{node.id}' is a function, not a value")
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return float(FUNCTIONS[node.func.id](*(_eval(a, values) for a in node.args)))
    raise ValueError(f"unexpected {type(node).__name__}")  # parse_formula refused it already
