"""Resource arithmetic: one frozen value, milli-CPU and bytes.

Kept as the single leaf every other policy module builds on (Kueue's `pkg/resources` habit):
integer units so sums are exact, saturation instead of negative results, and parsing of
Kubernetes quantity strings in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


# Bounds that keep parsing O(length) on hostile input. "1e400000" is a valid quantity to the API
# server, but turning it into an int costs seconds (quadratic digit conversion), on the event loop
# of whoever reads it. No machine holds 10**24 bytes or 10**21 cores, so anything larger is refused
# before any conversion, from its exponent alone.
MAX_QUANTITY_TEXT = 64
MAX_QUANTITY = Decimal(10) ** 24
_MAX_ADJUSTED = 24  # Decimal.adjusted() of MAX_QUANTITY; suffixes add at most 18


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity (or one too large for any machine)."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_QUANTITY_TEXT + 2 else text[:MAX_QUANTITY_TEXT] + "..."


def _bounded(number: Decimal, value: object) -> Decimal:
    if not number.is_finite():
        raise QuantityError(f"not a quantity: {_short(value)}")
    if (number and number.adjusted() > _MAX_ADJUSTED) or abs(number) > MAX_QUANTITY:
        raise QuantityError(f"quantity {_short(value)} is larger than any machine holds (limit 1e24)")
    return number


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity ("500m", "1.5", "256Mi", "1e3") into a Decimal of base units.

    Bounded work whatever the input: long strings and huge exponents are refused (QuantityError)
    before any arithmetic.
    """
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        if abs(value) > MAX_QUANTITY:
            raise QuantityError(f"quantity {_short(value)} is larger than any machine holds (limit 1e24)")
        return Decimal(value)
    if isinstance(value, float):
        return _bounded(Decimal(str(value)), value)
    if not isinstance(value, str) or len(value) > MAX_QUANTITY_TEXT:
        raise QuantityError(f"not a quantity: {_short(value)}")
    text = value.strip()
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(f"not a quantity: {_short(value)}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = _bounded(Decimal(number), value)
    except InvalidOperation as exc:
        raise QuantityError(f"not a quantity: {_short(value)}") from exc
    if suffix in _BINARY:
        return _bounded(base * _BINARY[suffix], value)
    return _bounded(base * _DECIMAL[suffix], value)


def parse_cpu(value: str | int | float) -> int:
    """CPU quantity to milli-CPU, rounded up as Kubernetes does for requests."""
    milli = parse_quantity(value) * 1000
    return int(milli.to_integral_value(rounding="ROUND_CEILING"))


def parse_memory(value: str | int | float) -> int:
    """Memory quantity to bytes, rounded up."""
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def format_cpu(milli: int) -> str:
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def format_memory(num_bytes: int) -> str:
    for suffix, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if num_bytes and num_bytes % size == 0:
            return f"{num_bytes // size}{suffix}"
    return str(num_bytes)


@dataclass(frozen=True, slots=True, order=True)
class Resources:
    """CPU in milli-units and memory in bytes. Never negative."""

    cpu: int = 0
    memory: int = 0

    @classmethod
    def parse(cls, mapping: dict[str, str | int | float] | None) -> Resources:
        """From a Kubernetes resource map ({"cpu": "500m", "memory": "256Mi"}); other keys ignored."""
        if not mapping:
            return cls()
        cpu = parse_cpu(mapping["cpu"]) if mapping.get("cpu") is not None else 0
        memory = parse_memory(mapping["memory"]) if mapping.get("memory") is not None else 0
        return cls(max(cpu, 0), max(memory, 0))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        """Saturating subtraction: capacity cannot go below zero."""
        return Resources(max(self.cpu - other.cpu, 0), max(self.memory - other.memory, 0))

    def scale(self, factor: int) -> Resources:
        return Resources(self.cpu * factor, self.memory * factor)

    def fits_in(self, free: Resources) -> bool:
        return self.cpu <= free.cpu and self.memory <= free.memory

    def how_many_fit(self, free: Resources) -> int:
        """How many copies of self fit in free (a zero request fits without bound: capped at 2**31)."""
        counts = []
        if self.cpu:
            counts.append(free.cpu // self.cpu)
        if self.memory:
            counts.append(free.memory // self.memory)
        return min(counts) if counts else 2**31

    def shortfall(self, free: Resources) -> list[str]:
        """Human-readable list of resources that do not fit, e.g. ["cpu 1500m > 1 free"]."""
        reasons = []
        if self.cpu > free.cpu:
            reasons.append(f"cpu {format_cpu(self.cpu)} > {format_cpu(free.cpu)} free")
        if self.memory > free.memory:
            reasons.append(f"memory {format_memory(self.memory)} > {format_memory(free.memory)} free")
        return reasons

    def is_zero(self) -> bool:
        return self.cpu == 0 and self.memory == 0

    def to_dict(self) -> dict[str, str]:
        return {"cpu": format_cpu(self.cpu), "memory": format_memory(self.memory)}

    def __str__(self) -> str:
        return f"cpu {format_cpu(self.cpu)} / memory {format_memory(self.memory)}"


ZERO = Resources()
