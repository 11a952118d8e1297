"""The soak's forged statements (bench/soak.py) are what they claim to be.

A forged file refused at upload proves something only if the bridge's own parser reads it as
naming the program account, with the entries it carries: otherwise a refusal could be the
parser's ("unparseable"), not the authorization the soak means to test.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from bench.config import PROGRAM_ACCOUNT
from bench.soak import FRAMINGS, mt940, soak_id

from g2p_bridge.formats.mt940 import decode_statement_bytes, iter_statements

ENTRIES = [
    ("soak0-00000001", Decimal("55.25"), "D"),
    ("soak0-00000002", Decimal("60.50"), "RD"),
]


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
def test_every_framing_names_the_program_account(framing: str) -> None:
    text = FRAMINGS[framing](mt940(PROGRAM_ACCOUNT, "FORGED1", ENTRIES))
    pages = list(iter_statements(decode_statement_bytes(text.encode())))
    assert [p.account for p in pages] == [PROGRAM_ACCOUNT]
    entries = pages[0].entries
    assert [(e.customer_reference, e.amount, e.mark) for e in entries] == ENTRIES
    # The balances add up, so only the uploader's authority can make the file wrong.
    page = pages[0]
    moved = sum((e.signed_amount for e in entries), Decimal(0))
    assert page.opening_balance.amount + moved == page.closing_balance.amount


def test_soak_ids_are_the_bench_ids() -> None:
    assert soak_id(3, 42) == "soak3-00000042"
