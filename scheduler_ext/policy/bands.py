"""Priority bands (Borg §2.5): an ordered type, and the preemption rules R1/R2 in one place."""

from __future__ import annotations

from enum import IntEnum


class Band(IntEnum):
    """Bands ordered by priority; higher compares greater."""

    BEST_EFFORT = 0
    BATCH = 1
    PRODUCTION = 2
    MONITORING = 3

    @property
    def label(self) -> str:
        """The band's name as users write it (PriorityClass name, BandQuota key)."""
        return self.name.lower().replace("_", "-")

    @property
    def is_prod(self) -> bool:
        return self >= Band.PRODUCTION

    @classmethod
    def from_label(cls, label: str) -> Band:
        try:
            return _BY_LABEL[label]
        except KeyError:
            raise ValueError(f"unknown band {label!r}; expected one of {', '.join(_BY_LABEL)}") from None

    @classmethod
    def of_priority(cls, priority: int | None) -> Band:
        """A pod's band follows from its priority value (SPEC §2); no priority is best-effort."""
        value = priority or 0
        if value >= 900_000:
            return cls.MONITORING
        if value >= 700_000:
            return cls.PRODUCTION
        if value >= 300_000:
            return cls.BATCH
        return cls.BEST_EFFORT


_BY_LABEL = {band.label: band for band in Band}

# The PriorityClasses Cell installs: name -> value (cluster/base/priorityclasses.yaml mirrors this).
PRIORITY_CLASSES: dict[str, int] = {
    "monitoring": 950_000,
    "production": 800_000,
    "batch": 500_000,
    "best-effort": 100_000,
}


def may_preempt(preemptor_priority: int, victim_priority: int) -> bool:
    """R1 + R2: a prod pod never preempts a prod pod; otherwise only strictly lower priority."""
    if Band.of_priority(preemptor_priority).is_prod and Band.of_priority(victim_priority).is_prod:
        return False
    return victim_priority < preemptor_priority
