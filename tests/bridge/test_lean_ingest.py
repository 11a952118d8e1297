"""The lean wire path of ``create_disbursements`` (api/lean_ingest.py) against the full path
(the string guard, then the schema's pydantic models), which it must never contradict:

* on hostile and careless items, whatever the lean path takes, the full path takes too, with
  the very same values (and the lean path takes the plain requests a PBMS sends);
* the same request answered both ways gives the same bytes, writes the same rows, counters and
  audit events, and a refused one the same refusal (PostgreSQL and SQLite);
* the replay digest written by orjson is byte for byte json's;
* no character pydantic strips is one the lean path keeps."""

from __future__ import annotations

import itertools
import json
import sys
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json
from sqlalchemy import select

from bridge_support import (
    clear_tables,
    disbursement_items,
    disbursements_request,
    dumps,
    envelope_request,
    program_request,
)
from g2p_bridge.api import disbursements as disbursements_api
from g2p_bridge.api.disbursements import created_answer
from g2p_bridge.api.g2p_connect import canonical_json
from g2p_bridge.api.lean_ingest import LeanDisbursement, lean_request
from g2p_bridge.api.wire import check_strings, parse_json, success_header
from g2p_bridge.core import disbursements as disbursements_core
from g2p_bridge.core.errors import InvalidRequest
from g2p_bridge.models import AuditEvent, Disbursement, EnvelopeStatus, ResolvedAddress
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import DisbursementPayload, DisbursementRequest, DisbursementResponse
from g2p_bridge.schemas import NonPlainNumber as _NonPlain

_FIELDS = LeanDisbursement._fields

# --- what the lean path takes, the full path takes, with the same values ----------------

_NASTY_TEXT = [
    "",
    " ",
    "x",
    " x",
    "x ",
    "\tx",
    "x\n",
    "a\x00b",
    "a\x7fb",
    "a\x85b",
    "\x85x",
    "x\xa0",
    "\u2028",
    "a\u2029b",
    "\u3000x",
    "x\u200b",
    "\u180ex",
    "\ufeffx",
    "Zoë Ñandú",
    "名前",
    'quote " and \\ backslash',
    "e\u0301",
    "d-1",
    "d/1",
    "d 1",
    "d-\u00e9",
    "D.1_2:3-4",
    "\u0661\u0662\u0663",
    "12.50",
]
_NASTY_AMOUNTS: list[Any] = [
    "100.00",
    "100",
    "0.001",
    "-5.00",
    " 1.00",
    "1.00 ",
    "1e2",
    "1_0.00",
    "\u0661\u0660\u0660",  # Arabic-Indic digits
    "\uff11\uff10\uff10",  # full-width digits
    "NaN",
    "Infinity",
    ".5",
    "5.",
    "+5",
    "",
    100,
    0,
    -3,
    2**70,
    True,
    False,
    Decimal("12.345"),
    Decimal("0.10"),
    _NonPlain("1E+1"),
    [],
    {},
    "9" * 30,
]


def _text(limit: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(_NASTY_TEXT),
        st.text(max_size=8),
        st.text(alphabet="abc .-_:/", max_size=limit + 2),
        st.integers(min_value=0, max_value=9).map(lambda n: "x" * (limit - 1 + n)),
        st.none(),
        st.integers(),
        st.booleans(),
    )


def _items(limit: int) -> st.SearchStrategy[dict[str, Any]]:
    optional = {
        "disbursement_id": _text(64),
        "disbursement_envelope_id": _text(64),
        "mis_reference_number": _text(128),
        "beneficiary_id": _text(256),
        "beneficiary_name": _text(256),
        "narrative": _text(512),
        "financial_address": _text(256),
        "disbursement_amount": st.sampled_from(_NASTY_AMOUNTS),
        "id": _text(8),
        "state": st.sampled_from([None, "RECEIVED"]),
        "receipt_time_stamp": st.sampled_from([None, "2026-01-01T00:00:00Z", "nope"]),
        "cancellation_status": st.sampled_from([None, "Cancelled", "x"]),
        "cancellation_time_stamp": st.sampled_from([None, "2026-01-01"]),
        "state_reason": st.sampled_from([None, "x"]),
        "response_error_codes": st.sampled_from([None, [], ["A"]]),
        "extra_field": st.sampled_from(["x", 1, None]),
    }
    del limit
    return st.fixed_dictionaries({}, optional=optional)


def _plain_item(i: int) -> dict[str, Any]:
    return {
        "disbursement_envelope_id": "env-1",
        "disbursement_id": f"d-{i:06d}",
        "beneficiary_id": f"ben-{i}",
        "beneficiary_name": f"Beneficiary {i}",
        "disbursement_amount": "100.25",
        "financial_address": f"account:ACC{i:08d}@NORTHBANK.BR1",
        "mis_reference_number": f"mis-{i}",
        "narrative": "November cash transfer",
    }


def _body(items: list[Any], **header: Any) -> dict[str, Any]:
    return {
        "header": {
            "message_id": "m-1",
            "message_ts": "2026-12-01T00:00:00Z",
            "action": "create_disbursements",
            "sender_id": "pbms-1",
            "total_count": len(items),
            **header,
        },
        "message": items,
    }


def _full(data: Any, limit: int) -> DisbursementRequest | None:
    """The full path's reading: the string guard, then the schema."""
    try:
        check_strings(data, limit)
        return DisbursementRequest.model_validate(data)
    except (InvalidRequest, ValidationError):
        return None


def _agrees(data: Any, limit: int) -> bool:
    """Whether the lean path took ``data``; it fails the test where it took what the full path
    refuses, or read a value differently."""
    lean = lean_request(data, limit)
    if lean is None:
        return False
    full = _full(data, limit)
    assert full is not None, data
    assert lean.header == full.header
    assert lean.signature == full.signature
    assert len(lean.message) == len(full.message)
    for mine, theirs in zip(lean.message, full.message, strict=True):
        for name in _FIELDS:
            value, expected = getattr(mine, name), getattr(theirs, name)
            assert type(value) is type(expected), (name, value, expected)
            assert value == expected, (name, value, expected)
            if isinstance(value, Decimal):
                assert str(value) == str(expected), (name, value, expected)
        # The fields the lean path does not carry: the schema reads them as null too.
        for name in set(DisbursementPayload.model_fields) - set(_FIELDS) - {"id"}:
            assert getattr(theirs, name) is None, name
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(_items(1024), min_size=0, max_size=3),
    limit=st.sampled_from([1024, 16, 30]),
)
def test_what_the_lean_path_takes_the_schema_takes_alike(items: list[Any], limit: int) -> None:
    # Through the wire's own parser, as a request arrives (numbers as exact Decimals).
    _agrees(parse_json(dumps(_body(items)).encode()), limit)


@st.composite
def _near_plain_items(draw: st.DrawFn) -> dict[str, Any]:
    """A plain item with a field or two changed: mostly taken, so the values are compared."""
    item = _plain_item(draw(st.integers(min_value=0, max_value=999)))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        field = draw(st.sampled_from([*item, "disbursement_amount", "id", "extra_field"]))
        pool = _NASTY_AMOUNTS if field == "disbursement_amount" else [*_NASTY_TEXT, None]
        item[field] = draw(st.sampled_from(pool))
    return item


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(_near_plain_items(), min_size=1, max_size=4),
    limit=st.sampled_from([1024, 20]),
)
def test_near_plain_items_are_read_alike(items: list[Any], limit: int) -> None:
    _agrees(parse_json(dumps(_body(items)).encode()), limit)


@pytest.mark.parametrize(
    "data",
    [
        [],
        "x",
        {"message": "x"},
        {"header": {}, "message": []},
        _body([_plain_item(1)], total_count="1"),
        _body([_plain_item(1)], total_count=True),
        _body([_plain_item(1)], message_id="m 1"),
        _body([_plain_item(1)], message_id="m\n1"),
        _body([_plain_item(1)], meta={"k\x00": 1}),
        _body([_plain_item(1)], meta={"k": "v\u2028"}),
        _body([_plain_item(1)], meta={"k": "v" * 2000}),
        {**_body([_plain_item(1)]), "signature": 5},
        {**_body([_plain_item(1)]), "signature": "s"},
        {**_body([_plain_item(1)]), "extra": ["\x01"]},
        _body([_plain_item(1), "x"]),
        # NUL, which the lean path joins a column's values with, inside a value.
        _body([{**_plain_item(1), "disbursement_envelope_id": "a\x00b"}]),
        _body([_plain_item(1), {**_plain_item(2), "disbursement_id": "d-1\x00d-2"}]),
        _body([{**_plain_item(1), "disbursement_amount": "1.00\x002.00"}]),
        _body([_plain_item(1), {**_plain_item(2), "beneficiary_name": "a\x00b"}]),
        _body([{**_plain_item(1), "narrative": "x\x00"}, _plain_item(2)]),
        _body([{k: v for k, v in _plain_item(1).items() if k != "disbursement_id"}]),
        _body([_plain_item(1), None]),
        _body([[_plain_item(1)]]),
    ],
)
def test_odd_bodies_are_left_to_the_full_path_or_read_alike(data: Any) -> None:
    _agrees(data, 1024)


def test_plain_requests_take_the_lean_path() -> None:
    """What a PBMS sends (pbms_client, numbers or strings for amounts) is taken: else the
    lean path would be correct and useless."""
    items = [_plain_item(i) for i in range(50)]
    items[1]["disbursement_amount"] = Decimal("12.50")
    items[2]["disbursement_amount"] = 7
    items[3]["beneficiary_name"] = 'Zoë "Ñandú" \\ 名前'
    del items[4]["disbursement_id"]
    items[5]["financial_address"] = None
    assert _agrees(parse_json(dumps(_body([_plain_item(1)])).encode()), 1024)
    without_ids = [{k: v for k, v in item.items() if k != "disbursement_id"} for item in items]
    assert _agrees(parse_json(dumps(_body(without_ids)).encode()), 1024)
    body = parse_json(dumps(_body(items, meta={"any": [1, 2.5, "x"]})).encode())
    assert _agrees(body, 1024)
    assert _agrees(parse_json(dumps(_body(items)).encode()), 1024)


def test_no_character_pydantic_strips_is_one_the_lean_path_keeps() -> None:
    """The lean path keeps a value only when Python's strip() leaves it alone; every character
    pydantic's str_strip_whitespace strips must therefore be one Python strips too."""
    adapter = TypeAdapter(list[DisbursementPayload])
    characters = [
        chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and chr(c) != "x"
    ]
    for start in range(0, len(characters), 50_000):
        chunk = characters[start : start + 50_000]
        read = adapter.validate_python([{"beneficiary_name": f"{c}x{c}"} for c in chunk])
        for character, item in zip(chunk, read, strict=True):
            if item.beneficiary_name != f"{character}x{character}":
                assert character.isspace(), hex(ord(character))


# --- the answer, written from tuples, is the model's ------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(_near_plain_items(), min_size=1, max_size=4),
    microsecond=st.integers(min_value=0, max_value=999_999),
)
def test_the_answer_is_the_models_byte_for_byte(items: list[Any], microsecond: int) -> None:
    data = parse_json(dumps(_body(items)).encode())
    lean = lean_request(data, 1024)
    assume(lean is not None)
    assert lean is not None
    full = DisbursementRequest.model_validate(data)
    rows: list[dict[str, object]] = [
        {
            "id": item.disbursement_id or f"gen-{index}",
            "state": "RESOLVED" if index % 2 else "UNRESOLVED",
            "state_reason": None if index % 2 else "financial address 'x' matches no known format",
        }
        for index, item in enumerate(lean.message)
    ]
    stored = disbursements_core.Stored(rows, utcnow().replace(microsecond=microsecond))
    header = success_header(full.header, len(rows))
    expected = DisbursementResponse(
        header=header, message=disbursements_core.as_stored(full.message, stored)
    )
    assert created_answer(header, lean.message, stored) == expected.model_dump_json().encode()


@settings(max_examples=300, deadline=None)
@given(amount=st.decimals(allow_nan=False, allow_infinity=False))
def test_an_amount_is_written_as_pydantic_writes_it(amount: Decimal) -> None:
    assert orjson.dumps([amount], default=str) == b"[" + to_json(amount) + b"]"


# --- the digest --------------------------------------------------------------------------

_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.decimals(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: _NonPlain(str(d))),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def _json_dumps(value: Any) -> bytes | type[BaseException]:
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return text.encode()
    except Exception as exc:  # the kind of failure is what is compared
        return type(exc)


def _canonical(value: Any) -> bytes | type[BaseException]:
    try:
        return canonical_json(value)
    except Exception as exc:
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(value=_json_values)
def test_the_digest_is_jsons_byte_for_byte(value: Any) -> None:
    assert _canonical(["create_disbursements", value]) == _json_dumps(
        ["create_disbursements", value]
    )


def test_the_digest_of_deep_or_odd_values_is_jsons() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    for value in (deep, {"\ud800": 1}, "\udfff", 2**64, -(2**63) - 1, {"b": 1, "a": 2, "é": 3}):
        assert _canonical(value) == _json_dumps(value)


# --- the same request answered both ways --------------------------------------------------


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Clock and generated ids fixed, so that two runs of one request can be compared."""
    state: dict[str, Any] = {"now": utcnow()}

    def reset() -> None:
        counter = itertools.count()
        monkeypatch.setattr(disbursements_core, "new_id", lambda: f"gen-{next(counter):04d}")

    monkeypatch.setattr(disbursements_core, "utcnow", lambda: state["now"])
    monkeypatch.setattr("g2p_bridge.schemas.utcnow", lambda: state["now"])
    state["reset"] = reset
    return state


def _lean_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disbursements_api, "lean_request", lambda *_: None)


def _without_clock(answer: Any) -> Any:
    answer["header"].pop("message_ts", None)
    return answer


def _snapshot(session_factory: Any) -> dict[str, Any]:
    with session_factory() as session:
        return {
            "disbursements": [
                {c.name: getattr(r, c.key) for c in Disbursement.__table__.columns}
                for r in session.scalars(select(Disbursement).order_by(Disbursement.id))
            ],
            "addresses": [
                {c.name: getattr(r, c.key) for c in ResolvedAddress.__table__.columns}
                for r in session.scalars(
                    select(ResolvedAddress).order_by(ResolvedAddress.disbursement_id)
                )
            ],
            "counters": [
                (s.received_count, s.received_amount, s.failed_count)
                for s in session.scalars(select(EnvelopeStatus))
            ],
            "audit": [
                (e.action, e.detail)
                for e in session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.action == "disbursements.create")
                    .order_by(AuditEvent.id)
                )
            ],
        }


def _items_of_every_kind(envelope_id: str) -> list[dict[str, Any]]:
    items = disbursement_items(envelope_id, 8, amount="10.50")
    items[0]["disbursement_amount"] = Decimal("12.25")
    items[1]["disbursement_amount"] = 9
    items[2]["beneficiary_name"] = 'Zoë "Ñandú" \\ 名前 e\u0301'
    del items[3]["disbursement_id"]
    del items[4]["disbursement_id"]
    items[5]["financial_address"] = "nobody-knows-this-format"
    items[6]["financial_address"] = None
    items[7]["mis_reference_number"] = None
    return items


def test_a_request_gets_the_same_answer_and_rows_both_ways(
    client: Any, engine: Any, session_factory: Any, frozen: dict[str, Any], monkeypatch: Any
) -> None:
    body = disbursements_request(_items_of_every_kind("env-1"), message_id="m-same")
    results = []
    for lean_path in (True, False):
        clear_tables(engine)
        if not lean_path:
            _lean_off(monkeypatch)
        assert client.post("/create_benefit_program_configuration", program_request()).is_success
        created = client.post(
            "/create_disbursement_envelope", envelope_request("env-1", count=20, total="1000.00")
        )
        assert created.status_code == 200, created.text
        frozen["reset"]()
        answer = client.post("/create_disbursements", body)
        assert answer.status_code == 200, answer.text
        replay = client.post("/create_disbursements", body)
        assert replay.content == answer.content
        results.append((answer.content, _snapshot(session_factory)))
    (lean_answer, lean_rows), (full_answer, full_rows) = results
    assert lean_answer == full_answer
    assert lean_rows == full_rows
    states = {i["state"] for i in json.loads(lean_answer)["message"]}
    assert states == {"RESOLVED", "UNRESOLVED"}


@pytest.mark.parametrize(
    "change",
    [
        {0: {"disbursement_amount": "10.505"}},  # minor units
        {1: {"disbursement_amount": "-1.00"}, 2: {"beneficiary_name": ""}},
        {0: {"disbursement_id": "d-dup"}, 1: {"disbursement_id": "d-dup"}},
        {0: {"disbursement_id": "d-taken"}},  # stored by the first request
        {0: {"disbursement_envelope_id": "env-none"}},  # two envelopes
        {"all": {"disbursement_envelope_id": "env-none"}},  # no such envelope
        {"all": {"disbursement_amount": "400.00"}},  # over the declared total
        {0: {"disbursement_id": "d 1"}},  # refused by the schema: the full path
        {0: {"beneficiary_name": "x\n"}},  # refused by the string guard
        {"header": {"total_count": 3}},
        {"header": {"sender_id": "someone-else"}},
    ],
)
def test_a_refused_request_gets_the_same_refusal_both_ways(
    client: Any, session_factory: Any, frozen: dict[str, Any], monkeypatch: Any, change: Any
) -> None:
    assert client.post("/create_benefit_program_configuration", program_request()).is_success
    created = client.post(
        "/create_disbursement_envelope", envelope_request("env-1", count=10, total="1000.00")
    )
    assert created.status_code == 200, created.text
    first = disbursement_items("env-1", 1, amount="10.00")
    first[0]["disbursement_id"] = "d-taken"
    assert client.post("/create_disbursements", disbursements_request(first)).status_code == 200
    items = disbursement_items("env-1", 4, amount="10.00")
    body = disbursements_request(items, message_id="m-refused")
    for where, fields in change.items():
        if where == "header":
            body["header"].update(fields)
        for index in range(len(items)) if where == "all" else [where] if where != "header" else []:
            items[index].update(fields)
    before = _snapshot(session_factory)
    answers = []
    for lean_path in (True, False):
        if not lean_path:
            _lean_off(monkeypatch)
        frozen["reset"]()
        answer = client.post("/create_disbursements", body)
        assert answer.status_code >= 400, answer.text
        answers.append((answer.status_code, _without_clock(answer.json())))
        assert _snapshot(session_factory) == before
    assert answers[0] == answers[1]
