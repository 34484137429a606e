"""The embedded in-memory broker (``memory://``), mqkit's reference transport."""

from mqkit.memory._broker import MemoryBroker
from mqkit.memory._chaos import Chaos, SimulatedCrash
from mqkit.memory._transport import MemoryDelivery, MemoryTransport

__all__ = ["Chaos", "MemoryBroker", "MemoryDelivery", "MemoryTransport", "SimulatedCrash"]
