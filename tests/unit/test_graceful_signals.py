"""SIGTERM and SIGINT stop a running client gracefully: in-flight handlers finish and ack."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    import mqkit

    async def main() -> None:
        client = mqkit.Client("memory://signals")
        started, finished = set(), set()

        @client.subscribe("jobs", group="workers", concurrency=4)
        async def work(n: int) -> None:
            started.add(n)
            print("started", n, flush=True)
            await asyncio.sleep(0.2)
            finished.add(n)

        await client.start()
        await client.publish_batch("jobs", range(100))
        await client.run()  # returns after SIGINT/SIGTERM and a graceful stop
        group = client.transport.broker.group("jobs", "workers")
        print(f"stopped started={len(started)} finished={len(finished)} "
              f"unacked_in_flight={group.inflight}", flush=True)
        await client.close()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_fetching_and_lets_in_flight_work_finish(sig: signal.Signals) -> None:
    # Given a consumer process in the middle of slow work
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while "started" not in proc.stdout.readline():
        assert time.monotonic() < deadline, "the consumer never started"
    # When it receives the signal
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    # Then it exits cleanly, every handler it started finished, and none is left unacked
    assert proc.returncode == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("stopped"), out
    fields = dict(part.split("=") for part in summary.split()[1:])
    assert fields["started"] == fields["finished"]
    assert int(fields["started"]) < 100  # it stopped fetching: not everything was taken
    assert fields["unacked_in_flight"] == "0"
