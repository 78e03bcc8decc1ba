"""Fixtures of the observability tests: a real daemon, as in the HTTP source's tests; the Kubernetes
API double and a kubeconfig for it, as in the handlers' tests (traces follow a webhook to an object)."""

from tests.handlers.kubernetes.conftest import apiserver, kubeconfig  # noqa: F401 (fixtures)
from tests.sources.http.conftest import start_daemon  # noqa: F401 (fixture)
