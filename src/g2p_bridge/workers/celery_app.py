"""The Celery application: one task per pipeline step plus the producer tick that beat sends.

Tasks only carry row ids; the database row is the work and the claim, so a task delivered twice
or redelivered after a worker died does its step once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from g2p_bridge.core.context import Context
from g2p_bridge.core.steps import QUEUES, STEPS
from g2p_bridge.db import make_engine, make_session_factory
from g2p_bridge.producers import find_due_work
from g2p_bridge.settings import Settings, get_settings

log = logging.getLogger(__name__)
PRODUCER_QUEUE = "producers"


def make_celery(settings: Settings, context: Context | None = None) -> Celery:
    """``context`` is for tests that bring their own (a fake bank); by default each worker
    process builds one from ``settings`` when its first task runs."""
    contexts: list[Context] = [context] if context else []

    def current_context() -> Context:
        if not contexts:
            engine = make_engine(settings.database_url)
            contexts.append(Context(settings, make_session_factory(engine)))
        return contexts[0]

    if context is None:

        @worker_process_init.connect(weak=False)
        def warm_up(**_: object) -> None:
            # In each prefork child as it starts, so its first batch does not wait on it.
            try:
                current_context().warm_up()
            except Exception:  # the first step that needs it builds it again, and says why
                log.warning("warming up the worker process failed", exc_info=True)

    app = Celery("g2p_bridge", broker=settings.broker_url or "memory://", set_as_current=False)
    queues = sorted(set(QUEUES.values()) | {PRODUCER_QUEUE})
    limit = settings.step_time_limit_seconds
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=PRODUCER_QUEUE,
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in queues],
        task_routes={
            f"g2p.{name}": {"queue": queue, "exchange": queue, "routing_key": queue}
            for name, queue in QUEUES.items()
        }
        | {
            "g2p.produce": {
                "queue": PRODUCER_QUEUE,
                "exchange": PRODUCER_QUEUE,
                "routing_key": PRODUCER_QUEUE,
            }
        },
        # Below the broker's redelivery timeouts, so a slow task is never handed out twice. The
        # claim's lease is much shorter: the step's heartbeat renews it until this limit.
        task_time_limit=limit,
        task_soft_time_limit=max(limit - min(30, limit // 5), 1),
        broker_transport_options={"visibility_timeout": limit * 4},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        # Beat keeps no state: the tick's due work is in the database. The default scheduler
        # writes ./celerybeat-schedule, which another beat in the same directory (the Example
        # Bank's) read as its own and sent g2p.produce to its queue; and a read-only container
        # filesystem refuses it.
        beat_scheduler="celery.beat:Scheduler",
        beat_schedule={
            "produce": {
                "task": "g2p.produce",
                "schedule": settings.beat_interval_seconds,
                "options": {"expires": settings.beat_interval_seconds * 5},
            },
        },
    )

    @app.task(name="g2p.produce")
    def produce() -> int:
        work = find_due_work(current_context())
        for item in work:
            app.send_task(f"g2p.{item.task}", args=[item.key])
        return len(work)

    for step_name in STEPS:
        _register_step(app, step_name, current_context)
    return app


def _register_step(app: Celery, step_name: str, current_context: Callable[[], Context]) -> None:
    step = STEPS[step_name]

    # The database went away (a restart, a failover), chose this transaction as a deadlock
    # victim, or a lock wait timed out: whatever the step had not committed rolled back, and its
    # claims make a repeat harmless. Run it again within seconds. (A row whose claim did commit
    # is given back by the step's lease as soon as the database answers again, so the repeat,
    # or the next sweep, finds it free.)
    @app.task(
        name=f"g2p.{step_name}",
        autoretry_for=(OperationalError, InterfaceError, PoolTimeout),
        retry_backoff=1,
        retry_backoff_max=30,
        max_retries=6,
    )
    def run(key: str) -> bool:
        done = step(current_context(), key)
        # Finishing a step often makes the next one due: look now rather than at the next beat.
        if done and step_name in ("secure_funds", "resolve_mapper_batch"):
            app.send_task("g2p.produce")
        return done

    del run


@cache
def celery_app() -> Celery:
    """The process's one Celery app. Celery keeps one task registry per process, so a second
    app registering the same task names would silently share the first one's tasks."""
    return make_celery(get_settings())
