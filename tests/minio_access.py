"""How the tests reach a MinIO (moto's S3 server or the listen double): credentials in files, as a
mounted Secret provides them, and the ``sources.minio`` group an operator writes for them.

Test areas take the fixture into their conftest: ``credential_files = minio_access.credential_files``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def credential_files(tmp_path: Path) -> dict[str, Path]:
    access = tmp_path / "access-key"
    secret = tmp_path / "secret-key"
    access.write_text("glue-access\n")
    secret.write_text("glue-secret-" + secrets.token_hex(8) + "\n")
    return {"access": access, "secret": secret}


#: The discard port: nothing listens there.
UNREACHABLE = "127.0.0.1:9"


def connection(endpoint: str, files: dict[str, Path], **extra: Any) -> dict[str, Any]:
    """``sources.minio`` as an operator writes it: ``endpoint`` over plain HTTP, the credentials from the
    files of ``credential_files``, and ``extra`` settings."""
    return {
        "endpoint": endpoint,
        "secure": False,
        "accessKey": {"file": str(files["access"])},
        "secretKey": {"file": str(files["secret"])},
        **extra,
    }
