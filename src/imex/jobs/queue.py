"""What a durable queue is: a table of the domain whose rows are the jobs, and how its failures are retried.

Every queue of the hub (deliveries, confirmations, retrievals, report deliveries and queries, e-mails,
uploads, locator sweeps) is a `JobQueue` over its own table, so a job's state is the domain row's state
and never a second copy that could disagree with it. The engine (imex.jobs.engine) is the one place that
claims, leases, reaps and reschedules rows of any of them.

Two ways of holding a claimed job:
- a *running state* (`running_state="sending"`): the row changes state while a worker holds it, with
  `claimed_by` and `lease_until`; a row whose lease lapsed is reaped back to the due state.
- *holding the due time* (`running_state=None`): the row keeps its state and its due time is pushed out by
  the lease; a worker that dies simply lets it fall due again, so there is nothing to reap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table

from imex.config import Config

Number = float | int
SettingOr = str | Number


@dataclass(frozen=True)
class RetryPolicy:
    """Seconds before the next attempt: `initial * multiplier ** (attempts - 1)`, at most `cap`; a job gives
    up (dead letter) after `max_attempts` attempts, never when that is None."""

    initial: float
    multiplier: float = 2.0
    cap: float = 900.0
    max_attempts: int | None = None

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return float(min(self.initial * self.multiplier ** max(attempts - 1, 0), self.cap))

    def exhausted(self, attempts: int) -> bool:
        return self.max_attempts is not None and attempts >= self.max_attempts


@dataclass(frozen=True)
class RetrySettings:
    """Where a queue's retry policy comes from: each field a setting key of imex.config, or a fixed number."""

    initial: SettingOr
    multiplier: SettingOr = 2.0
    cap: SettingOr = 900.0
    max_attempts: SettingOr | None = None

    def policy(self, config: Config | None) -> RetryPolicy:
        def value(field_value: SettingOr | None) -> Any:
            if isinstance(field_value, str):
                if config is None:
                    raise ValueError(f"the setting {field_value} needs a Config")
                return config[field_value]
            return field_value

        attempts = value(self.max_attempts)
        return RetryPolicy(
            float(value(self.initial)),
            float(value(self.multiplier)),
            float(value(self.cap)),
            int(attempts) if attempts is not None else None,
        )

    def keys(self) -> list[str]:
        return [v for v in (self.initial, self.multiplier, self.cap, self.max_attempts) if isinstance(v, str)]


@dataclass(frozen=True)
class JobQueue:
    """A durable queue over `table`. The table has an integer `id` and the columns named here; queues that
    hold claims by state also have `claimed_by` and `lease_until`."""

    name: str
    table: Table
    retry: RetrySettings | None
    due_state: str = "pending"
    running_state: str | None = None
    dead_state: str | None = "failed"
    due_column: str = "next_attempt_at"
    # None: the table keeps no state (a recurring schedule such as a PACS sweep: always due at its time)
    state_column: str | None = "state"
    attempts_column: str | None = "attempts"
    error_column: str | None = "last_error"
    updated_column: str | None = None
    # a NULL due time counts as due (uploads: a row no worker holds)
    null_is_due: bool = False
    order: Callable[[Table], Sequence[ColumnElement[Any]]] | None = None
    # further conditions a due row must meet (a sweep's node must be enabled, ...)
    where: Callable[[Table], ColumnElement[bool]] | None = None
    description: str = ""
    # the operator's retry of a dead job when the domain needs more than "due now, attempts from zero"
    # (a transfer also puts its failed instances back): (db, job id) -> whether it was retried
    requeue: Callable[[Any, int], bool] | None = None

    @property
    def holds_by_state(self) -> bool:
        return self.running_state is not None

    def column(self, name: str) -> Any:
        return self.table.c[name]

    @property
    def due(self) -> Any:
        return self.table.c[self.due_column]

    @property
    def attempts(self) -> Any:
        return self.table.c[self.attempts_column] if self.attempts_column else None

    def stamped(self, values: dict[str, Any], now: Any) -> dict[str, Any]:
        """`values` with the row's updated-at column set, for queues that keep one."""
        return {**values, self.updated_column: now} if self.updated_column else values

    def policy(self, config: Config | None) -> RetryPolicy | None:
        """The retry policy, or None for a queue that keeps no retry settings (it never retries)."""
        return self.retry.policy(config) if self.retry is not None else None

    def retry_policy(self, config: Config | None) -> RetryPolicy:
        """The retry policy of a queue that retries its failed jobs; a queue without retry settings has none
        to give (ValueError)."""
        if self.retry is None:
            raise ValueError(f"the {self.name} queue has no retry settings")
        return self.retry.policy(config)
