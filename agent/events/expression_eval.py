"""Evaluating a checked trigger expression (agent/events/expression.py) on the sampled stream.

The expression is evaluated at **instants**: every time at which one of its signals has a
sample (a `change` or `bounded` signal: the frame time; `last`: the tick), and at the ticks.
At an instant, every sample stamped then is applied first, then the expression is evaluated
once. Values are physical. Semantics, also what the exactness test's plain evaluation does:

- a signal reads its newest sample; before its first sample it is unknown;
- comparisons and arithmetic with an unknown are unknown; `and` is false if either side is
  false, else unknown if either is unknown; `or` likewise with true; `not` of unknown is unknown;
- `changed(s)`: s has a sample at this instant whose value differs from its previous sample;
- `rising(e)`: e is true now and was not true at the previous instant;
- `e for D`: e has been true at every instant since an instant at least D ago;
- `avg/min/max(s, D)`: over the samples of s stamped in (t - D, t]; unknown when there are none.
Every part is evaluated at every instant (no short cut), so `rising`, `for` and windows keep
their history whatever the other parts say. `changed` and `rising` are true only *at* their
instant: `after` gives the value just after it (both false), so a trigger on them re-arms
between two changes even when no instant lies between them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.events.expression import (
    Binary,
    Changed,
    For,
    Label,
    Node,
    Number,
    Rising,
    Signal,
    Unary,
    Window,
)

Value = float | bool | None


@dataclass(frozen=True)
class Scaling:
    """How a label turns into the physical value a signal carries."""

    scale: float
    offset: float
    choices: Mapping[int, str] | None


class Evaluator:
    def __init__(self, node: Node, scaling: Mapping[str, Scaling]) -> None:
        self._node = node
        self._scaling = scaling
        self._values: dict[str, float] = {}
        self._previous: dict[str, float] = {}
        self._updated: set[str] = set()
        self._rising: dict[int, bool] = {}
        self._since: dict[int, int | None] = {}
        self._windows: dict[tuple[str, int], deque[tuple[int, float]]] = {}
        self._window_keys = {(n.signal.key, n.duration_ms) for n in _walk(node)
                             if isinstance(n, Window)}
        self.time_ms: int | None = None

    def at(self, time_ms: int, samples: Iterable[tuple[str, float]] = ()) -> bool | None:
        """Apply the samples stamped `time_ms` and evaluate: True, False or None (unknown)."""
        self._updated = set()
        for key, value in samples:
            if key in self._values:
                self._previous[key] = self._values[key]
            else:
                self._previous.pop(key, None)
            self._values[key] = value
            self._updated.add(key)
            for window_key, duration in self._window_keys:
                if window_key == key:
                    self._windows.setdefault((key, duration), deque()).append((time_ms, value))
        for (_, duration), window in self._windows.items():
            while window and window[0][0] <= time_ms - duration:
                window.popleft()
        self.time_ms = time_ms
        result = self._eval(self._node, time_ms)
        return result if result is None else bool(result)

    def after(self) -> bool | None:
        """The value just after the last instant: `changed` and `rising` false, nothing else
        different (and no state moved)."""
        assert self.time_ms is not None
        result = self._eval(self._node, self.time_ms, after=True)
        return result if result is None else bool(result)

    def _eval(self, node: Node, t: int, after: bool = False) -> Value:
        if isinstance(node, Number):
            return node.value
        if isinstance(node, Signal):
            return self._values.get(node.key)
        if isinstance(node, Label):
            return math.nan  # compared through _label; never reached on its own
        if isinstance(node, Changed):
            key = node.signal.key
            return not after and key in self._updated and key in self._previous \
                and not _same(self._previous[key], self._values[key])
        if isinstance(node, Window):
            samples = [v for _, v in self._windows.get((node.signal.key, node.duration_ms), ())]
            if not samples:
                return None
            if node.function == "avg":
                return sum(samples) / len(samples)
            return min(samples) if node.function == "min" else max(samples)
        if isinstance(node, Rising):
            if after:
                return False
            now = self._eval(node.operand, t) is True
            before = self._rising.get(id(node), False)
            self._rising[id(node)] = now
            return now and not before
        if isinstance(node, For):
            inner = self._eval(node.operand, t, after)
            since = self._since.get(id(node))
            if after:
                return inner is True and since is not None and t - since >= node.duration_ms
            if inner is not True:
                self._since[id(node)] = None
                return False if inner is False else None
            if since is None:
                self._since[id(node)] = since = t
            return t - since >= node.duration_ms
        if isinstance(node, Unary):
            operand = self._eval(node.operand, t, after)
            if operand is None:
                return None
            return (not operand) if node.op == "not" else -operand
        return self._binary(node, t, after)

    def _binary(self, node: Binary, t: int, after: bool) -> Value:
        if isinstance(node.right, Label) or isinstance(node.left, Label):
            return self._label(node)
        left, right = self._eval(node.left, t, after), self._eval(node.right, t, after)
        op = node.op
        if op == "and":
            if left is False or right is False:
                return False
            return None if left is None or right is None else True
        if op == "or":
            if left is True or right is True:
                return True
            return None if left is None or right is None else False
        if left is None or right is None:
            return None
        a, b = float(left), float(right)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return None if b == 0 else a / b
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b,
                "!=": a != b}[op]

    def _label(self, node: Binary) -> Value:
        signal, label = ((node.left, node.right) if isinstance(node.right, Label)
                         else (node.right, node.left))
        assert isinstance(signal, Signal) and isinstance(label, Label)
        value = self._values.get(signal.key)
        if value is None:
            return None
        scaling = self._scaling[signal.key]
        raw = round((value - scaling.offset) / scaling.scale) if scaling.scale else 0
        equal = (scaling.choices or {}).get(raw) == label.text
        return equal if node.op == "==" else not equal


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def _walk(node: Node) -> Iterable[Node]:
    yield node
    for child in ("operand", "left", "right", "signal"):
        value = getattr(node, child, None)
        if value is not None:
            yield from _walk(value)
