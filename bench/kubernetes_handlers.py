"""Kubernetes handler benchmark: calls per second and latency of each handler against the API double
(tests/handlers/kubernetes/apiserver.py, kmock over loopback HTTP), for a first application and for a
replay of the same event (which must send no write).

    python bench/kubernetes_handlers.py [--calls 300] [--concurrency 16]

One line per handler: new=<calls/s> p50/p99 ms, replay=<calls/s> p50/p99 ms, and the write requests a
replay sends (restart and kubeai send none; externaldns sends its server-side apply, which changes
nothing; argo its create, answered 409). kmock's in-memory store scans every object on each request, so
the rates are dominated by the double: upper bounds of the handlers' overhead, not cluster numbers.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kmock
import structlog
import yaml
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import argo, externaldns, kubeai, kubernetes
from tests.handlers.kubernetes.apiserver import ApiServer

Call = Callable[[int, glue.Context], Awaitable[Any]]


def event(i: int) -> CloudEvent:
    return CloudEvent({"id": f"e{i}", "source": "/bench", "type": "bench"})


async def measure(
    run: Call, calls: int, concurrency: int, ctx_of: Callable[[int], glue.Context]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await run(i, ctx_of(i))
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return calls / (time.perf_counter() - started), latencies


def summary(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50={cuts[49]:.1f}ms p99={cuts[98]:.1f}ms"


async def main(calls: int, concurrency: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        async with ApiServer() as api, kmock.Server(api):
            api.define("apps/v1/deployments", "Deployment", builtin=True)
            api.define("externaldns.k8s.io/v1alpha1/dnsendpoints", "DNSEndpoint")
            api.define("kubeai.org/v1/models", "Model")
            api.define("argoproj.io/v1alpha1/workflows", "Workflow")
            config = Path(tmp) / "kubeconfig"
            config.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "current-context": "b",
                        "clusters": [{"name": "b", "cluster": {"server": str(api.url).rstrip("/")}}],
                        "users": [{"name": "b", "user": {"token": "t"}}],
                        "contexts": [{"name": "b", "context": {"cluster": "b", "user": "b"}}],
                    }
                )
            )
            for i in range(calls):
                api.seed(
                    "apps/v1/deployments",
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": f"d{i}", "namespace": "b"},
                        "spec": {
                            "selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}}},
                        },
                    },
                )
                api.seed(
                    "kubeai.org/v1/models",
                    {
                        "apiVersion": "kubeai.org/v1",
                        "kind": "Model",
                        "metadata": {"name": f"m{i}", "namespace": "b"},
                        "spec": {"url": "hf://a/b", "engine": "VLLM"},
                    },
                )
            clients = glue.Clients(glue.registry, {"kubernetes": {"kubeconfig": str(config)}})
            async with clients.opened():

                def ctx_of(i: int) -> glue.Context:
                    return glue.Context(
                        route="bench",
                        handler="bench",
                        idempotency_key=f"k{i}",
                        attempt=1,
                        dry_run=False,
                        log=structlog.get_logger(),
                        clients=clients,
                    )

                runs: dict[str, Call] = {
                    "kubernetes.restart": lambda i, ctx: kubernetes.restart(
                        event=event(i), params=kubernetes.RestartParams(namespace="b", name=f"d{i}"), ctx=ctx
                    ),
                    "externaldns.endpoint": lambda i, ctx: externaldns.endpoint(
                        event=event(i),
                        ctx=ctx,
                        params=externaldns.EndpointParams.model_validate(
                            {
                                "namespace": "b",
                                "name": f"e{i}",
                                "endpoints": [{"dnsName": f"h{i}.example.com", "targets": ["10.0.0.1"]}],
                            }
                        ),
                    ),
                    "kubeai.reload": lambda i, ctx: kubeai.reload(
                        event=event(i), params=kubeai.ReloadParams(namespace="b", name=f"m{i}"), ctx=ctx
                    ),
                    "argo.submit": lambda i, ctx: argo.submit(
                        event=event(i), params=argo.SubmitParams(namespace="b", template="t"), ctx=ctx
                    ),
                }
                await kubernetes.read(await clients.get("kubernetes"), argo.WORKFLOW, "b", "warm-up")
                for name, run in runs.items():
                    new_rate, new_ms = await measure(run, calls, concurrency, ctx_of)
                    writes = len(api.writes)
                    replay_rate, replay_ms = await measure(run, calls, concurrency, ctx_of)
                    new = f"new={new_rate:5.0f}/s {summary(new_ms)}"
                    again = f"replay={replay_rate:5.0f}/s {summary(replay_ms)}"
                    sent = (len(api.writes) - writes) / calls
                    print(f"{name:22} {new}  {again}  write-requests/replay={sent:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
