"""Concurrency groups through the executor over both journals: ``queue`` keeps event order (and
``orderingKey`` is its alias), ``supersede`` ends the waiting older invocations of a group, ``cancel``
also cancels the running one (its handler's cancel step runs), across replicas through the journal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import glue
from glue import contract, journal, settings
from tests.support import cloudevent

from .conftest import Append, Harness, delivery_of, metric, wait_for


class Tag(glue.Params):
    tag: str


class Release:
    """A test handler standing for ``argo.submit``: it records the tags it runs and those it cancels,
    and an attempt on a tag in ``hold`` waits until the test lets it go."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[tuple[str, str]] = []  # (tag, idempotency key)
        self.hold: dict[str, asyncio.Event] = {}

    def register(self, registry: contract.Registry, *, with_cancel: bool = True) -> None:
        async def cancel(*, params: Tag, ctx: glue.Context, **_: Any) -> None:
            self.cancelled.append((params.tag, ctx.idempotency_key))

        @glue.handler("release", params=Tag, registry=registry, cancel=cancel if with_cancel else None)
        async def release(*, params: Tag, **_: Any) -> None:
            self.ran.append(params.tag)
            gate = self.hold.get(params.tag)
            if gate is not None:
                await gate.wait()
            self.finished.append(params.tag)


def route(on_conflict: str) -> dict[str, Any]:
    return {
        "name": "release",
        "handler": "release",
        "params": {"tag": "{{ data.tag }}"},
        "concurrencyGroup": {"key": "{{ data.repo }}", "onConflict": on_conflict},
    }


def push(tag: str, repo: str = "shop") -> Any:
    return cloudevent(f"push-{tag}", type="tag.pushed", data={"repo": repo, "tag": tag})


async def states(store: journal.Journal) -> dict[str, tuple[str, int | None]]:
    """Each invocation's state (and what took its place), by the tag it was for."""
    return {i.params["tag"]: (i.state, i.taken_by) for i in await store.invocations(limit=1000)}


def when(store: journal.Journal, check: Callable[[dict[str, Any]], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check({tag: state for tag, (state, _) in (await states(store)).items()})

    return predicate


async def test_supersede_runs_the_first_and_the_last_and_ends_the_waiting_ones(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    release = Release()
    release.register(registry)
    release.hold["v1"] = asyncio.Event()
    before = metric("glue_invocations_superseded_total", route="release")
    await harness.start(pollSeconds=0.02, routes=[route("supersede")])
    await append(push("v1"))
    await wait_for(lambda: _true(release.ran == ["v1"]), seconds=10, step=0.02)
    later = [push("v2"), push("v3"), push("v4"), push("v5"), push("x1", repo="other")]
    await store.append(delivery_of(later[0]), later)
    await wait_for(when(store, lambda s: len(s) == 6 and s["v4"] == "superseded"), seconds=10, step=0.02)
    release.hold["v1"].set()
    await wait_for(when(store, lambda s: s["v5"] == "done"), seconds=10, step=0.02)

    found = await states(store)
    last = next(i.id for i in await store.invocations() if i.params["tag"] == "v5")
    assert found == {
        "v1": ("done", None),
        "v2": ("superseded", last),
        "v3": ("superseded", last),
        "v4": ("superseded", last),
        "v5": ("done", None),
        "x1": ("done", None),  # another group: not superseded
    }
    assert sorted(release.ran) == ["v1", "v5", "x1"] and release.ran.index("v1") < release.ran.index("v5")
    assert release.cancelled == [], "supersede never cancels"
    assert metric("glue_invocations_superseded_total", route="release") == before + 3


async def test_queue_runs_every_one_in_order_and_ordering_key_is_its_alias(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    release = Release()
    release.register(registry)
    alias = {**route("queue"), "concurrencyGroup": None, "orderingKey": "{{ data.repo }}"}
    del alias["concurrencyGroup"]
    await harness.start(pollSeconds=0.02, routes=[alias])
    await append(*(push(f"v{n}") for n in range(1, 6)))
    await wait_for(when(store, lambda s: len(s) == 5 and set(s.values()) == {"done"}), seconds=10, step=0.02)
    assert release.ran == ["v1", "v2", "v3", "v4", "v5"]


async def test_cancel_stops_the_running_one_with_its_cancel_step(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    release = Release()
    release.register(registry)
    release.hold["v1"] = asyncio.Event()  # never set: only cancellation ends it
    await harness.start(pollSeconds=0.02, routes=[route("cancel")])
    await append(push("v1"))
    await wait_for(lambda: _true(release.ran == ["v1"]), seconds=10, step=0.02)
    await store.append(delivery_of(push("v2")), [push("v2"), push("v3")])  # routed together
    await wait_for(when(store, lambda s: s.get("v3") == "done"), seconds=10, step=0.02)

    found = await states(store)
    last = next(i.id for i in await store.invocations() if i.params["tag"] == "v3")
    assert found["v1"][0] == "cancelled" and found["v2"] == ("superseded", last)
    assert release.finished == ["v3"], "v1 was cancelled, v2 never ran"
    assert [tag for tag, _ in release.cancelled] == ["v1"]
    (v1,) = [i for i in await store.invocations() if i.params["tag"] == "v1"]
    assert release.cancelled[0][1] == v1.idempotency_key  # the cancel step names what v1 started
    assert v1.last_error is not None and v1.last_error.startswith("cancelled by invocation")


async def test_cancel_runs_the_cancel_step_of_the_one_that_finished_last(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    release = Release()
    release.register(registry)
    await harness.start(pollSeconds=0.02, routes=[route("cancel")])
    await append(push("v1"))
    await wait_for(when(store, lambda s: s.get("v1") == "done"), seconds=10, step=0.02)
    await append(push("v2"))
    await wait_for(when(store, lambda s: s.get("v2") == "done"), seconds=10, step=0.02)

    found = await states(store)
    assert found["v1"][0] == "cancelled" and found["v2"] == ("done", None)
    assert [tag for tag, _ in release.cancelled] == ["v1"], "what v1 started (a Workflow) is stopped"
    assert release.ran == ["v1", "v2"]


async def test_cancel_without_a_cancel_step_leaves_finished_ones_alone(
    harness: Harness, registry: contract.Registry, append: Append, store: journal.Journal
) -> None:
    release = Release()
    release.register(registry, with_cancel=False)
    await harness.start(pollSeconds=0.02, routes=[route("cancel")])
    await append(push("v1"))
    await wait_for(when(store, lambda s: s.get("v1") == "done"), seconds=10, step=0.02)
    await append(push("v2"))
    await wait_for(when(store, lambda s: s.get("v2") == "done"), seconds=10, step=0.02)
    assert {tag: state for tag, (state, _) in (await states(store)).items()} == {"v1": "done", "v2": "done"}


async def test_a_replica_learns_through_the_journal_that_its_running_one_is_cancelled(
    harness: Harness,
    registry: contract.Registry,
    append: Append,
    store: journal.Journal,
    reopen: Callable[[], Awaitable[journal.Journal]],
    backend: str,
) -> None:
    release = Release()
    release.register(registry)
    release.hold["v1"] = asyncio.Event()
    runner = await harness.start(pollSeconds=0.02, owner="replica-a", routes=[route("cancel")])
    await append(push("v1"))
    await wait_for(lambda: _true(release.ran == ["v1"]), seconds=10, step=0.02)
    # replica a only dispatches from now on: replica b, on its own connection, routes v2
    runner._loops[0].cancel()
    other = await reopen() if backend == "postgres" else store
    await harness.start(store=other, pollSeconds=0.02, owner="replica-b", routes=[route("cancel")])
    await append(push("v2"))
    await wait_for(when(store, lambda s: s.get("v2") == "done"), seconds=15, step=0.02)
    v1 = next(i for i in await store.invocations() if i.params["tag"] == "v1")
    assert v1.state == "cancelled" and [tag for tag, _ in release.cancelled] == ["v1"]
    assert release.finished == ["v2"]


def test_ordering_key_and_a_group_together_are_refused(registry: contract.Registry) -> None:
    Release().register(registry)
    with pytest.raises(settings.ConfigError) as caught:
        Harness(None, registry).router([{**route("queue"), "orderingKey": "{{ data.repo }}"}])  # type: ignore[arg-type]
    assert "orderingKey is an alias of concurrencyGroup" in str(caught.value)


async def _true(value: bool) -> bool:
    return value
