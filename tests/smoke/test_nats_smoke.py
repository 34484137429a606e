import uuid
from urllib.parse import urlsplit

import pytest

nats = pytest.importorskip("nats")


@pytest.mark.asyncio
async def test_nats_core_publish_subscribe(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        subject = f"smoke.{uuid.uuid4().hex[:12]}"
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"hello")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hello"
    finally:
        await nc.close()


@pytest.mark.asyncio
async def test_jetstream_stream_puback_pull_ack(jetstream_url: str) -> None:
    server = f"nats://{urlsplit(jetstream_url).netloc}"
    nc = await nats.connect(server, connect_timeout=5, max_reconnect_attempts=0)
    run = uuid.uuid4().hex[:12]
    stream, subject = f"SMOKE_{run}", f"smoke-{run}.orders"
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"smoke-{run}.>"])
        try:
            ack = await js.publish(subject, b"durable", headers={"Nats-Msg-Id": run})
            assert (ack.stream, ack.seq, ack.duplicate) == (stream, 1, None)
            again = await js.publish(subject, b"durable", headers={"Nats-Msg-Id": run})
            assert again.duplicate is True  # de-duplicated by Nats-Msg-Id

            psub = await js.pull_subscribe(subject, durable="smoke", stream=stream)
            msgs = await psub.fetch(1, timeout=5)
            assert [m.data for m in msgs] == [b"durable"]
            await msgs[0].ack_sync()
            info = await js.consumer_info(stream, "smoke")
            assert info.num_ack_pending == 0 and info.num_pending == 0
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()
