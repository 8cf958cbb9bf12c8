"""Declared method hyper-parameters: type, range and one line of help, validated by shared code.

A method declares `hyperparameters = {"mu": Param(1e-3, "proximal weight", low=0)}`. A plain default
(`{"mu": 1e-3}`) still works for user plugins: it becomes a `Param` with that default and no range.
A default of `None` (with an explicit `kind`) means "resolved from the run": the method fills it in
from the run's length (see `fedicra.fl.schedule`) unless the config sets it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedicra.errors import UserError


@dataclass(frozen=True)
class Param:
    default: Any
    help: str = ""
    kind: type | None = None         # bool, int, float or str; inferred from the default when None
    low: float | None = None         # inclusive lower bound (exclusive when low_open)
    high: float | None = None        # inclusive upper bound
    low_open: bool = False
    choices: tuple | None = None

    @property
    def type(self) -> type:
        if self.kind is not None:
            return self.kind
        if self.default is None:
            raise TypeError("a Param with default None needs an explicit kind")
        return type(self.default)

    def describe(self) -> str:
        """`float in (0, inf) = 0.001  help` as printed by `fedicra methods`."""
        if self.choices:
            span = " in {" + ", ".join(map(str, self.choices)) + "}"
        elif self.low is not None or self.high is not None:
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            span = f" in {'(' if self.low_open else '['}{low}, {high}{']' if self.high is not None else ')'}"
        else:
            span = ""
        default = "resolved from the run" if self.default is None else repr(self.default)
        return f"{self.type.__name__}{span} = {default}" + (f"  {self.help}" if self.help else "")

    def check(self, key: str, value: Any, method: str) -> Any:
        """The validated value (ints accepted for floats), or a UserError naming method_params.<key>."""
        where = f"method_params.{key}"
        if value is None and self.default is None:
            return None
        expected = self.type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise UserError(f"{where}: expected {expected.__name__} for {method}, got {value!r}")
        if expected in (int, float):
            if not math.isfinite(value):
                raise UserError(f"{where}: must be a finite number for {method}, got {value!r}")
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            if too_low or (self.high is not None and value > self.high):
                raise UserError(f"{where}: must be {self.describe().split(' = ')[0].split(' ', 1)[1]} "
                                f"for {method}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{where}: expected one of {', '.join(map(str, self.choices))} for {method}, got {value!r}")
        return value


def as_param(spec: Any) -> Param:
    return spec if isinstance(spec, Param) else Param(spec)


def validate(declared: dict[str, Any], params: dict[str, Any], method: str) -> dict[str, Any]:
    """Defaults overlaid with `params`; unknown keys, wrong types, out-of-range or non-finite values fail."""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise UserError(f"method_params: {method} has no parameter {unknown[0]!r} (known: {known})")
    values = {key: as_param(spec).default for key, spec in declared.items()}
    for key, value in params.items():
        values[key] = as_param(declared[key]).check(key, value, method)
    return values
