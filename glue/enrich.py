"""Route enrichment: facts about an event's object read from MinIO before the route's match runs.

A route asks for them with an ``enrich`` block::

    routes:
      - name: reload-model
        enrich: {metadata: true, tags: true, json: manifest.json, maxBytes: 65536, timeout: 5}
        match: object.tags.stage == "prod" && object.json.format == "safetensors"
        handler: kubeai.reload
        params: {model: "{{ object.json.name }}"}

Expressions and templates of that route then see one more variable, ``object``:

- ``bucket``, ``key``, ``versionId``, ``exists`` (false when the object is gone, e.g. a delete event);
- with ``metadata``: ``size``, ``eTag``, ``contentType``, ``lastModified`` and ``metadata`` (user
  metadata, names lower case without ``x-amz-meta-``);
- with ``tags``: ``tags``;
- with ``json``: ``json``, the parsed content of that small JSON object (a model manifest next to the
  weights): a key relative to the event object's "directory", or from the bucket root when it starts
  with ``/``. ``null`` when it does not exist; over ``maxBytes`` or not JSON gives ``null`` and
  ``jsonError`` with the reason.

The event's object is read at its ``versionId`` when the event carries one, so a redelivered or
replayed event sees what the first delivery saw. Events without a bucket and key (not MinIO events)
get ``object: null``.

A failure to reach MinIO (unreachable, timeout, access denied, server error) raises
:class:`EnrichmentFailed`, a :class:`glue.contract.TemporaryError`: the routes that asked are decided
again later for that event; the other routes are decided now; the daemon goes on. A delete marker
(a version MinIO answers 405 for) is an object that does not exist, not a failure.
"""

from __future__ import annotations

import asyncio
import collections
import posixpath
import typing
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import Field

from glue import contract, events
from glue import settings as settings_mod

if TYPE_CHECKING:  # the minio SDK is imported only where an Enricher is built (routing needs only Spec)
    from glue import objectstore

__all__ = ["Enricher", "EnrichmentFailed", "Spec", "target"]


class Spec(settings_mod.Model):
    """A route's ``enrich`` block: what to read about the event's object."""

    metadata: bool = Field(default=False, description="Object info and user metadata (a HEAD).")
    tags: bool = Field(default=False, description="The object's tags.")
    json_key: str | None = Field(
        default=None,
        alias="json",
        min_length=1,
        description="A small JSON object to read: relative to the event object's directory, or /absolute.",
    )
    max_bytes: int = Field(default=64 << 10, ge=1, le=16 << 20, description="Largest JSON object read.")
    timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds for the whole enrichment.")


class EnrichmentFailed(contract.TemporaryError):
    """MinIO could not be asked now; route the event again later."""


def target(event: events.CloudEvent) -> tuple[str, str, str | None] | None:
    """(bucket, key, versionId) of a MinIO event (see glue.formats.minio), else None."""
    data = event.get_data()
    if not isinstance(data, dict):
        return None
    bucket, key, version = data.get("bucket"), data.get("key"), data.get("versionId")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        return None
    return bucket, key, version if isinstance(version, str) and version else None


def _json_key(object_key: str, wanted: str) -> str:
    if wanted.startswith("/"):
        return posixpath.normpath(wanted).lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(object_key), wanted)).lstrip("/")


class Enricher:
    """Reads what routes ask for, through one :class:`glue.objectstore.ObjectStore`.

    Results are remembered per (event identity, spec) for the last ``cache_size`` lookups, so several
    routes asking the same of one event read MinIO once."""

    def __init__(self, store: objectstore.ObjectStore, *, cache_size: int = 512) -> None:
        self.store = store
        self._cache: collections.OrderedDict[tuple[str, Spec], dict[str, Any] | None] = (
            collections.OrderedDict()
        )
        self._cache_size = cache_size

    def close(self) -> None:
        self.store.close()

    async def for_routes(
        self, event: events.CloudEvent, specs: Mapping[str, Spec]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(route name -> the variables its ``enrich`` block adds, route name -> why its enrichment
        failed). A failure holds back only the routes whose reads failed."""
        found: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        for name, spec in specs.items():
            try:
                found[name] = await self.variables(event, spec)
            except EnrichmentFailed as exc:
                failed[name] = str(exc)
        return found, failed

    async def variables(self, event: events.CloudEvent, spec: Spec) -> dict[str, Any]:
        """``{"object": ...}`` to add to the route's expression context. Raises EnrichmentFailed."""
        from glue import objectstore

        cache_key = (events.identity(event), spec)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return {"object": self._cache[cache_key]}
        where = target(event)
        if where is None:
            value = None
        else:
            try:
                async with asyncio.timeout(spec.timeout):
                    value = await self._read(*where, spec)
            except TimeoutError:
                raise EnrichmentFailed(
                    f"s3://{where[0]}/{where[1]}: enrichment took longer than {spec.timeout:g}s"
                ) from None
            except objectstore.ObjectStoreError as exc:
                raise EnrichmentFailed(str(exc)) from None
        self._cache[cache_key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return {"object": value}

    async def _read(self, bucket: str, key: str, version: str | None, spec: Spec) -> dict[str, Any]:
        """The parts the spec asks for, read concurrently (each is one request)."""
        parts: list[Awaitable[dict[str, Any]]] = []
        if spec.metadata:
            parts.append(self._metadata(bucket, key, version))
        if spec.tags:
            parts.append(self._tags(bucket, key, version))
        if spec.json_key is not None:
            parts.append(self._json(bucket, _json_key(key, spec.json_key), spec.max_bytes))
        result: dict[str, Any] = {"bucket": bucket, "key": key, "versionId": version, "exists": True}
        outcomes = await asyncio.gather(*parts, return_exceptions=True)
        for outcome in outcomes:  # the first failure in the spec's order, whichever finished first
            if isinstance(outcome, BaseException):
                raise outcome
        for part in typing.cast(list[dict[str, Any]], outcomes):
            exists = part.pop("exists", True)
            result.update(part)
            result["exists"] = result["exists"] and exists
        return result

    async def _metadata(self, bucket: str, key: str, version: str | None) -> dict[str, Any]:
        from glue import objectstore

        try:
            info = await self.store.stat(bucket, key, version_id=version)
        except objectstore.ObjectNotFound:
            return {"exists": False}
        return {
            "size": info.size,
            "eTag": info.etag,
            "contentType": info.content_type,
            "lastModified": info.last_modified,
            "metadata": info.metadata,
        }

    async def _tags(self, bucket: str, key: str, version: str | None) -> dict[str, Any]:
        from glue import objectstore

        try:
            return {"tags": await self.store.tags(bucket, key, version_id=version)}
        except objectstore.ObjectNotFound:
            return {"exists": False, "tags": {}}

    async def _json(self, bucket: str, json_key: str, max_bytes: int) -> dict[str, Any]:
        from glue import objectstore

        try:
            raw = await self.store.read(bucket, json_key, max_bytes=max_bytes)
        except objectstore.ObjectNotFound:
            return {"json": None}
        except objectstore.ObjectTooLarge as exc:
            return {"json": None, "jsonError": str(exc)}
        try:
            return {"json": orjson.loads(raw)}
        except orjson.JSONDecodeError as exc:
            return {"json": None, "jsonError": f"s3://{bucket}/{json_key}: not JSON ({exc.msg} at {exc.pos})"}
