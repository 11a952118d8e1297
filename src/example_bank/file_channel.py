"""The bank's side of the file channel: what it does with the directories its SFTP server serves.

Layout under ``sftp_root`` (the SFTP client's whole world)::

    inbox/    the bridge uploads <batch id>.pain001.xml.part, renames it to <batch id>.pain001.xml
    outbox/   the bank drops <batch id>.pain002.xml and <account>-<seq>.camt053.xml (or .sta)
    archive/  the bridge moves the outbox files it has processed here

and, beside it and out of the client's reach, ``<sftp_root>-bank/`` with ``received/`` (every
payment file taken in, kept as received), ``unreadable/`` (inbox files that are not named as a
payment file) and ``tmp/`` (files being written: an outbox file appears only whole, by rename).

Order of work for a payment file: the database transaction that takes it in (and stores its
answer) commits, then the answer is written to the outbox, then the file leaves the inbox. A crash
between those steps leaves the file in the inbox, and the next pass answers it again from the
stored answer: the same bytes, nothing paid twice. Statements likewise: the file is written, then
the page is marked delivered; a page written twice is the same file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from example_bank.models import DELIVERED, PENDING, Statement, utcnow
from example_bank.payment_files import answer_name, message_id_of, receive_payment_file
from example_bank.settings import BankSettings
from example_bank.statement_files import (
    electronic_sequence_number,
    render_statement_file,
    statement_file_name,
)

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
# Files looked at per pass: a flood of uploads cannot starve statement delivery.
FILES_PER_PASS = 50
STATEMENTS_PER_PASS = 200


@dataclass(frozen=True, slots=True)
class Directories:
    root: Path
    inbox: Path
    outbox: Path
    archive: Path
    received: Path
    unreadable: Path
    tmp: Path

    @classmethod
    def of(cls, settings: BankSettings) -> Directories:
        root = Path(settings.sftp_root).resolve()
        private = root.with_name(root.name + "-bank")
        return cls(
            root=root,
            inbox=root / "inbox",
            outbox=root / "outbox",
            archive=root / "archive",
            received=private / "received",
            unreadable=private / "unreadable",
            tmp=private / "tmp",
        )

    def create(self) -> Directories:
        for directory in (
            self.inbox,
            self.outbox,
            self.archive,
            self.received,
            self.unreadable,
            self.tmp,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        return self


def write_atomically(directories: Directories, target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that a reader sees nothing or the whole file."""
    partial = directories.tmp / (target.name + f".{os.getpid()}.{threading.get_ident()}")
    try:
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def take_in_payment_files(
    session_factory: Callable[[], Session], settings: BankSettings, directories: Directories
) -> int:
    """Answer every complete payment file in the inbox; returns how many were handled."""
    handled = 0
    with os.scandir(directories.inbox) as entries:
        names = sorted(
            e.name for e in entries if stat.S_ISREG(e.stat(follow_symlinks=False).st_mode)
        )
    for name in names[:FILES_PER_PASS]:
        if name.endswith(PART_SUFFIX):
            continue  # still being uploaded: never picked up
        path = directories.inbox / name
        message_id = message_id_of(name)
        if message_id is None:
            # Not ours to read, and no message id to answer: set aside once, not logged forever.
            log.warning("inbox file %r is not named <message id>.pain001.xml; set aside", name)
            os.replace(path, directories.unreadable / f"{utcnow():%Y%m%dT%H%M%S%f}-{name}"[:200])
            handled += 1
            continue
        try:
            with session_factory() as session, session.begin():
                answer = receive_payment_file(session, path, settings)
        except IntegrityError:
            # Another taker claimed this message id first; its answer is found next pass.
            log.info("payment file %s is being taken in elsewhere", message_id)
            continue
        except FileNotFoundError:
            continue  # moved or removed by the client meanwhile
        write_atomically(directories, directories.outbox / answer_name(message_id), answer.pain002)
        if answer.repeated:
            log.info("payment file %s was delivered again: answered as before", message_id)
        else:
            log.info(
                "payment file %s: %s, %s accepted, %s rejected (batch %s)",
                message_id,
                answer.group_status,
                answer.accepted,
                answer.rejected,
                answer.batch_id,
            )
        stamp = f"{utcnow():%Y%m%dT%H%M%S%f}"
        # FileNotFoundError: the client removed it after it was answered.
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, directories.received / f"{message_id}-{stamp}.pain001.xml")
        handled += 1
    return handled


def deliver_statement_files(
    session_factory: Callable[[], Session],
    settings: BankSettings,
    directories: Directories,
    limit: int = STATEMENTS_PER_PASS,
) -> int:
    """Drop every pending statement page in the outbox, oldest first; returns how many."""
    delivered = 0
    while delivered < limit:
        with session_factory() as session, session.begin():
            query = (
                select(Statement)
                .where(Statement.delivery_state == PENDING)
                .order_by(Statement.id)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            statement = session.scalars(query).one_or_none()
            if statement is None:
                return delivered
            sequence = electronic_sequence_number(session, statement)
            for file_format in settings.sftp_statement_formats:
                data = render_statement_file(session, statement, file_format, sequence)
                name = statement_file_name(statement.account_number, sequence, file_format)
                write_atomically(directories, directories.outbox / name, data)
            statement.delivery_state = DELIVERED
            statement.delivered_at = utcnow()
            statement.attempts += 1
            statement.last_error = None
        delivered += 1
    return delivered


class FileChannelWorker:
    """A daemon thread that polls the inbox and delivers statements, until stopped."""

    def __init__(self, settings: BankSettings, session_factory: Callable[[], Session]) -> None:
        self.settings = settings
        self.directories = Directories.of(settings).create()
        self._factory = session_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run_once(self) -> int:
        """One pass; returns how many files were handled (0 = nothing to do)."""
        with self._lock:
            work = take_in_payment_files(self._factory, self.settings, self.directories)
            if self.settings.statement_channel == "sftp":
                work += deliver_statement_files(self._factory, self.settings, self.directories)
            return work

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="example-bank-files", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                work = self.run_once()
            except Exception:
                log.exception("example bank file channel pass failed")
                work = 0
            if work == 0:
                self._stop.wait(self.settings.sftp_poll_seconds)
