"""Async registration: the API publishes an event and answers at once; the slow work
(welcome email, analytics) happens in consumers afterwards.

    python examples/async_registration.py                 # embedded memory:// broker
    python examples/async_registration.py --url kafka://127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from pydantic import BaseModel

from mqkit.client import Client

EMAIL_SECONDS = 0.3  # a slow SMTP call
ANALYTICS_SECONDS = 0.15


class UserRegistered(BaseModel):
    user_id: str
    email: str


async def main(url: str) -> int:
    topic = f"example-{uuid.uuid4().hex[:8]}.user-registered"  # fresh per run
    done: dict[str, float] = {}
    all_done = asyncio.Event()
    async with Client(url) as api, Client(url) as workers:

        @workers.subscribe(topic, group="email")
        async def send_welcome_email(event: UserRegistered) -> None:
            await asyncio.sleep(EMAIL_SECONDS)
            done["email"] = time.perf_counter()
            if len(done) == 2:
                all_done.set()
            print(f"  email:     welcome email sent to {event.email}")

        @workers.subscribe(topic, group="analytics")
        async def record_signup(event: UserRegistered) -> None:
            await asyncio.sleep(ANALYTICS_SECONDS)
            done["analytics"] = time.perf_counter()
            if len(done) == 2:
                all_done.set()
            print(f"  analytics: signup of {event.user_id} recorded")

        await workers.start()

        # The request handler: create the user, publish, return. Nothing else waits.
        started = time.perf_counter()
        await api.publish(topic, UserRegistered(user_id="u-1", email="alice@example.com"),
                          key="u-1")
        answered = time.perf_counter() - started
        inline_ms = (EMAIL_SECONDS + ANALYTICS_SECONDS) * 1000
        print(f"api: POST /users answered in {answered * 1000:.1f} ms "
              f"(inline email + analytics would take ~{inline_ms:.0f} ms)")

        async with asyncio.timeout(30):
            await all_done.wait()

    ok = len(done) == 2 and answered < EMAIL_SECONDS
    print("ok: the request returned before the work was done" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://", help="broker URL (default memory://)")
    sys.exit(asyncio.run(main(parser.parse_args().url)))
