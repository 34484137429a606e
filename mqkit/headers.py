"""Names of the conventional headers mqkit reads and writes on every broker.

Header names are lower-case ASCII with dashes so that they survive brokers that fold case
(HTTP-style SNS/SQS attributes) or restrict characters.
"""

IDEMPOTENCY_KEY = "idempotency-key"
DEDUP_ID = "x-mqkit-dedup-id"
"""The id a broker de-duplicates publishes by (JetStream Nats-Msg-Id, SQS FIFO
MessageDeduplicationId). Defaults to the idempotency key; set it apart when a resend must
reach the consumer (which then de-duplicates by the idempotency key), as a saga command's
resend after a lost reply must."""
CORRELATION_ID = "correlation-id"
CAUSATION_ID = "causation-id"
CONTENT_TYPE = "content-type"
ATTEMPT = "x-mqkit-attempt"
RESERVED = frozenset(
    {ATTEMPT, "x-mqkit-id", "x-mqkit-topic", "x-mqkit-not-before", "x-mqkit-key",
     "x-mqkit-timestamp", "x-mqkit-ns"}
)
"""Names adapters keep their own bookkeeping in (a retry copy's attempt, original topic and
not-before time; the id, key and timestamp where the broker has no field for them). They are
trusted on receipt, so ``Client`` refuses them from a publisher: a forged attempt count
would dead-letter a message early, a forged topic would misroute it."""
REPLY_TO = "reply-to"
PAYLOAD_TYPE = "x-mqkit-type"

DLQ_REASON = "x-dlq-reason"
DLQ_ERROR_TYPE = "x-dlq-error-type"
DLQ_ERROR_MESSAGE = "x-dlq-error-message"
DLQ_TRACEBACK = "x-dlq-traceback"
DLQ_ATTEMPTS = "x-dlq-attempts"
DLQ_ORIGINAL_TOPIC = "x-dlq-original-topic"
DLQ_FAILED_AT = "x-dlq-failed-at"
DLQ_REPLAYED_AT = "x-dlq-replayed-at"
DLQ_GROUP = "x-dlq-group"

DLQ_HEADERS = (
    DLQ_REASON,
    DLQ_ERROR_TYPE,
    DLQ_ERROR_MESSAGE,
    DLQ_TRACEBACK,
    DLQ_ATTEMPTS,
    DLQ_ORIGINAL_TOPIC,
    DLQ_FAILED_AT,
    DLQ_GROUP,
)
