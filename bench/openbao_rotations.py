"""Rotation benchmark: the handlers' own cost per rotation, against the in-memory OpenBao double of the
tests on loopback (so the figures are client + handler + HTTP overhead, not a real server's storage).

    python bench/openbao_rotations.py [--n 300] [--concurrency 8]

For each kind (KV v2 check-and-set, transit behind the ledger) it rotates ``n`` distinct secrets once,
then replays every event, and prints rotations per second, the p50/p99 of one invocation, and the number
of OpenBao requests per rotation and per replay. Last line: kv_rps=<..> transit_rps=<..>
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import glue
from handlers import openbao
from tests.handlers.openbao.double import OpenBaoDouble, TransitKey

JWT = "bench-service-account-token"


async def run_all(
    n: int, concurrency: int, call: Callable[[int], Awaitable[Any]]
) -> tuple[float, list[float]]:
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with semaphore:
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start, latencies


def line(name: str, n: int, elapsed: float, latencies: list[float], requests: int) -> float:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    rate = n / elapsed
    print(
        f"{name:18} {rate:8.0f}/s  p50 {statistics.median(latencies) * 1000:6.2f} ms"
        f"  p99 {p99 * 1000:6.2f} ms  requests/invocation {requests / n:4.1f}"
    )
    return rate


async def main(n: int, concurrency: int) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # measure, don't print
    bao = OpenBaoDouble()
    bao.kubernetes_roles["kubernetes"]["bench"] = {JWT}
    await bao.start()
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text(JWT)
        config = {
            "address": bao.url,
            "auth": {"method": "kubernetes", "role": "bench", "tokenFile": str(token)},
        }
        clients = glue.Clients(glue.registry, {"openbao": config})
        loop = asyncio.get_running_loop()

        def ctx(key: str) -> glue.Context:
            return glue.Context(
                route="bench",
                handler="openbao",
                idempotency_key=key,
                attempt=1,
                dry_run=False,
                log=structlog.get_logger(),
                clients=clients,
                deadline=loop.time() + 30,
            )

        def event(i: int) -> Any:
            from cloudevents.core.v1.event import CloudEvent

            return CloudEvent({"id": f"e{i}", "source": "/bench", "type": "rotate"}, None)

        for i in range(n):
            bao.kv_put("secret", f"app/{i}", {"username": "u", "password": "initial-value"})
            bao.transit["transit"][f"k{i}"] = TransitKey({1: 1})

        async def kv(i: int) -> None:
            await openbao.kv_rotate(
                event=event(i), params=openbao.KvParams(path=f"app/{i}"), ctx=ctx(f"kv {i}")
            )

        async def transit(i: int) -> None:
            await openbao.transit_rotate(
                event=event(i), params=openbao.TransitParams(key=f"k{i}"), ctx=ctx(f"t {i}")
            )

        rates = {}
        async with clients.opened():
            await kv(0)  # log in, warm the pool
            bao.kv_put("secret", "app/0", {"username": "u", "password": "initial-value"})
            for name, call in (("kv", kv), ("transit", transit)):
                seen = len(bao.seen)
                elapsed, latencies = await run_all(n, concurrency, call)
                rates[name] = line(f"{name} rotate", n, elapsed, latencies, len(bao.seen) - seen)
                seen = len(bao.seen)
                elapsed, latencies = await run_all(n, concurrency, call)
                line(f"{name} replay", n, elapsed, latencies, len(bao.seen) - seen)
        assert all(bao.kv["secret"][f"app/{i}"].current_version in (2, 3) for i in range(n))
        assert all(bao.transit["transit"][f"k{i}"].latest_version == 2 for i in range(n))
    await bao.stop()
    print(f"kv_rps={rates['kv']:.0f} transit_rps={rates['transit']:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency))
