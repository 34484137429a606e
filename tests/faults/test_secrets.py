"""Canary secrets in every credential field: never in a repr, a log record, an exception or a
dead letter; TLS verification on by default.

Each credential field mqkit accepts gets a distinct random canary: URL passwords (amqp,
kafka SASL, nats, jetstream, redis, postgres), a NATS token in the userinfo or the ``token``
option, Kafka's ``sasl.password`` / ``ssl.key.password`` as options and in the query string,
AWS access key, secret key and session token (boto3's chain: mqkit takes no AWS credentials
from the URL). The canaries are wrong credentials for the shared brokers that check them
(RabbitMQ, Redis, PostgreSQL; Kafka refuses SASL on its plaintext listener) and go to an
unreachable port for the others (NATS accepts any credentials when it has none configured;
moto accepts any AWS keys, so the SQS case also runs a normal publish against it).

Searched for each canary: ``repr``/``str`` of the client, its transport, settings, URL and
transport config; every log record at DEBUG of every logger (mqkit, pika, nats, botocore,
urllib3, redis, psycopg...: message, args, extra fields, formatted traceback) and fd 2, where
librdkafka writes its own log; the exception raised (message, args, repr, the whole
``__cause__``/``__context__`` chain and the formatted traceback); a dead letter (headers and
body) and the log records of its handler's failure when the exception text names the
broker URL. mqkit has no tracing: the only per-delivery attributes are the ``mqkit`` extra
fields of the logging middleware, which the log search covers.

TLS: the configurations the adapters build are inspected: amqps:// (pika's SSL context:
``CERT_REQUIRED`` and ``check_hostname``), kafka ``security.protocol=SSL`` (no setting that
disables verification unless given; librdkafka >= 2.0 defaults to hostname verification),
sqs with ``secure=true`` and AWS itself (botocore ``verify`` on). mqkit's NATS adapter has no
TLS option at all: the test shows it fails closed (never sends credentials in clear to a
server that requires TLS).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr

from mqkit.client import Client
from mqkit.errors import ConfigurationError, MqkitError
from mqkit.message import Delivery, new_id
from mqkit.settings import Settings
from mqkit.testing.waiting import wait_until
from mqkit.url import BrokerURL
from tests.faults.ledger import DeliveryLog, Ledger, report

DRIVER_LOGGERS = (
    "mqkit", "pika", "nats", "botocore", "boto3", "urllib3", "redis", "psycopg", "asyncio",
)


def canary(label: str) -> str:
    """A distinct random secret, URL-safe, that cannot appear anywhere by chance."""
    return f"canary{label}{new_id()[:16]}"


def free_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exception_texts(exc: BaseException) -> list[str]:
    """Message, args and repr of ``exc`` and of every exception chained to it, and the
    formatted traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        todo += [current.__cause__, current.__context__]
    return texts


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    """Everything a log record carries: message, args, extra fields, exception text."""
    formatter = logging.Formatter()
    texts = []
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))  # args, extra fields (the "mqkit" attributes)
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
    return texts


def leaked(canaries: dict[str, str], texts: list[str]) -> dict[str, list[str]]:
    """For each canary found in ``texts``: the label, and where (the texts, shortened)."""
    found: dict[str, list[str]] = {}
    for label, secret in canaries.items():
        hits = [t for t in texts if secret in t]
        if hits:
            found[label] = [h[max(0, h.find(secret) - 120) : h.find(secret) + 40] for h in hits]
    return found


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, captured."""
    caplog.set_level(logging.DEBUG)
    for name in DRIVER_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


@dataclass
class Case:
    """A URL and options carrying canaries, and the environment they need."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    canaries: dict[str, str] = field(default_factory=dict)
    store: bool = False  # an idempotency store URL rather than a broker URL


def _nats_cases(scheme: str) -> dict[str, Callable[[], Case]]:
    def userpass() -> Case:
        secret = canary("natspass")
        url = f"{scheme}://app:{secret}@127.0.0.1:{free_port()}?connect_timeout=1"
        return Case(url, canaries={"password": secret})

    def token_userinfo() -> Case:
        secret = canary("natstoken")
        return Case(f"{scheme}://{secret}@127.0.0.1:{free_port()}?connect_timeout=1",
                    canaries={"token": secret})

    def token_option() -> Case:
        secret, query_secret = canary("natstokenopt"), canary("natstokenquery")
        url = f"{scheme}://127.0.0.1:{free_port()}?connect_timeout=1&token={query_secret}"
        # The keyword option wins over the query: both must stay hidden.
        return Case(url, options={"token": secret},
                    canaries={"token option": secret, "token query": query_secret})

    return {
        f"{scheme}-userpass": userpass,
        f"{scheme}-token-userinfo": token_userinfo,
        f"{scheme}-token-option": token_option,
    }


def amqp_case() -> Case:
    secret = canary("amqp")
    # RabbitMQ's guest account is real: the canary is its wrong password
    return Case(f"amqp://guest:{secret}@127.0.0.1:5672/%2F?connect_timeout=2",
                canaries={"password": secret})


def kafka_url_case() -> Case:
    secret = canary("kafkaurl")
    return Case(f"kafka://app:{secret}@127.0.0.1:9092?connect_timeout=2",
                canaries={"sasl password (URL)": secret})


def kafka_option_case() -> Case:
    password, key_password = canary("kafkasasl"), canary("kafkakey")
    query_secret = canary("kafkaquery")
    url = (
        "kafka://127.0.0.1:9092?connect_timeout=2&security.protocol=SASL_PLAINTEXT"
        f"&sasl.mechanism=PLAIN&sasl.username=app&sasl.oauthbearer.client.secret={query_secret}"
    )
    options = {"sasl.password": password, "ssl.key.password": key_password}
    return Case(url, options=options, canaries={
        "sasl.password option": password,
        "ssl.key.password option": key_password,
        "oauth client secret (query)": query_secret,
    })


def sqs_case(endpoint: str) -> Case:
    keys = {
        "AWS_ACCESS_KEY_ID": canary("awskey"),
        "AWS_SECRET_ACCESS_KEY": canary("awssecret"),
        "AWS_SESSION_TOKEN": canary("awstoken"),
    }
    return Case(f"sqs://{endpoint}?region=us-east-1&connect_timeout=1&wait_time=1",
                env=keys, canaries=dict(keys))


def redis_case() -> Case:
    secret = canary("redis")
    # The shared Redis has no password and redis-py then ignores AUTH's refusal: nobody listens
    return Case(f"redis://default:{secret}@127.0.0.1:{free_port()}/0",
                canaries={"password": secret}, store=True)


def postgres_case() -> Case:
    secret = canary("pg")
    return Case(f"postgresql://mqkit:{secret}@127.0.0.1:5432/mqkit?connect_timeout=3",
                canaries={"password": secret}, store=True)


CASES: dict[str, Callable[[], Case]] = {
    "amqp-password": amqp_case,
    "kafka-url-password": kafka_url_case,
    "kafka-options-and-query": kafka_option_case,
    **_nats_cases("nats"),
    **_nats_cases("jetstream"),
    "sqs-aws-keys-unreachable": lambda: sqs_case(f"127.0.0.1:{free_port()}"),
    "redis-password": redis_case,
    "postgres-password": postgres_case,
}
BROKER_OF = {"amqp": "rabbitmq", "kafka": "kafka", "nats": "nats", "jetstream": "jetstream",
             "sqs": "sqs", "redis": "redis", "postgres": "postgres"}


def object_texts(client: Client) -> list[str]:
    transport = client.transport
    objects: list[Any] = [client, transport, client.settings, client.url]
    config = getattr(transport, "config", None)
    if config is not None:
        objects.append(config)
        parameters = getattr(config, "parameters", None)
        if callable(parameters):
            objects.append(parameters())  # pika's ConnectionParameters
    return [text for obj in objects for text in (repr(obj), str(obj))]


async def refused(case: Case) -> BaseException:
    """Connect with the canaries; return the error it must raise."""
    if case.store:
        from mqkit.stores.factory import open_idempotency_store

        with pytest.raises(MqkitError) as info:
            await open_idempotency_store(case.url)
        return info.value
    client = Client(case.url, **case.options)
    try:
        with pytest.raises(MqkitError) as info:
            await client.connect()
    finally:
        await client.close()
    return info.value


@pytest.mark.parametrize("name", list(CASES))
async def test_canary_credentials_never_leak(
    name: str,
    request: pytest.FixtureRequest,
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given canaries in every credential field of this transport (and its broker running)
    broker = BROKER_OF[name.split("-", 1)[0]]
    request.getfixturevalue(f"{broker}_url")  # fails, never skips, when the broker is missing
    case = CASES[name]()
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    texts: list[str] = []
    if not case.store:
        # When the client, its transport, settings and URL are printed
        client = Client(case.url, **case.options)
        texts += object_texts(client)
        texts += [repr(Settings(url=SecretStr(case.url), options=case.options))]
        await client.close()
    # And a connection with them is refused (wrong credentials or nobody listening)
    error = await refused(case)
    error_texts = exception_texts(error)
    log_texts = record_texts(debug_logs.records)
    stderr = capfd.readouterr().err  # librdkafka logs to fd 2
    texts += error_texts + log_texts + [stderr]

    found = leaked(case.canaries, texts)
    report("canary-secrets", broker, case=name, fields=len(case.canaries), leaks=len(found),
           log_records=len(debug_logs.records), error=type(error).__name__, lost=0,
           unexpected=0)
    # Then no canary appears anywhere, and the error still says what went wrong
    assert found == {}, json.dumps(found, indent=1)
    assert isinstance(error, MqkitError)
    assert str(error)


async def test_canaries_in_environment_settings_never_leak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given MQKIT_URL and MQKIT_OPTIONS holding canaries
    password, option = canary("envurl"), canary("envopt")
    monkeypatch.setenv("MQKIT_URL", f"kafka://app:{password}@127.0.0.1:9092")
    monkeypatch.setenv("MQKIT_OPTIONS", json.dumps({"sasl.password": option}))
    # When the settings and a client built from them are printed
    settings = Settings()
    client = Client(settings)
    texts = [*object_texts(client), repr(settings), str(settings)]
    found = leaked({"url password": password, "option": option}, texts)
    report("canary-secrets", "kafka", case="environment-settings", fields=2,
           leaks=len(found), lost=0, unexpected=0)
    # Then neither canary shows
    assert found == {}, json.dumps(found, indent=1)
    assert settings.url.get_secret_value().startswith("kafka://app:")  # still usable


async def test_sqs_debug_logs_of_a_normal_publish_hide_aws_keys(
    sqs_url: str,
    debug_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given canary AWS keys (moto accepts any) and every logger at DEBUG
    case = sqs_case(sqs_url.split("://", 1)[1].split("?", 1)[0])
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    topic = f"faults.secrets.{new_id()[:12]}"
    # When a topic is created and a message published and received
    async with Client(case.url) as client:
        await client.ensure_topic(topic, groups=["g"])
        await client.publish(topic, {"hello": "world"})
        async for delivery in client.consume(topic, group="g"):
            await delivery.ack()
            break
    found = leaked(case.canaries, record_texts(debug_logs.records))
    report("canary-secrets", "sqs", case="sqs-normal-publish-debug", fields=3,
           leaks=len(found), log_records=len(debug_logs.records), lost=0, unexpected=0)
    # Then no key shows in any log record (botocore logs signed requests at DEBUG)
    assert found == {}, json.dumps(found, indent=1)


# --- dead letters -------------------------------------------------------------------------


@pytest.fixture
async def memory_client() -> AsyncIterator[Client]:
    client = Client(f"memory://secrets-{new_id()[:8]}")
    yield client
    await client.close()


async def test_dead_letter_of_an_error_naming_the_broker_url_hides_its_secrets(
    memory_client: Client,
    debug_logs: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    # Given a handler whose error names broker URLs with canaries in their credentials
    password, token, query = canary("dlqpass"), canary("dlqtoken"), canary("dlqquery")
    urls = [
        f"amqp://app:{password}@rabbit.internal:5672/%2F",
        f"nats://{token}@nats.internal:4222",
        f"kafka://broker.internal:9092?sasl.password={query}&acks=all",
    ]
    canaries = {"password": password, "token": token, "query secret": query}
    topic = f"faults.secrets.{new_id()[:12]}"
    ledger, log = Ledger(), DeliveryLog(tmp_path / "deliveries.log")

    @memory_client.subscribe(topic, group="g")
    async def fail(payload: dict[str, Any], delivery: Delivery) -> None:
        log.record(delivery.message.id)
        raise PermissionError(f"cannot forward to {', '.join(urls)}")

    await memory_client.start()
    # When a message fails permanently and is dead-lettered
    message = memory_client.message(topic, {"order": 1})
    ledger.attempt(message.id)
    await memory_client.publish_messages([message])
    ledger.ack(message.id)
    letters = []
    async with asyncio.timeout(10):
        async for letter in memory_client.consume(f"{topic}.dlq", group="mqkit.dlq"):
            letters.append(letter.message)
            await letter.ack()
            break
    await wait_until(lambda: log.counts()[message.id] >= 1, what="the delivery logged")
    letter = letters[0]
    texts = [json.dumps(dict(letter.headers)), letter.body.decode(), repr(letter)]
    texts += record_texts(debug_logs.records)
    found = leaked(canaries, texts)
    verdict = ledger.verdict(log.counts())
    log.close()
    report("canary-secrets", "memory", case="dead-letter-error-text", fields=3,
           leaks=len(found), **verdict.row())
    # Then the dead letter still says why, with the hosts, but no secret, and no log has one
    assert verdict.ok, verdict
    assert letter.id == message.id
    error_text = letter.headers["x-dlq-error-message"]
    assert "PermissionError" in letter.headers["x-dlq-error-type"]
    assert "rabbit.internal" in error_text and "nats.internal" in error_text
    assert "acks=all" in error_text  # the rest of the URL is kept
    assert found == {}, json.dumps(found, indent=1)


# --- TLS ------------------------------------------------------------------------------------


def test_amqps_verifies_certificates_and_hostname_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mqkit_rabbitmq.config import RabbitConfig

    config = RabbitConfig.from_url(BrokerURL.parse("amqps://app:pw@rabbit.example.com/%2F"))
    parameters = config.parameters()
    assert parameters.ssl_options is not None
    context = parameters.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert parameters.ssl_options.server_hostname == "rabbit.example.com"
    assert parameters.port == 5671
    # And verification goes off only when tls_verify=false is given explicitly, with a WARNING
    for option in ("verify", "ssl_verify", "insecure", "cert_reqs"):
        with pytest.raises(ConfigurationError):
            RabbitConfig.from_url(BrokerURL.parse(f"amqps://h/%2F?{option}=false"))
    with caplog.at_level(logging.WARNING, logger="mqkit.rabbitmq"):
        off = RabbitConfig.from_url(BrokerURL.parse("amqps://h/%2F?tls_verify=false"))
    assert off.ssl_context is not None and off.ssl_context.verify_mode == ssl.CERT_NONE
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    report("tls-default", "rabbitmq", verify_mode="CERT_REQUIRED", check_hostname=True,
           opt_out="tls_verify=false (explicit, WARNING)", lost=0, unexpected=0)


def test_kafka_ssl_keeps_librdkafka_verification_unless_told() -> None:
    import confluent_kafka

    from mqkit_kafka.config import KafkaConfig

    config = KafkaConfig.from_url(BrokerURL.parse("kafka://b.example.com:9093?security.protocol=SSL"))
    confs = [config.producer_conf(), config.consumer_conf("g"), config.admin_conf()]
    for conf in confs:
        assert conf["security.protocol"] == "SSL"
        assert str(conf.get("enable.ssl.certificate.verification", "true")).lower() == "true"
        assert conf.get("ssl.endpoint.identification.algorithm", "https") == "https"
    # librdkafka verifies the certificate always and the hostname by default since 2.0.0
    major = int(confluent_kafka.libversion()[0].split(".")[0])
    assert major >= 2
    # And switching verification off takes an explicit librdkafka setting
    insecure = KafkaConfig.from_url(
        BrokerURL.parse("kafka://b:9093?security.protocol=SSL"),
        **{"enable.ssl.certificate.verification": "false"},
    )
    assert insecure.producer_conf()["enable.ssl.certificate.verification"] == "false"
    report("tls-default", "kafka", endpoint_identification="https (librdkafka default)",
           certificate_verification=True, opt_out="enable.ssl.certificate.verification=false",
           lost=0, unexpected=0)


def test_sqs_https_verifies_certificates_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from mqkit_sqs.config import SqsConfig
    from mqkit_sqs.connection import Connection

    for url, options in (
        ("sqs://sqs.example.com:443?region=us-east-1", {"secure": "true"}),
        ("sqs://?region=us-east-1", {}),  # AWS itself
    ):
        connection = Connection(SqsConfig.from_url(BrokerURL.parse(url), **options))
        connection.open()  # builds clients, no network
        try:
            for client in (connection.sqs, connection.sns, connection.sqs_receive):
                assert client.meta.endpoint_url.startswith("https://")
                # True, or the path of a CA bundle (AWS_CA_BUNDLE, a config file): never False
                verify = client._endpoint.http_session._verify
                assert verify is True or (isinstance(verify, str) and os.path.exists(verify))
        finally:
            connection.close()
    # And there is no option that turns verification off
    for option in ("verify", "insecure", "ssl_verify"):
        with pytest.raises(ConfigurationError):
            SqsConfig.from_url(BrokerURL.parse(f"sqs://h:1?{option}=false"))
    report("tls-default", "sqs", verify=True, default_for_host_port="http (secure=false)",
           opt_out="none", lost=0, unexpected=0)


async def test_nats_never_sends_credentials_in_clear_to_a_tls_server(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    # Given a server that requires TLS (its INFO says so) and records what it receives
    secret = canary("natstls")
    received = bytearray()
    writers: list[asyncio.StreamWriter] = []
    info = {"server_id": "fake", "version": "2.10.0", "proto": 1, "max_payload": 1048576,
            "tls_required": True, "auth_required": True, "headers": True}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        await writer.drain()
        while chunk := await reader.read(4096):
            received.extend(chunk)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"nats://app:{secret}@127.0.0.1:{port}?connect_timeout=1")
    began = asyncio.get_running_loop().time()
    try:
        # When mqkit connects to it with a password (bounded here: see the report)
        with pytest.raises((MqkitError, TimeoutError)) as failure:
            async with asyncio.timeout(4):
                await client.connect()
    finally:
        seconds = asyncio.get_running_loop().time() - began
        await client.close()
        for writer in writers:
            writer.close()
        server.close()
    texts = exception_texts(failure.value) + record_texts(debug_logs.records)
    report("tls-default", "nats", tls_option="none in mqkit (nats-py default context)",
           client_hello=bytes(received[:2]) == b"\x16\x03", connect_seconds=round(seconds, 2),
           sent_in_clear=secret.encode() in received, lost=0, unexpected=0)
    # Then nats-py starts a TLS handshake (a TLS record, not a CONNECT in clear) and the
    # password never crossed the wire in clear or reached a log
    assert bytes(received[:2]) == b"\x16\x03"
    assert secret.encode() not in received
    assert b"CONNECT" not in received
    assert leaked({"password": secret}, texts) == {}


@pytest.fixture(autouse=True)
def _no_aws_env_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the canary AWS keys of one test out of every other (monkeypatch undoes them)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
