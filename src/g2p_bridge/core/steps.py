"""The pipeline's steps by name: what a Celery task or the embedded runner calls for a Work."""

from __future__ import annotations

from collections.abc import Callable

from g2p_bridge.core.bank_files import poll_bank_outbox
from g2p_bridge.core.callbacks import deliver_callbacks
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import send_bank_batch
from g2p_bridge.core.funds import secure_funds
from g2p_bridge.core.mapper_resolution import resolve_mapper_batch
from g2p_bridge.core.release import release_funds
from g2p_bridge.core.statements import process_statement
from g2p_bridge.observability import instrument_step

STEPS: dict[str, Callable[[Context, str], bool]] = {
    name: instrument_step(name, step)
    for name, step in {
        "resolve_mapper_batch": resolve_mapper_batch,
        "secure_funds": secure_funds,
        "send_bank_batch": send_bank_batch,
        "release_funds": release_funds,
        "process_statement": process_statement,
        "poll_bank_outbox": poll_bank_outbox,
        "deliver_callbacks": deliver_callbacks,
    }.items()
}

# Which Celery queue each step's task goes to: bank-calling work apart from the rest.
QUEUES = {
    "resolve_mapper_batch": "mapper",
    "secure_funds": "funds",
    "send_bank_batch": "dispatch",
    "release_funds": "funds",
    "process_statement": "statements",
    # Talks to the bank's file server, as dispatch talks to its API.
    "poll_bank_outbox": "dispatch",
    # POSTs to the PBMS: apart, so a slow or absent PBMS never holds up the payments.
    "deliver_callbacks": "callbacks",
}
