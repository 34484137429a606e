"""Seeded chaos for the in-memory broker: the failures real brokers produce, on demand.

Every decision comes from one ``random.Random(seed)``, so the same seed and the same
sequence of calls give the same run. What it can do:

- ``duplicate``: deliver every message this many times to each group (at-least-once);
- ``redeliver_rate``: an ack is lost with this probability and the message comes back;
- ``reorder``: hand out messages of different keys out of publish order (never two of one
  key out of order, which the memory transport promises);
- ``publish_failure_rate``: a publish fails with a transient ``ConnectionFailed`` (nothing of
  that batch is stored);
- ``crash_before_ack_rate``: the consumer "crashes" between its effect and its ack: the ack
  raises ``SimulatedCrash`` and the message is redelivered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mqkit.errors import ConfigurationError, MqkitError


class SimulatedCrash(MqkitError):
    """Raised by an ack that chaos decided never reached the broker."""


@dataclass(frozen=True)
class Chaos:
    seed: int = 0
    duplicate: int = 1
    redeliver_rate: float = 0.0
    reorder: bool = False
    reorder_window: int = 8
    publish_failure_rate: float = 0.0
    crash_before_ack_rate: float = 0.0
    rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.duplicate < 1:
            raise ConfigurationError("Chaos.duplicate is deliveries per message: >= 1")
        for name in ("redeliver_rate", "publish_failure_rate", "crash_before_ack_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigurationError(f"Chaos.{name} must be within [0, 1]")
        if self.reorder_window < 1:
            raise ConfigurationError("Chaos.reorder_window must be >= 1")
        object.__setattr__(self, "rng", random.Random(self.seed))

    def chance(self, rate: float) -> bool:
        return rate > 0.0 and self.rng.random() < rate
