"""The progress line of long CLI work (``g2p-bridge envelopes submit``), on stderr so that
stdout keeps only the result: on a terminal one line redrawn in place, elsewhere (a log, CI)
one line per change."""

from __future__ import annotations

import sys
from typing import Any, TextIO

BAR = 24


def bar(done: int, total: int) -> str:
    filled = BAR if total <= 0 else min(BAR, BAR * done // total)
    return "[" + "#" * filled + "-" * (BAR - filled) + "]"


def size(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB" if count >= 1024 else f"{count} B"
    return f"{count / (1024 * 1024):.1f} MiB"


def stage_of(status: dict[str, Any]) -> str:
    """The envelope's stage, as the console names it (core/overview.py ``Stage``), from its
    status payload."""
    received = int(status.get("number_of_disbursements_received") or 0)
    declared = int(status.get("number_of_disbursements_declared") or 0)
    if status.get("cancelled"):
        return "CANCELLED"
    if received < declared:
        return "RECEIVING"
    if status.get("approval_status") == "AWAITING_APPROVAL":
        return "AWAITING_APPROVAL"
    if status.get("funds_blocked_with_bank") != "FUNDS_BLOCK_SUCCESS":
        return "FUNDING"
    settled = int(status.get("number_of_disbursements_reconciled") or 0) + int(
        status.get("number_of_disbursements_failed") or 0
    )
    return "PAYING" if settled < received else "SETTLED"


FINAL_STAGES = ("SETTLED", "CANCELLED")


def describe(status: dict[str, Any]) -> str:
    stage = stage_of(status)
    received = int(status.get("number_of_disbursements_received") or 0)
    shipped = int(status.get("number_of_disbursements_shipped") or 0)
    reconciled = int(status.get("number_of_disbursements_reconciled") or 0)
    failed = int(status.get("number_of_disbursements_failed") or 0)
    return (
        f"{stage:<17} {bar(reconciled + failed, received)} "
        f"shipped {shipped}/{received}, paid {reconciled}, failed {failed}"
    )


class ProgressLine:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._last = ""

    def show(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.live and self._last:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""
