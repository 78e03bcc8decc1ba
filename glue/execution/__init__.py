"""Workers: route journaled events, run handlers, retry, dead-letter.

:class:`Executor` is the daemon's component; its parts are the modules of this package (see
:mod:`glue.execution.executor`). The names other code uses are re-exported here.
"""

from __future__ import annotations

from glue.execution.attempt import Attempt, plan, run_attempt
from glue.execution.cache import KEEP_SECONDS
from glue.execution.dispatcher import GAUGE_SECONDS
from glue.execution.executor import Executor, default_owner

__all__ = [
    "GAUGE_SECONDS",
    "KEEP_SECONDS",
    "Attempt",
    "Executor",
    "default_owner",
    "plan",
    "run_attempt",
]
