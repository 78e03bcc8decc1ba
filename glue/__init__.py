"""runtime-glue: an event-driven integration daemon for Kubernetes platforms.

This module is the public API for handler plugins (``handlers/`` and your own): import names from
here, not from the submodules.
"""

from glue.contract import (
    Call,
    Clients,
    Context,
    Needs,
    Params,
    PermanentError,
    Plan,
    PolicyPath,
    RbacRule,
    Registry,
    TemporaryError,
    client,
    handler,
    registry,
)
from glue.retry import Policy as RetryPolicy
from glue.retry import retry_after

__all__ = [
    "Call",
    "Clients",
    "Context",
    "Needs",
    "Params",
    "PermanentError",
    "Plan",
    "PolicyPath",
    "RbacRule",
    "Registry",
    "RetryPolicy",
    "TemporaryError",
    "client",
    "handler",
    "registry",
    "retry_after",
]
__version__ = "0.1.0"
