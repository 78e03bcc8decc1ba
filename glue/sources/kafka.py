"""Kafka source: one consumer group member journaling every record before committing its offset.

At least once, never lost:

- Records are fetched in batches; every record of a batch goes through :class:`glue.intake.Intake`
  concurrently (the journal commits them in a few group transactions), then the offsets of the batch
  are committed. A crash before the commit redelivers the batch; the journal recognises each event by
  its identity, so a redelivered record adds nothing.
- A record that cannot be decoded is journaled as rejected with its raw bytes and the reason
  (``glue dlq rejected`` lists it) and its offset moves on: a poison record never blocks its partition.
- When the journal cannot take writes (or the backlog bound is reached) the partition is rewound to
  the first record not journaled and read again after ``retrySeconds``: nothing is committed past it.
- On a rebalance, the revoke callback waits for the batch in hand to be journaled and committed
  before the partitions go to another member; several daemons in one group share the partitions.

:class:`KafkaOutput` publishes settled invocations (dead letters, optionally all) as CloudEvents.
aiokafka is used here and nowhere else in the package.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aiokafka
import structlog
from aiokafka import errors as kafka_errors
from aiokafka import helpers as kafka_helpers
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from glue import events, formats, intake, journal, metrics
from glue import settings as settings_mod
from glue.formats import argo_eventbus

__all__ = [
    "DECODER",
    "OUTCOME_TYPE",
    "KafkaOutput",
    "KafkaSource",
    "KafkaUnavailable",
    "client_options",
    "delivery_of",
    "outcome_event",
]

log = structlog.get_logger(__name__)

#: Topic format in the settings -> decoder name in glue.formats (kept with each delivery for replay).
#: An ``argo-eventbus`` topic's decoder is chosen per record by its ``eventSources`` (see _accept).
DECODER = {"cloudevents": "cloudevents", "minio": "minio", "argo": "argo", "argo-eventbus": "argo-eventbus"}

_LAG_INTERVAL = 1.0  # seconds between consumer lag updates
_POLL_MS = 200  # how long one fetch waits for records
_WATCH_SECONDS = 0.5  # how often the broker connection is looked at (glue_source_up)
_CHUNK = 64  # records decoded between two yields to the event loop
_DRAIN_SECONDS = 30.0  # how long stop() waits for the batch in hand
_JSON = JSONFormat()


class KafkaUnavailable(ConnectionError):
    """The brokers cannot be reached or refuse the consumer; the message says what to check."""


def client_options(config: settings_mod.Kafka) -> dict[str, Any]:
    """aiokafka connection keyword arguments: bootstrap servers, TLS and SASL (secrets resolved)."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
    }
    if config.tls is not None:
        tls = config.tls
        password = tls.key_password.resolve()[0].decode() if tls.key_password is not None else None
        context = kafka_helpers.create_ssl_context(
            cafile=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file, password=password
        )
        context.check_hostname = tls.check_hostname  # the certificate is verified either way
        options["ssl_context"] = context
    if config.sasl is not None:
        options["security_protocol"] = "SASL_SSL" if config.tls is not None else "SASL_PLAINTEXT"
        options["sasl_mechanism"] = config.sasl.mechanism
        options["sasl_plain_username"] = config.sasl.username
        options["sasl_plain_password"] = config.sasl.password.resolve()[0].decode()
    elif config.tls is not None:
        options["security_protocol"] = "SSL"
    return options


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def header_problem(record: Any) -> str | None:
    """Why a record's headers break the CloudEvents Kafka binding, or None: a ``ce_`` or content-type
    header whose value is not UTF-8 (3.2.3: "header values MUST be encoded as UTF-8"), or a ``ce_``
    header that appears twice (spec 1.0.3: each context attribute at most once). Other headers are the
    producer's own business: they are kept, with replacement characters where they are not UTF-8."""
    seen: set[str] = set()
    for name, value in record.headers or ():
        lower = name.lower()
        if lower.startswith("ce_"):
            if lower in seen:
                return f"header {lower!r} appears more than once: an attribute is sent at most once"
            seen.add(lower)
        elif lower != "content-type":
            continue
        if value is not None and not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return f"header {lower!r} is not valid UTF-8 (Kafka binding 3.2.3)"
    return None


def delivery_of(record: Any, decoder: str) -> events.Delivery:
    """The raw delivery of one record: lower-case header names, UTF-8 values, credentials removed."""
    headers: Iterable[tuple[str, bytes | None]] = record.headers or ()
    decoded = {name.lower(): _text(value) for name, value in headers}
    return events.Delivery(
        transport="kafka",
        endpoint=record.topic,
        format=decoder,
        headers=events.scrub_headers(decoded),
        body=record.value if record.value is not None else b"",
        key=record.key,
    )


class _Retry(Exception):
    """The record was not journaled (journal unavailable or backlog full); read it again later."""


def _names(partitions: Iterable[aiokafka.TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)


class _Rebalance(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Sequence[aiokafka.TopicPartition]) -> None:
        # The batch in hand is journaled and its offsets committed before the partitions move on.
        async with self.source.batch_lock:
            # From here until the new assignment, records already fetched from these partitions are
            # left alone: their next owner reads them from the offsets committed now.
            self.source.revoked = set(revoked)
        for tp in revoked:
            with contextlib.suppress(KeyError):
                metrics.KAFKA_LAG.remove(tp.topic, str(tp.partition))
        if revoked:
            log.info("kafka partitions revoked", partitions=_names(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[aiokafka.TopicPartition]) -> None:
        self.source.revoked = set()
        log.info("kafka partitions assigned", partitions=_names(assigned))


async def _start(client: Any, what: str, config: settings_mod.Kafka) -> None:
    """Start an aiokafka consumer or producer; a broker that cannot be reached is KafkaUnavailable."""
    try:
        await client.start()
    except kafka_errors.KafkaError as exc:
        with contextlib.suppress(Exception):
            await client.stop()
        servers = ", ".join(config.bootstrap_servers)
        raise KafkaUnavailable(f"cannot start the Kafka {what} ({servers}): {exc}") from None


def _connected(consumer: aiokafka.AIOKafkaConsumer) -> bool:
    """Whether the consumer holds a live connection to a broker.

    aiokafka reconnects by itself and its fetches just come back empty while no broker answers; it
    exposes no connection state, so its client's connection table is read (a connection that closes
    is removed from it, one that cannot be made is never added)."""
    conns = getattr(getattr(consumer, "_client", None), "_conns", None)
    if not isinstance(conns, dict):
        return True  # another aiokafka: assume up rather than report a false outage
    return any(conn.connected() for conn in conns.values())


class KafkaSource:
    """The Kafka component of the daemon (``name``, ``start()``, ``stop()``)."""

    name = "kafka"

    def __init__(self, config: settings_mod.Kafka, intake_: intake.Intake, journal_: journal.Journal) -> None:
        self.config = config
        self.intake = intake_
        self.journal = journal_
        self.topics = {topic.name: topic for topic in config.topics}
        self.options = {topic.name: formats.Options.of(topic) for topic in config.topics}
        # Argo's Kafka EventBus: records keyed <eventSource>.<eventName>, taken by the topic's eventSources.
        self.selectors = {
            topic.name: argo_eventbus.Selector((e.name, e.unwrap) for e in topic.event_sources or [])
            for topic in config.topics
            if topic.format == "argo-eventbus" and topic.event_sources is not None
        }
        self.batch_lock = asyncio.Lock()
        self.revoked: set[aiokafka.TopicPartition] = set()
        self.consumer: aiokafka.AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._lag_at = 0.0
        self._up = False
        self._watcher: asyncio.Task[None] | None = None
        metrics.SOURCE_UP.labels(self.name).set(0)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        consumer = aiokafka.AIOKafkaConsumer(
            **client_options(self.config),
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.config.auto_offset_reset,
            max_poll_records=self.config.max_batch,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.config.session_timeout_ms // 5),
        )
        consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        await _start(consumer, "consumer", self.config)
        self.consumer = consumer
        self._set_up(True)
        self._task = asyncio.create_task(self._run(), name="kafka-consume")
        self._watcher = asyncio.create_task(self._watch(consumer), name="kafka-watch")
        log.info("kafka source started", topics=sorted(self.topics), group=self.config.group_id)

    async def stop(self) -> None:
        """Finish and commit the batch in hand, then leave the group (its partitions move on at once).

        A batch that cannot finish within the drain bound (journal hung) is abandoned uncommitted:
        its records are read again by whoever owns the partitions next."""
        if self._task is not None:
            try:
                async with asyncio.timeout(_DRAIN_SECONDS):
                    await self.batch_lock.acquire()
            except TimeoutError:
                log.warning("kafka batch did not finish in time; its records will be read again")
            else:
                self.batch_lock.release()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a failure is logged already
                await self._task
            self._task = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        self._up = False
        metrics.SOURCE_UP.labels(self.name).set(0)
        log.info("kafka source stopped")

    async def _watch(self, consumer: aiokafka.AIOKafkaConsumer) -> None:
        """Follow the broker connection beside the consume loop, whose fetch waits as long as the
        group has no coordinator (a broker that went away)."""
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            self._set_up(_connected(consumer))

    def _set_up(self, up: bool) -> None:
        """``glue_source_up{source="kafka"}`` and one log line per change of the broker connection."""
        if up == self._up:
            return
        self._up = up
        metrics.SOURCE_UP.labels(self.name).set(1 if up else 0)
        if up:
            if self.consumer is not None and self._task is not None:
                metrics.SOURCE_RECONNECTS.labels(self.name).inc()
                log.info("kafka broker reachable again", servers=list(self.config.bootstrap_servers))
        else:
            log.warning("kafka broker unreachable; reconnecting", servers=list(self.config.bootstrap_servers))

    async def ready(self) -> str | None:
        """Readiness check: None while the consumer runs, else why it stopped."""
        return self._failure

    # -- the consume loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            await self._consume(consumer)
        except kafka_errors.ConsumerStoppedError:
            return
        except Exception as exc:
            # Nothing past the failed batch is committed. Leave the group so that the other members
            # take the partitions over, and report not ready.
            self._failure = f"kafka consumer failed: {type(exc).__name__}: {exc}"
            log.exception("kafka consumer failed; leaving the group")
            self._set_up(False)
            await consumer.stop()

    async def _consume(self, consumer: aiokafka.AIOKafkaConsumer) -> None:
        backoff = self.config.retry_seconds
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
            except kafka_errors.KafkaError as exc:
                log.warning("kafka fetch failed", error=str(exc))
                await asyncio.sleep(backoff)
                continue
            retry = False
            if batch:
                async with self.batch_lock:
                    retry = await self._handle(consumer, batch)
            await self._update_lag(consumer)
            if retry:
                await asyncio.sleep(backoff)

    async def _handle(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        batch: dict[aiokafka.TopicPartition, list[Any]],
    ) -> bool:
        """Journal a batch, commit what is journaled, rewind what is not. True if something must be
        read again."""
        started = time.perf_counter()
        assigned = consumer.assignment()
        batch = {tp: part for tp, part in batch.items() if tp in assigned and tp not in self.revoked}
        records = [record for part in batch.values() for record in part]
        tasks: list[asyncio.Task[str]] = []
        for index, record in enumerate(records):
            tasks.append(asyncio.create_task(self._accept(record)))
            if index % _CHUNK == _CHUNK - 1:
                # Let the journal start committing the records decoded so far while the rest decode.
                await asyncio.sleep(0)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        by_offset = {(r.topic, r.partition, r.offset): o for r, o in zip(records, outcomes, strict=True)}
        commit: dict[aiokafka.TopicPartition, int] = {}
        rewound: dict[str, int] = {}
        reason = ""
        for tp, part in batch.items():
            for record in part:
                outcome = by_offset[(tp.topic, tp.partition, record.offset)]
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, _Retry):
                        log.error(
                            "kafka record failed",
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=record.offset,
                            exc_info=outcome,
                        )
                    reason = reason or str(outcome)
                    # Read again from the first record not journaled (if revoked meanwhile, the next
                    # owner reads it from the last commit).
                    with contextlib.suppress(kafka_errors.IllegalStateError):
                        consumer.seek(tp, record.offset)
                    rewound[f"{tp.topic}:{tp.partition}"] = record.offset
                    break
                commit[tp] = record.offset + 1
        if rewound:
            log.warning("kafka records not journaled, reading them again", rewound=rewound, reason=reason)
        counts = collections.Counter(
            (record.topic, "retried" if isinstance(outcome, BaseException) else outcome)
            for record, outcome in zip(records, outcomes, strict=True)
        )
        for (topic, label), count in counts.items():
            metrics.KAFKA_RECORDS.labels(topic, label).inc(count)
        if commit:
            await self._commit(consumer, commit)
        metrics.KAFKA_BATCH_SECONDS.observe(time.perf_counter() - started)
        return bool(rewound)

    async def _accept(self, record: Any) -> str:
        """Journal one record; returns journaled / duplicate / rejected / ignored, raises _Retry."""
        topic = self.topics[record.topic]
        decoder = DECODER[topic.format]
        if topic.format == "argo-eventbus":
            selector = self.selectors.get(record.topic)
            if selector is not None:
                key = record.key.decode("utf-8", "replace") if record.key is not None else ""
                event_source, _, event_name = key.partition(".")
                selection = selector.select(event_source, event_name)
                if selection is None:
                    return "ignored"  # an EventSource this topic's eventSources do not take
                decoder = selection.decoder
            delivery = delivery_of(record, decoder)
            # Argo's header maps carry the producer's credentials: removed before anything keeps them.
            delivery = dataclasses.replace(delivery, body=argo_eventbus.scrub(delivery.body))
        else:
            delivery = delivery_of(record, decoder)
        problem = header_problem(record)
        if problem is not None:
            return await self._reject(delivery, record, problem)
        try:
            appended = await self.intake.accept(delivery, self.options[record.topic])
        except formats.DecodeError as exc:
            return await self._reject(delivery, record, exc.reason)
        except (journal.JournalUnavailable, intake.Overloaded) as exc:
            raise _Retry(str(exc)) from exc
        except Exception as exc:  # a decoder bug must not block the partition: keep the record, visibly
            log.exception(
                "kafka record decoder failed",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            return await self._reject(delivery, record, f"decoder failed: {type(exc).__name__}")
        return "journaled" if any(item.new for item in appended) else "duplicate"

    async def _reject(self, delivery: events.Delivery, record: Any, reason: str) -> str:
        try:
            delivery_id = await self.journal.reject(delivery, reason)
        except journal.JournalUnavailable as exc:
            raise _Retry() from exc
        log.warning(
            "kafka record rejected",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            delivery_id=delivery_id,
        )
        return "rejected"

    async def _commit(
        self, consumer: aiokafka.AIOKafkaConsumer, offsets: dict[aiokafka.TopicPartition, int]
    ) -> None:
        started = time.perf_counter()
        try:
            await consumer.commit(offsets)
        except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as exc:
            # The partitions moved to another member, which reads them again from the last commit;
            # the journal recognises the events already stored.
            log.info("kafka commit skipped after a rebalance", error=str(exc))
            return
        except kafka_errors.KafkaError as exc:
            # A later batch commits a higher offset; until then a restart reads these again.
            log.warning("kafka commit failed", error=str(exc))
            return
        metrics.KAFKA_COMMIT_SECONDS.observe(time.perf_counter() - started)

    async def _update_lag(self, consumer: aiokafka.AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._lag_at < _LAG_INTERVAL:
            return
        self._lag_at = now
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await consumer.position(tp)
            except kafka_errors.KafkaError:
                continue
            metrics.KAFKA_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))


# -- output: handler outcomes and dead letters as CloudEvents -------------------------------------

OUTCOME_TYPE = "io.runtime-glue.invocation.{state}"
_SEEN_LIMIT = 100_000  # CloudEvent ids remembered to avoid publishing an outcome twice in one process
#: How far each sweep reaches back before the previous one began. A settle is stamped when it is handed
#: to the journal and becomes visible when its commit lands (SQLite settles ride the next intake group;
#: a PostgreSQL transaction commits after its statement), so one stamped just before a sweep began can
#: be committed after that sweep read. Reading again what settled in this window, and skipping the ids
#: already published, publishes each of them.
COMMIT_SLACK_SECONDS = 5.0


def outcome_event(invocation: journal.Invocation, event: journal.StoredEvent | None) -> events.CloudEvent:
    """The CloudEvent of one settled invocation. Its id is stable (key, state, attempt), so a consumer
    recognises one published twice; ``partitionkey`` is the event identity (its outcomes stay in order)."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{invocation.idempotency_key}/{invocation.state}/{invocation.attempt}",
        "source": f"runtime-glue/routes/{invocation.route}",
        "type": OUTCOME_TYPE.format(state=invocation.state),
        "time": datetime.datetime.fromtimestamp(invocation.updated_at, datetime.UTC),
        "datacontenttype": "application/json",
    }
    if event is not None:
        attributes["subject"] = event.identity
        attributes["partitionkey"] = event.identity
    data = {
        "route": invocation.route,
        "handler": invocation.handler,
        "state": invocation.state,
        "attempts": invocation.attempt,
        "error": invocation.last_error,
        "idempotencyKey": invocation.idempotency_key,
        "event": event.summary() if event is not None else {"seq": invocation.event_seq},
    }
    if invocation.plan is not None:
        data["plan"] = invocation.plan  # a planned (dry-run) invocation: what it would have done
    return events.CloudEvent(attributes, data)


class KafkaOutput:
    """Publishes settled invocations (dead letters, and optionally every finished one) to a topic.

    It tails the journal rather than hooking the executor, so it publishes what is durably settled,
    whichever replica ran the handler. Each sweep reads invocations updated since the previous sweep
    began; the broker acknowledges every record (acks=all) before the sweep counts as done.
    """

    name = "kafka-output"

    def __init__(self, config: settings_mod.Kafka, journal_: journal.Journal) -> None:
        assert config.output is not None
        self.config = config
        self.output = config.output
        self.journal = journal_
        self.states: list[journal.InvocationState] = []
        if self.output.dead_letters:
            self.states.append("dead")
        if self.output.outcomes:
            self.states.extend(("done", "planned"))
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._since = 0.0

    async def start(self) -> None:
        producer = aiokafka.AIOKafkaProducer(**client_options(self.config), acks="all")
        await _start(producer, "producer", self.config)
        self.producer = producer
        self._since = time.time() - self.output.lookback_seconds
        self._task = asyncio.create_task(self._run(), name="kafka-output")
        log.info("kafka output started", topic=self.output.topic, states=self.states)

    async def stop(self) -> None:
        """Publish what settled until now (one last sweep), then close the producer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
            with contextlib.suppress(Exception):
                await self.sweep()
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except (kafka_errors.KafkaError, journal.JournalUnavailable) as exc:
                log.warning("kafka output sweep failed; will retry", error=str(exc))
            await asyncio.sleep(self.output.poll_seconds)

    async def sweep(self) -> int:
        """Publish invocations settled since the last sweep; returns how many were sent."""
        producer = self.producer
        assert producer is not None
        started = time.time()
        pending: list[tuple[str, asyncio.Future[Any]]] = []
        for state in self.states:
            after = 0
            while page := await self.journal.invocations(
                state=state, since=self._since, after=after, limit=500
            ):
                after = page[-1].id
                for invocation in page:
                    ce_id = f"{invocation.idempotency_key}/{invocation.state}/{invocation.attempt}"
                    if ce_id in self._seen:
                        continue
                    event = await self.journal.get(invocation.event_seq)
                    message = ce_kafka.to_binary(outcome_event(invocation, event), _JSON)
                    headers = [(name, value) for name, value in message.headers.items()]
                    key = message.key.encode() if isinstance(message.key, str) else message.key
                    future = await producer.send(self.output.topic, message.value, key=key, headers=headers)
                    pending.append((ce_id, future))
        for ce_id, future in pending:
            await future  # raises KafkaError: the sweep is repeated from the same point
            metrics.KAFKA_PUBLISHED.labels(ce_id.rsplit("/", 2)[1]).inc()
            self._seen[ce_id] = None
            if len(self._seen) > _SEEN_LIMIT:
                self._seen.popitem(last=False)
        # An invocation settling while this sweep ran, or stamped before and committed after it read,
        # has updated_at >= started - COMMIT_SLACK_SECONDS: the next sweep sees it.
        self._since = started - COMMIT_SLACK_SECONDS
        return len(pending)
