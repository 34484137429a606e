"""The embedded in-memory broker (``memory://``), mqkit's reference transport."""

from mqkit.memory._broker import MemoryBroker
from mqkit.memory._transport import MemoryDelivery, MemoryTransport

__all__ = ["MemoryBroker", "MemoryDelivery", "MemoryTransport"]
