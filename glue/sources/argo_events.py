"""Argo Events' JetStream EventBus as a way in: every EventSource's events, at least once, no Sensor.

Argo's EventSources publish each event as a CloudEvent to the stream ``default`` on subject
``default.<eventSource>.<eventName>`` (see :mod:`glue.formats.argo_eventbus`). This source reads that
stream with a durable pull consumer of its own (``durable``; never a Sensor's, so it takes nothing from
them), with explicit acknowledgements:

- the messages that arrive together (what one read from the connection holds) are decoded and
  journaled as one batch: one append, one commit, one wait (:meth:`glue.intake.Intake.accept_many`);
- a message is acknowledged only once its events are committed to the journal; while the commit waits
  longer than a quarter of ``ackWait``, the server is told ``InProgress`` so it does not send it again;
- at most ``maxInFlight`` messages are fetched and not yet acknowledged;
- a message that is not a CloudEvent, or whose data cannot be read, is journaled as rejected (``glue
  dlq rejected``) and terminated: the server never sends it again;
- when the journal cannot take a message it is not acknowledged (it comes back after ``ackWait``) and
  fetching pauses with backoff;
- the connection is opened again with capped exponential backoff (:class:`glue.retry.Policy`); while it
  is down ``glue_source_up{source="argo-events"}`` is 0 and ``/readyz`` says why.

Credentials in the header maps Argo forwards are removed from each message before intake sees it
(:func:`glue.formats.argo_eventbus.scrub`).

:class:`JetStreamSource` reads any other stream the same way (``sources.jetstream``), each subject in a
format of its own. nats-py is used here and nowhere else in the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import orjson
import structlog
from nats import errors as nats_errors
from nats.js import api as js_api
from nats.js import errors as js_errors

from glue import events, formats, intake, journal, metrics, retry
from glue import settings as settings_mod
from glue.formats import argo_eventbus

__all__ = [
    "JETSTREAM_NAME",
    "NAME",
    "TRANSPORT",
    "ArgoEventsSource",
    "JetStreamSource",
    "connect_options",
]

log = structlog.get_logger(__name__)

#: The source's name in metrics, readiness and the deliveries it journals (their endpoint).
NAME = "argo-events"
#: The generic JetStream source's name in metrics and readiness.
JETSTREAM_NAME = "jetstream"
#: The transport of the deliveries it journals.
TRANSPORT = "jetstream"

#: :meth:`glue.intake.Intake.accept_many`: a batch of deliveries journaled, each one's outcome.
Accept = Callable[
    [Sequence[tuple[events.Delivery, formats.Options]]],
    Awaitable[list[list[journal.Appended] | Exception]],
]
Reject = Callable[[events.Delivery, str], Awaitable[int]]

#: Messages asked for in one pull request.
_PULL_MAX = 256
#: How long a pull request waits on the server for messages; it then ends with a 408 status.
_PULL_EXPIRES = 5.0
#: Heard nothing this long after the last pull request should have ended: its end was lost (a server
#: restart, a consumer moved), so its messages are no longer counted as coming.
_PULL_LOST_AFTER = _PULL_EXPIRES + 2.0
#: After a 409 status the server refused a pull request (too many waiting, leadership change, ...):
#: ask again after this long rather than at once.
_REFUSED_PAUSE = 1.0


class _Down(Exception):
    """The connection or the consumer cannot be used; the message says why (no credentials)."""


def connect_options(config: settings_mod.ArgoEvents | settings_mod.JetStream) -> dict[str, Any]:
    """nats-py connection keyword arguments: servers, TLS and credentials (read from the mounted file).

    nats-py's own reconnection is off: the source reconnects on its schedule and shows it."""
    options: dict[str, Any] = {
        "servers": list(config.url),
        "name": f"runtime-glue:{config.durable}",
        "connect_timeout": config.connect_timeout,
        "allow_reconnect": False,
        # Each server tried at most twice, without waiting, before nats-py gives up (NoServersError).
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0,
    }
    if config.tls is not None:
        tls = config.tls
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file is not None else None)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        context.check_hostname = tls.check_hostname  # the certificate is verified either way
        options["tls"] = context
    if config.auth is not None:
        options.update(config.auth.credentials())
    return options


class _Tracked:
    """A batch of messages being journaled: when it was fetched, for the InProgress sweep."""

    __slots__ = ("msgs", "since")

    def __init__(self, msgs: list[Any]) -> None:
        self.msgs = msgs
        self.since = time.monotonic()


class _PullConsumer:
    """A component (``name``, ``start()``, ``stop()``) that follows a stream with a durable pull
    consumer; subclasses say which subjects it takes and what delivery each message is."""

    name: str
    _title: str  # what log lines and /readyz call it
    _missing_stream: str  # added to "stream ... not found"

    def __init__(
        self,
        config: settings_mod.ArgoEvents | settings_mod.JetStream,
        accept: Accept,
        *,
        reject: Reject,
        rng: random.Random | None = None,
        drain_seconds: float = 5.0,
    ) -> None:
        self.config = config
        self._accept = accept
        self._reject = reject
        self._rng = rng if rng is not None else random.Random()
        self._backoff = retry.Policy.equal_jitter(config.reconnect_initial, config.reconnect_max)
        self._drain_seconds = drain_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # nats-py swallows a cancellation that lands in its close: check this too
        self._nc: Any = None
        self._reason = "not connected yet"
        self._connected = False
        self._low_water = max(1, min(_PULL_MAX, config.max_in_flight // 4))
        self._wake = asyncio.Event()  # room for a pull request, the connection closed, the consumer lost
        self._in_flight: dict[asyncio.Task[None], _Tracked] = {}  # batches being journaled
        self._holding = 0  # messages in those batches
        self._arrivals: list[Any] = []  # messages arrived in this turn of the loop: the next batch
        self._requested = 0  # messages asked for by pull requests and neither delivered nor expired
        self._heard = 0.0  # when the last message or status reached the inbox
        self._lost: str | None = None  # why the consumer cannot be used any more (a 409 said so)
        self._fetched = 0
        self._pause_until = 0.0  # the journal could not take a message: fetch nothing until then
        self._journal_failures = 0
        self._counts = metrics.Children(metrics.EVENTBUS_MESSAGES, self.name)
        self._signals: set[asyncio.Task[None]] = set()  # InProgress acknowledgements being sent
        metrics.SOURCE_UP.labels(self.name).set(0)

    # -- what subclasses say

    def subjects(self) -> list[str]:
        """The consumer's filter subjects."""
        raise NotImplementedError

    def delivery(self, msg: Any) -> tuple[events.Delivery, formats.Options] | None:
        """The delivery a message is and its format's options; None for a message not taken."""
        raise NotImplementedError

    # -- lifecycle

    async def start(self) -> None:
        """Start following the bus and return; the connection is made in the background."""
        self._task = asyncio.create_task(self._follow(), name=self.name)
        log.info(
            f"{self._title} source started",
            url=list(self.config.url),
            durable=self.config.durable,
            subjects=self.subjects(),
        )

    async def stop(self) -> None:
        """Stop fetching; messages in hand get ``drain_seconds`` to be journaled and acknowledged, the
        rest are left unacknowledged (the server sends them again after ``ackWait``)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self._drain_seconds):
                    await self._task
            self._task = None
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self._drain_seconds)
            for task in late:
                task.cancel()
            if late:
                count = sum(len(self._in_flight[task].msgs) for task in late if task in self._in_flight)
                await asyncio.wait(late)
                log.warning("eventbus messages left unacknowledged at stop", count=count)
        await self._close()
        self._down("stopped")
        log.info(f"{self._title} source stopped")

    async def readiness(self) -> str | None:
        """For /readyz: None while connected with the consumer bound, else why not."""
        return None if self._connected else f"{self._title} down: {self._reason}"

    # -- connection

    def _up(self) -> None:
        self._connected, self._reason = True, ""
        metrics.SOURCE_UP.labels(self.name).set(1)

    def _down(self, reason: str) -> None:
        self._connected, self._reason = False, reason
        metrics.SOURCE_UP.labels(self.name).set(0)

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _follow(self) -> None:
        attempt = 0
        while not self._stopping:
            fetched = 0
            try:
                fetched = await self._connect_and_consume()
                reason = "the connection closed"
            except _Down as exc:
                reason = str(exc)
            except (nats_errors.Error, js_errors.Error, OSError, TimeoutError) as exc:
                reason = _describe(exc)
            if fetched:
                attempt = 0  # it worked: the next failure starts the schedule over
            was_connected = self._connected
            self._down(reason)
            await self._close()
            if self._stopping:
                return
            if was_connected:
                metrics.SOURCE_RECONNECTS.labels(self.name).inc()
            attempt += 1
            delay = self._backoff.delay(attempt, self._rng)
            log.warning(f"{self._title} down", reason=reason, retry_in=round(delay, 3))
            await asyncio.sleep(delay)

    async def _error(self, exc: Exception) -> None:
        log.warning(f"{self._title} connection error", error=_describe(exc))

    async def _closed(self) -> None:
        self._wake.set()

    async def _connect_and_consume(self) -> int:
        """One connection: bind the consumer and pull until the connection ends. Returns how many
        messages it received.

        Pull requests go out while there is room (``maxInFlight`` less the messages in hand and those
        asked for), each for up to ``_PULL_MAX`` messages and ending after ``_PULL_EXPIRES`` with a
        408 status that says how many it did not deliver; the messages arrive on one inbox, as
        nats.go's ``Consume`` does. nats-py's ``fetch`` would wait for each message with a task and a
        timer of its own, which cost more than the rest of the path to the journal."""
        config = self.config
        try:
            async with asyncio.timeout(config.connect_timeout * 2 * len(config.url) + 1):
                nc = await nats.connect(
                    **connect_options(config), error_cb=self._error, closed_cb=self._closed
                )
        except ValueError as exc:  # the credentials file changed since the settings were checked
            raise _Down(f"auth: {exc}") from None
        except (nats_errors.NoServersError, OSError, TimeoutError) as exc:
            raise _Down(f"cannot connect to {', '.join(config.url)}: {_describe(exc)}") from None
        self._nc = nc
        await self._bind(nc.jetstream())
        self._requested, self._lost, self._heard, self._fetched = 0, None, time.monotonic(), 0
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=self._arrived)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{config.stream}.{config.durable}"
        self._up()
        log.info(f"{self._title} connected", durable=config.durable, stream=config.stream)
        ticker = asyncio.create_task(self._keep_in_progress(), name=f"{self.name}-in-progress")
        try:
            while True:
                batch = await self._room(nc)
                if not batch:
                    break
                self._requested += batch
                request = {"batch": batch, "expires": int(_PULL_EXPIRES * 1e9)}
                await nc.publish(next_subject, orjson.dumps(request), reply=inbox)
        finally:
            ticker.cancel()
        return self._fetched

    async def _bind(self, js: Any) -> None:
        """Create the durable consumer, or update the one there is."""
        config = self.config
        subjects = self.subjects()
        consumer = js_api.ConsumerConfig(
            name=config.durable,
            durable_name=config.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.NEW if config.deliver == "new" else js_api.DeliverPolicy.ALL,
            ack_wait=config.ack_wait,
            max_ack_pending=config.max_in_flight,
        )
        if len(subjects) == 1:
            consumer.filter_subject = subjects[0]
        else:
            consumer.filter_subjects = subjects
        try:
            await js.add_consumer(config.stream, consumer)
        except js_errors.NotFoundError:
            raise _Down(f"stream {config.stream!r} not found{self._missing_stream}") from None
        except js_errors.BadRequestError as exc:
            # An existing consumer whose settings cannot change (its deliver policy): use it as it is.
            log.warning(
                f"{self._title} consumer kept as it is", durable=config.durable, reason=exc.description
            )
        except js_errors.ServiceUnavailableError:
            raise _Down("JetStream is not enabled on this server") from None

    async def _room(self, nc: Any) -> int:
        """How many messages the next pull request asks for, once that is worth a request: no pause
        after a journal failure, and room for a quarter of maxInFlight (or for any while nothing is in
        hand or asked for): a request per freed slot would cost a round trip per message. 0 once the
        connection is closed or the source stops; raises _Down when the consumer is gone."""
        while not nc.is_closed and not self._stopping:
            if self._lost is not None:
                raise _Down(self._lost)
            now = time.monotonic()
            pause = self._pause_until - now
            if pause > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
                continue
            if self._requested and now - self._heard > _PULL_LOST_AFTER:
                self._requested = 0
            room = self.config.max_in_flight - self._holding - self._requested
            if room >= self._low_water or (room > 0 and not self._holding and not self._requested):
                return min(room, _PULL_MAX)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PULL_LOST_AFTER):
                    await self._wake.wait()
        return 0

    async def _arrived(self, msg: Any) -> None:
        """A message or a status of a pull request reached the inbox (nats-py calls this in order)."""
        self._heard = time.monotonic()
        if not msg.reply:  # a status: JetStream messages carry their acknowledgement subject
            self._status(msg.headers or {})
            return
        self._requested = max(0, self._requested - 1)
        if self._stopping:
            return  # left unacknowledged: the server sends it again after ackWait
        self._fetched += 1
        if not self._arrivals:
            asyncio.get_running_loop().call_soon(self._take_arrivals)
        self._arrivals.append(msg)

    def _take_arrivals(self) -> None:
        """Journal the messages that arrived in the last turn of the loop as one batch."""
        msgs, self._arrivals = self._arrivals, []
        if self._stopping:
            return  # left unacknowledged: the server sends them again after ackWait
        task = asyncio.create_task(self._handle(msgs))
        self._in_flight[task] = _Tracked(msgs)
        self._holding += len(msgs)
        task.add_done_callback(self._done)

    def _status(self, headers: dict[str, str]) -> None:
        """A pull request ended (408, or 409 when the server refused it), or the consumer is gone."""
        code = headers.get(js_api.Header.STATUS, "")
        description = headers.get(js_api.Header.DESCRIPTION, "")
        if code == "100":  # an idle heartbeat (none is asked for)
            return
        if code == "409" and description.lower() in ("consumer deleted", "consumer is push based"):
            self._lost = f"consumer {self.config.durable!r}: {description.lower()}"
        elif code == "503":  # no responders: the stream or the consumer is gone
            self._lost = f"consumer {self.config.durable!r} does not answer (no responders)"
        elif code == "409":
            log.warning(f"{self._title} pull request refused", reason=description)
            self._pause_until = max(self._pause_until, time.monotonic() + _REFUSED_PAUSE)
        undelivered = headers.get("Nats-Pending-Messages")
        if undelivered is not None and undelivered.isdigit():
            self._requested = max(0, self._requested - int(undelivered))
        elif code in ("408", "409", "404"):
            self._requested = 0  # counted again from nothing; the server's maxAckPending bounds it anyway
        self._wake.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        tracked = self._in_flight.pop(task, None)
        if tracked is not None:
            self._holding -= len(tracked.msgs)
        if not self._wake.is_set():
            room = self.config.max_in_flight - self._holding - self._requested
            if room >= self._low_water or not self._holding:
                self._wake.set()

    async def _keep_in_progress(self) -> None:
        """Every quarter of ``ackWait``: tell the server that messages whose commit has waited that
        long are in progress, so it does not send them again meanwhile."""
        every = self.config.ack_wait / 4
        while True:
            await asyncio.sleep(every)
            self._progress(every)

    def _progress(self, late: float) -> None:
        if not self._in_flight:
            return
        now = time.monotonic()
        for tracked in self._in_flight.values():
            if now - tracked.since >= late:
                tracked.since = now
                for msg in tracked.msgs:
                    signal = asyncio.create_task(_quietly(msg.in_progress()))
                    self._signals.add(signal)
                    signal.add_done_callback(self._signals.discard)

    # -- a batch of messages

    async def _handle(self, msgs: list[Any]) -> None:
        """Journal a batch: acknowledge what was committed, reject and terminate what cannot be
        decoded, leave the rest for the server to send again when the journal cannot take it."""
        taken: list[tuple[Any, events.Delivery, formats.Options]] = []
        for msg in msgs:
            found = self.delivery(msg)
            if found is None:  # the consumer was made for other subjects before: not ours
                await _quietly(msg.ack())
                self._counts["ignored"].inc()
            else:
                taken.append((msg, *found))
        if not taken:
            return
        try:
            outcomes = await self._accept([(delivery, options) for _, delivery, options in taken])
        except Exception as exc:  # a bug must not stop the bus: each message fails visibly below
            outcomes = [exc] * len(taken)
        committed: list[Any] = []
        journaled = 0
        unavailable: list[str] = []  # why the journal could not take messages of this batch
        for (msg, delivery, _), outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, list):
                committed.append(msg)
                journaled += any(item.new for item in outcome)
            elif isinstance(outcome, formats.DecodeError):
                await self._rejected(msg, delivery, outcome.reason)
            elif isinstance(outcome, journal.JournalUnavailable | intake.Overloaded):
                unavailable.append(str(outcome))
            else:  # a decoder bug must not stop the bus: keep the message, visibly
                log.error(
                    "eventbus message failed",
                    subject=msg.subject,
                    exc_info=(type(outcome), outcome, outcome.__traceback__),
                )
                await self._rejected(msg, delivery, f"decoder failed: {type(outcome).__name__}")
        if committed:
            self._journal_failures = 0
            with contextlib.suppress(nats_errors.Error, OSError):  # gone: the server sends them again
                for msg in committed:
                    await msg.ack()
            self._counts["journaled"].inc(journaled)
            self._counts["duplicate"].inc(len(committed) - journaled)
        if unavailable:
            self._journal_unavailable(unavailable[0], len(unavailable))

    async def _rejected(self, msg: Any, delivery: events.Delivery, reason: str) -> None:
        try:
            delivery_id = await self._reject(delivery, reason)
        except journal.JournalUnavailable as exc:
            self._journal_unavailable(str(exc))
            return
        await _quietly(msg.term())
        self._counts["rejected"].inc()
        log.warning(
            "eventbus message rejected",
            subject=msg.subject,
            reason=reason,
            delivery_id=delivery_id,
        )

    def _journal_unavailable(self, reason: str, count: int = 1) -> None:
        """Leave ``count`` messages unacknowledged (they come back after ackWait) and pause fetching,
        longer after each failure."""
        self._counts["retried"].inc(count)
        self._journal_failures += 1
        delay = self._backoff.delay(self._journal_failures, self._rng)
        self._pause_until = max(self._pause_until, time.monotonic() + delay)
        log.warning(
            "journal cannot take eventbus messages yet", reason=reason, count=count, retry_in=round(delay, 3)
        )


class ArgoEventsSource(_PullConsumer):
    """Argo Events' EventBus: the EventSources its ``eventSources`` take, each message a CloudEvent
    (unwrapped where the entry says so), credentials in Argo's header maps removed."""

    name = NAME
    _title = "argo events eventbus"
    _missing_stream = " (no EventSource has published to this EventBus yet)"

    def __init__(
        self,
        config: settings_mod.ArgoEvents,
        accept: Accept,
        *,
        reject: Reject,
        rng: random.Random | None = None,
        drain_seconds: float = 5.0,
    ) -> None:
        self.selector = argo_eventbus.Selector((e.name, e.unwrap) for e in config.event_sources)
        super().__init__(config, accept, reject=reject, rng=rng, drain_seconds=drain_seconds)

    def subjects(self) -> list[str]:
        return self.selector.subjects(self.config.stream)

    def delivery(self, msg: Any) -> tuple[events.Delivery, formats.Options] | None:
        subject: str = msg.subject
        _, _, rest = subject.partition(".")
        event_source, _, event_name = rest.partition(".")
        selection = self.selector.select(event_source, event_name)
        if selection is None:
            return None
        headers = {"nats-subject": subject}
        received = msg.headers or {}
        msg_id = received.get("Nats-Msg-Id")
        if msg_id:
            headers["nats-msg-id"] = msg_id
        traceparent = received.get("traceparent")  # W3C trace context, if the publisher sent one
        if traceparent:
            headers["traceparent"] = traceparent
        delivery = events.Delivery(
            transport=TRANSPORT,
            endpoint=NAME,
            format=selection.decoder,
            headers=headers,
            body=argo_eventbus.scrub(msg.data),
        )
        return delivery, formats.NO_OPTIONS


class JetStreamSource(_PullConsumer):
    """Any JetStream stream: each message on a listed subject is a delivery in that subject's format
    (the CloudEvents NATS binding, binary with ``ce-`` headers or structured; MinIO's NATS target;
    plain JSON), its headers as sent less credentials. The delivery's endpoint is the stream."""

    name = JETSTREAM_NAME
    _title = "jetstream"
    _missing_stream = ""

    def __init__(
        self,
        config: settings_mod.JetStream,
        accept: Accept,
        *,
        reject: Reject,
        rng: random.Random | None = None,
        drain_seconds: float = 5.0,
    ) -> None:
        self._entries = [
            (entry.subject, entry.format, formats.Options.of(entry)) for entry in config.subjects
        ]
        self._chosen: dict[str, tuple[str, formats.Options] | None] = {}
        super().__init__(config, accept, reject=reject, rng=rng, drain_seconds=drain_seconds)

    def subjects(self) -> list[str]:
        return list(dict.fromkeys(subject for subject, _, _ in self._entries))

    def _choose(self, subject: str) -> tuple[str, formats.Options] | None:
        try:
            return self._chosen[subject]
        except KeyError:
            pass
        matches = settings_mod.subject_matches
        found = next(((fmt, opts) for pattern, fmt, opts in self._entries if matches(pattern, subject)), None)
        if len(self._chosen) >= 10_000:  # subjects may carry ids: the cache stays bounded
            self._chosen.clear()
        self._chosen[subject] = found
        return found

    def delivery(self, msg: Any) -> tuple[events.Delivery, formats.Options] | None:
        chosen = self._choose(msg.subject)
        if chosen is None:
            return None
        decoder, options = chosen
        headers = {name.lower(): value for name, value in (msg.headers or {}).items()}
        headers["nats-subject"] = msg.subject
        delivery = events.Delivery(
            transport=TRANSPORT,
            endpoint=self.config.stream,
            format=decoder,
            headers=events.scrub_headers(headers),
            body=msg.data,
        )
        return delivery, options


async def _quietly(acknowledgement: Awaitable[Any]) -> None:
    """Send an acknowledgement; if the connection is gone the server sends the message again."""
    with contextlib.suppress(nats_errors.Error, OSError):
        await acknowledgement


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
