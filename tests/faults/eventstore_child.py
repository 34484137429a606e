"""One event-store writer for the race test: appends batches with optimistic concurrency.

    python tests/faults/eventstore_child.py STORE_URL PREFIX WRITER APPENDS STREAMS OUT_DIR SEED

Appends ``APPENDS`` batches (1-3 events each) to streams ``s0 .. s{STREAMS-1}`` that the
other writer appends to as well. It keeps its own idea of each stream's version and only
learns the truth from a ``ConcurrencyError`` (then retries with new events), so every append
of the other writer in between shows up as a conflict.

Every outcome goes to append-only files in OUT_DIR (one ``write`` per line, so a SIGKILL
never leaves half a line): ``WRITER.attempted`` (``batch event-id,...`` before the call),
``WRITER.acked`` (``batch stream first-version event-id,...`` after it returned) and
``WRITER.conflicts`` (one line per ``ConcurrencyError``). It touches ``WRITER.ready`` once
the store is open and starts when a line arrives on stdin.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make ``mqkit`` and ``tests`` importable
    sys.path.insert(0, str(ROOT))

from mqkit.eventsourcing import ConcurrencyError, NewEvent, open_event_store  # noqa: E402
from tests.faults.ledger import DeliveryLog  # noqa: E402


async def main(url: str, prefix: str, writer: str, appends: int, streams: int, out: Path,
               seed: int) -> None:
    rng = random.Random(seed)
    attempted = DeliveryLog(out / f"{writer}.attempted")
    acked = DeliveryLog(out / f"{writer}.acked")
    conflicts = DeliveryLog(out / f"{writer}.conflicts")
    store = await open_event_store(url, prefix=prefix)
    (out / f"{writer}.ready").touch()
    sys.stdin.readline()  # "go": both writers start together, or they would not race
    known = {f"s{i}": 0 for i in range(streams)}
    done = tries = 0
    while done < appends:
        tries += 1
        stream = rng.choice(sorted(known))
        batch_id = f"{writer}-{tries}"
        events = [NewEvent("Appended", {"writer": writer, "batch": batch_id, "i": i},
                           event_id=f"{batch_id}-{i}")
                  for i in range(rng.randint(1, 3))]
        ids = ",".join(e.event_id for e in events)
        attempted.record(f"{batch_id} {ids}")
        try:
            recorded = await store.append(stream, events, known[stream])
        except ConcurrencyError as exc:
            conflicts.record(f"{batch_id} {stream} {exc.expected} {exc.actual}")
            known[stream] = exc.actual
            continue
        acked.record(f"{batch_id} {stream} {recorded[0].version} {ids}")
        known[stream] = recorded[-1].version
        done += 1
    await store.close()
    for log in (attempted, acked, conflicts):
        log.close()
    print(f"{writer} appended {done} batches in {tries} tries (pid {os.getpid()})")


if __name__ == "__main__":
    url, prefix, writer, appends, streams, out, seed = sys.argv[1:8]
    asyncio.run(main(url, prefix, writer, int(appends), int(streams), Path(out), int(seed)))
