"""Middleware: functions from handler to handler, composed in a visible order.

A handler takes a ``Delivery`` and returns the handler's result. Middleware settle deliveries
themselves when they decide the outcome (retry nacks with a delay, dead-letter moves the
message); the consumer acks a delivery that is still unsettled when the chain returns, and
nacks one whose chain raised. The default order, outermost first::

    logging -> dead_letter -> retry -> idempotency -> timeout -> (decode + your handler)

so a duplicate is absorbed before a timeout starts, a timeout counts as a transient failure,
retry sees every failure first, and only what retry gives up on reaches dead-letter.
"""

from mqkit.middleware.base import Handler, Middleware, compose
from mqkit.middleware.deadletter import DeadLetter
from mqkit.middleware.idempotency import Idempotency, current_transaction
from mqkit.middleware.logging import Logging
from mqkit.middleware.retry import Retry, RetryPolicy
from mqkit.middleware.timeout import Timeout

__all__ = [
    "DeadLetter",
    "Handler",
    "Idempotency",
    "Logging",
    "Middleware",
    "Retry",
    "RetryPolicy",
    "Timeout",
    "compose",
    "current_transaction",
]
