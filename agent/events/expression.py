"""Trigger expressions: a small, safe grammar parsed by hand (no `eval`), and its type check.

    expr    := or ["for" DURATION]
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | SIGNAL | "(" expr ")"
             | "rising" "(" expr ")" | "changed" "(" SIGNAL ")"
             | ("avg" | "min" | "max") "(" SIGNAL "," DURATION ")"
    DURATION := NUMBER ("ms" | "s" | "min")

SIGNAL is a full key (`can0.ESP_VehicleSpeed.VehicleSpeed`); STRING is a value label in double
quotes, compared with `==`/`!=` to an enum signal (`can0.VCU_Status.Gear == "D"`). Types are
number, bool and label; `check` refuses a mismatch, an unknown signal (with the closest names)
or a label the signal's value table lacks, each with the position in the text.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.errors import ConfigError

COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")
WINDOWS = ("avg", "min", "max")
_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000}
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<string>"[^"\\]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<op><=|>=|==|!=|[<>()+\-*/,])
""", re.VERBOSE)


class ExpressionError(ConfigError):
    """A trigger expression that does not parse or type-check; says where and what to fix."""

    def __init__(self, text: str, position: int, message: str) -> None:
        self.position = position
        super().__init__(f"{message} at column {position + 1} of {text!r}")


@dataclass(frozen=True)
class Number:
    value: float
    at: int


@dataclass(frozen=True)
class Label:
    text: str
    at: int


@dataclass(frozen=True)
class Signal:
    key: str
    at: int


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "not"
    operand: Node
    at: int


@dataclass(frozen=True)
class Binary:
    op: str  # arithmetic, comparison, "and", "or"
    left: Node
    right: Node
    at: int


@dataclass(frozen=True)
class Rising:
    operand: Node
    at: int


@dataclass(frozen=True)
class Changed:
    signal: Signal
    at: int


@dataclass(frozen=True)
class Window:
    function: str  # avg, min, max
    signal: Signal
    duration_ms: int
    at: int


@dataclass(frozen=True)
class For:
    operand: Node
    duration_ms: int
    at: int


Node = Number | Label | Signal | Unary | Binary | Rising | Changed | Window | For


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def tokenize(text: str) -> list[_Token]:
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(text, position, f"unexpected {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.position = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.position]

    def error(self, message: str, token: _Token | None = None) -> ExpressionError:
        token = token or self.token
        return ExpressionError(self.text, token.at, message)

    def take(self, text: str | None = None, kind: str | None = None) -> _Token:
        token = self.token
        if (text is not None and token.text != text) or (kind is not None and token.kind != kind):
            wanted = repr(text) if text is not None else f"a {kind}"
            found = repr(token.text) if token.kind != "end" else "the end"
            raise self.error(f"expected {wanted}, found {found}")
        self.position += 1
        return token

    def peek(self, *texts: str) -> bool:
        return self.token.text in texts and self.token.kind in ("op", "name")

    def parse(self) -> Node:
        node = self.expr()
        if self.token.kind != "end":
            raise self.error(f"unexpected {self.token.text!r}")
        return node

    def expr(self) -> Node:
        node = self.or_()
        if self.peek("for"):
            at = self.take().at
            node = For(node, self.duration(), at)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek("or"):
            at = self.take().at
            node = Binary("or", node, self.and_(), at)
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek("and"):
            at = self.take().at
            node = Binary("and", node, self.not_(), at)
        return node

    def not_(self) -> Node:
        if self.peek("not"):
            at = self.take().at
            return Unary("not", self.not_(), at)
        return self.compare()

    def compare(self) -> Node:
        node = self.sum()
        if self.token.kind == "op" and self.token.text in COMPARISONS:
            token = self.take()
            node = Binary(token.text, node, self.sum(), token.at)
        return node

    def sum(self) -> Node:
        node = self.product()
        while self.token.kind == "op" and self.token.text in "+-":
            token = self.take()
            node = Binary(token.text, node, self.product(), token.at)
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.token.kind == "op" and self.token.text in "*/":
            token = self.take()
            node = Binary(token.text, node, self.unary(), token.at)
        return node

    def unary(self) -> Node:
        if self.token.kind == "op" and self.token.text == "-":
            at = self.take().at
            return Unary("-", self.unary(), at)
        return self.atom()

    def atom(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.take()
            return Number(float(token.text), token.at)
        if token.kind == "string":
            self.take()
            return Label(token.text[1:-1], token.at)
        if token.kind == "op" and token.text == "(":
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if token.kind != "name":
            found = repr(token.text) if token.kind != "end" else "the end"
            raise self.error(f"expected a value, a signal or a function, found {found}")
        if token.text in ("and", "or", "not", "for"):
            raise self.error(f"expected a value before {token.text!r}")
        self.take()
        is_call = self.token.text == "(" and self.token.kind == "op"
        if token.text == "rising" and is_call:
            self.take("(")
            operand = self.expr()
            self.take(")")
            return Rising(operand, token.at)
        if token.text == "changed" and is_call:
            self.take("(")
            signal = self.signal()
            self.take(")")
            return Changed(signal, token.at)
        if token.text in WINDOWS and is_call:
            self.take("(")
            signal = self.signal()
            self.take(",")
            duration = self.duration()
            self.take(")")
            return Window(token.text, signal, duration, token.at)
        if is_call:
            raise self.error(f"unknown function {token.text!r} (known: rising, changed, "
                             f"{', '.join(WINDOWS)})", token)
        return Signal(token.text, token.at)

    def signal(self) -> Signal:
        token = self.take(kind="name")
        return Signal(token.text, token.at)

    def duration(self) -> int:
        number = self.take(kind="number")
        unit = self.token
        if unit.kind != "name" or unit.text not in _UNITS_MS:
            raise self.error("expected a unit after the duration: ms, s or min")
        self.take()
        milliseconds = round(float(number.text) * _UNITS_MS[unit.text])
        if milliseconds <= 0:
            raise self.error("a duration must be at least 1 ms", number)
        return milliseconds


def parse(text: str) -> Node:
    """The syntax tree of `text`; ExpressionError (a ConfigError) says where it is wrong."""
    return _Parser(text).parse()


def signals_of(node: Node) -> tuple[str, ...]:
    """Every signal key the expression reads, in order of first appearance."""
    found: list[str] = []

    def walk(item: Node) -> None:
        if isinstance(item, Signal):
            found.append(item.key)
        elif isinstance(item, Unary | Rising | For):
            walk(item.operand)
        elif isinstance(item, Binary):
            walk(item.left)
            walk(item.right)
        elif isinstance(item, Changed | Window):
            walk(item.signal)

    walk(node)
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class SignalType:
    """What the check needs to know of a signal: its value table, if any."""

    choices: Mapping[int, str] | None = None


def check(text: str, signals: Mapping[str, SignalType]) -> Node:
    """Parse and type-check: the whole expression is a condition (bool); problems raise an
    ExpressionError naming the position, with the closest names for an unknown signal."""
    node = parse(text)
    kind = _type(node, text, signals)
    if kind != "bool":
        raise ExpressionError(text, 0, f"the expression is a {kind}, not a condition: compare "
                                       "it (for example `> 0`)")
    return node


def _type(node: Node, text: str, signals: Mapping[str, SignalType]) -> str:
    def fail(at: int, message: str) -> ExpressionError:
        return ExpressionError(text, at, message)

    if isinstance(node, Number):
        return "number"
    if isinstance(node, Label):
        return "label"
    if isinstance(node, Signal):
        if node.key not in signals:
            raise fail(node.at, f"unknown signal {node.key!r}{did_you_mean(node.key, signals)}")
        return "number"
    if isinstance(node, Changed | Window):
        _type(node.signal, text, signals)
        return "bool" if isinstance(node, Changed) else "number"
    if isinstance(node, Rising | For):
        if _type(node.operand, text, signals) != "bool":
            raise fail(node.at, "rising(...) and `for` need a condition")
        return "bool"
    if isinstance(node, Unary):
        operand = _type(node.operand, text, signals)
        wanted = "bool" if node.op == "not" else "number"
        if operand != wanted:
            raise fail(node.at, f"{node.op!r} needs a {wanted}, not a {operand}")
        return wanted
    left, right = _type(node.left, text, signals), _type(node.right, text, signals)
    if node.op in ("and", "or"):
        if left != "bool" or right != "bool":
            raise fail(node.at, f"{node.op!r} joins conditions, not a {left} and a {right}")
        return "bool"
    if "label" in (left, right):
        _check_label(node, right, text, signals)
        return "bool"
    if left != "number" or right != "number":
        raise fail(node.at, f"{node.op!r} needs numbers, not a {left} and a {right}")
    return "bool" if node.op in COMPARISONS else "number"


def _check_label(node: Binary, right: str, text: str,
                 signals: Mapping[str, SignalType]) -> None:
    if node.op not in ("==", "!="):
        raise ExpressionError(text, node.at, "a value label can only be compared with == or !=")
    signal, label = (node.left, node.right) if right == "label" else (node.right, node.left)
    if not isinstance(signal, Signal) or not isinstance(label, Label):
        raise ExpressionError(text, node.at, "compare a value label with a signal")
    choices = signals[signal.key].choices
    if not choices or label.text not in choices.values():
        known = ", ".join(sorted(set((choices or {}).values()))) or "none: it has no value table"
        raise ExpressionError(text, label.at, f"{signal.key} has no value labelled "
                                              f"{label.text!r} (its labels: {known})")


def did_you_mean(key: str, signals: Mapping[str, object]) -> str:
    """`; did you mean ...?` with the closest keys, matching whole keys and signal names."""
    keys = list(signals)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    short = {k.rsplit(".", 1)[-1]: k for k in keys}
    close += [short[name] for name in difflib.get_close_matches(key.rsplit(".", 1)[-1],
                                                               list(short), n=3, cutoff=0.6)
              if short[name] not in close]
    return f"; did you mean {', '.join(close[:3])}?" if close else ""
