"""TLS with a custom CA, on both ways glue talks to MinIO: the SDK (moto's S3 server behind TLS with a
certificate from a private CA) and the listen stream (the ListenBucketNotification double behind TLS).
With ``caFile`` the calls succeed; without it the certificate is refused, with a clear reason."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import orjson
import pytest

from glue import intake, journal, objectstore
from glue import settings as settings_mod
from glue.sources import minio_listen
from tests.minio_access import connection
from tests.sources.minio_listen import tls
from tests.sources.minio_listen.listen_double import ListenDouble, record
from tests.support import eventually


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tls.make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_endpoint(pki: tuple[Path, Path, Path]) -> Iterator[str]:
    _, cert, key = pki
    with tls.moto_over_tls(cert, key) as endpoint:
        yield endpoint


def _config(endpoint: str, files: dict[str, Path], ca: Path | None, **extra: object) -> settings_mod.Minio:
    data = connection(endpoint, files, secure=True, timeout=2, **extra)
    if ca is not None:
        data["caFile"] = str(ca)
    return settings_mod.Minio.model_validate(data)


async def test_sdk_calls_trust_the_custom_ca(
    tls_endpoint: str, pki: tuple[Path, Path, Path], credential_files: dict[str, Path]
) -> None:
    ca = pki[0]
    bucket = "tls-" + secrets.token_hex(4)
    s3 = boto3.client(
        "s3",
        endpoint_url=f"https://{tls_endpoint}",
        verify=str(ca),
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="m.json", Body=b'{"ok": true}')

    trusted = objectstore.ObjectStore(_config(tls_endpoint, credential_files, ca))
    try:
        assert await trusted.read(bucket, "m.json", max_bytes=100) == b'{"ok": true}'
    finally:
        trusted.close()

    untrusted = objectstore.ObjectStore(_config(tls_endpoint, credential_files, None))
    try:
        with pytest.raises(objectstore.ObjectStoreError, match=r"unreachable \(SSLError\)"):
            await untrusted.read(bucket, "m.json", max_bytes=100)
    finally:
        untrusted.close()


async def test_listen_stream_trusts_the_custom_ca(
    pki: tuple[Path, Path, Path],
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
) -> None:
    ca, cert, key = pki
    bucket = "tls-" + secrets.token_hex(4)
    double = ListenDouble(
        credential_files["access"].read_text().strip(), credential_files["secret"].read_text().strip()
    )
    double.scripts.append([("line", orjson.dumps({"Records": [record(bucket, "w.bin")]})), ("hold",)])
    double.ssl_context = tls.server_context(cert, key)
    await double.start()
    extra = {"pingSeconds": 1, "reconnectInitial": 0.05, "reconnectMax": 0.1, "buckets": [{"name": bucket}]}
    try:
        untrusted = minio_listen.ListenSource(
            _config(double.endpoint, credential_files, None, **extra), intake_.accept
        )
        await untrusted.start()
        try:

            async def refused() -> bool:
                reason = await untrusted.readiness()
                return reason is not None and "CERTIFICATE_VERIFY_FAILED" in reason

            await eventually(refused)
        finally:
            await untrusted.stop()

        trusted = minio_listen.ListenSource(
            _config(double.endpoint, credential_files, ca, **extra), intake_.accept
        )
        await trusted.start()
        try:

            async def journaled() -> bool:
                return len(await journal_.list()) == 1

            await eventually(journaled)
            assert trusted.ready
        finally:
            await trusted.stop()
    finally:
        await double.stop()
    assert double.seen and len(double.seen) == 1  # the untrusted source never got through the handshake
