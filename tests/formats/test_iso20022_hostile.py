"""Hostile and broken XML: each is one clear ISO20022Error, never a crash, a hang or a lookup."""

from __future__ import annotations

import io
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from iso20022_schemas import SAMPLES

from g2p_bridge.formats.iso20022 import ISO20022Error, Limits, iter_camt, iter_status_report

CAMT_NS = b"urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
Reader = Callable[..., Iterator[Any]]


def refused(document: bytes | io.RawIOBase, reader: Reader = iter_camt, **kwargs: Any) -> str:
    source = io.BytesIO(document) if isinstance(document, bytes) else document
    with pytest.raises(ISO20022Error) as info:
        list(reader(source, **kwargs))
    return info.value.reason


def with_doctype(doctype: str, body: str = "&x;") -> bytes:
    return (
        f'<?xml version="1.0"?>\n{doctype}\n<Document xmlns="{CAMT_NS.decode()}">'
        f"<BkToCstmrStmt><GrpHdr><MsgId>{body}</MsgId></GrpHdr></BkToCstmrStmt></Document>"
    ).encode()


@pytest.mark.parametrize("reader", [iter_camt, iter_status_report])
def test_external_file_entity_is_not_resolved(reader: Reader) -> None:
    reason = refused(with_doctype('<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'), reader)
    assert "DOCTYPE" in reason and "root:" not in reason


def test_external_http_entity_and_dtd_are_never_fetched() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        for doctype in (
            f'<!DOCTYPE d [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]>',
            f'<!DOCTYPE d SYSTEM "http://127.0.0.1:{port}/d.dtd">',
            f'<!DOCTYPE d [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p"> %p;]>',
        ):
            assert "DOCTYPE" in refused(with_doctype(doctype))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert connections == []


def test_billion_laughs_is_refused_quickly() -> None:
    entities = ['<!ENTITY a0 "lol">'] + [
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    ]
    document = with_doctype(f"<!DOCTYPE d [{''.join(entities)}]>", "&a9;")
    started = time.monotonic()
    assert "DOCTYPE" in refused(document)
    assert time.monotonic() - started < 2


def test_entity_expansion_in_a_root_attribute_is_stopped_by_libxml2() -> None:
    # Attribute values are expanded while the root start tag is parsed, before the DOCTYPE
    # check can run; libxml2's amplification limit stops it.
    entities = ['<!ENTITY a0 "lol">'] + [
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 12)
    ]
    document = (
        f'<?xml version="1.0"?><!DOCTYPE d [{"".join(entities)}]>'
        f'<Document xmlns="{CAMT_NS.decode()}" a="&a11;"><BkToCstmrStmt/></Document>'
    ).encode()
    started = time.monotonic()
    assert "amplification" in refused(document)
    assert time.monotonic() - started < 2


def test_any_doctype_is_refused() -> None:
    assert "DOCTYPE" in refused(with_doctype("<!DOCTYPE Document>", "M"))


def test_camt_sample_is_accepted_so_the_refusals_above_are_meaningful() -> None:
    with (SAMPLES / "camt.053.001.08.xml").open("rb") as file:
        assert len(list(iter_camt(file))) == 1


class _Generated(io.RawIOBase):
    """A file that produces its content on demand, so a 50 MB input never exists in memory."""

    def __init__(self, head: bytes, filler: bytes, size: int, tail: bytes) -> None:
        self.parts = iter([head])
        self.head, self.filler, self.left, self.tail = head, filler, size, tail
        self.pending = head
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            if self.left > 0:
                chunk = min(self.left, 1 << 16)
                self.pending = (self.filler * (chunk // len(self.filler) + 1))[:chunk]
                self.left -= chunk
            else:
                self.pending, self.tail = self.tail, b""
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.read_bytes += n
        return n


def _huge_text(size: int) -> _Generated:
    head = b'<Document xmlns="' + CAMT_NS + b'"><BkToCstmrStmt><GrpHdr><MsgId>'
    return _Generated(head, b"A", size, b"</MsgId></GrpHdr></BkToCstmrStmt></Document>")


def test_a_50_mb_text_node_is_refused_quickly_with_bounded_memory() -> None:
    source = _huge_text(50 * 1024 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    reason = refused(source)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "exceeds a parser limit" in reason and "Text node too long" in reason
    # libxml2 stops at its 10 MB text limit: most of the 50 MB is never read.
    assert source.read_bytes < 20 * 1024 * 1024
    assert elapsed < 5 and grown_mb < 100


def test_text_limit_is_configurable() -> None:
    reason = refused(_huge_text(5000), limits=Limits(max_text_chars=1000))  # type: ignore[arg-type]
    assert "text of element MsgId is longer than 1000 characters" in reason


def test_deep_nesting_is_refused() -> None:
    depth = 100_000
    document = (
        b'<Document xmlns="' + CAMT_NS + b'"><BkToCstmrStmt>'
        + b"<a>" * depth + b"</a>" * depth + b"</BkToCstmrStmt></Document>"
    )  # fmt: skip
    assert "nested deeper than 40 levels" in refused(document)
    assert "nested deeper than 5" in refused(document, limits=Limits(max_depth=5))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b'<Document xmlns="urn:example:camt"/>', "is not an ISO 20022 message namespace"),
        (b"<Document/>", "not an ISO 20022 Document"),
        (b'<Stmt xmlns="' + CAMT_NS + b'"/>', "not an ISO 20022 Document"),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.04"/>',
            "camt.053.001.04 is a version of camt.053 this reader does not support; "
            "supported: camt.053.001.02, camt.053.001.08",
        ),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>',
            "the document is pain.001.001.09, not one of camt.053.001.02",
        ),
        (
            b'<Document xmlns="' + CAMT_NS + b'"><BkToCstmrDbtCdtNtfctn/></Document>',
            "holds BkToCstmrDbtCdtNtfctn, not BkToCstmrStmt",
        ),
        (b"", "not a well-formed XML document"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a well-formed XML document"),
        (b'{"statements": []}', "not a well-formed XML document"),
        (b"MT940\n:20:REF\n:25:123\n", "not a well-formed XML document"),
        (b'<Document xmlns="' + CAMT_NS + b'"><BkToCstmrStmt><GrpHdr>', "not a well-formed"),
        (
            b'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="' + CAMT_NS + b'">\xff\xfe'
            b"</Document>",
            "not a well-formed",
        ),
    ],
)
def test_wrong_or_broken_documents_are_refused_by_name(document: bytes, expected: str) -> None:
    assert expected in refused(document)


def test_truncated_sample_is_refused() -> None:
    document = (SAMPLES / "camt.053.001.08.xml").read_bytes()
    for cut in (len(document) // 3, len(document) - 20):
        assert "not a well-formed" in refused(document[:cut])


def test_pain002_reader_refuses_a_statement() -> None:
    document = (SAMPLES / "camt.053.001.08.xml").read_bytes()
    assert "not one of pain.002.001.03, pain.002.001.10" in refused(document, iter_status_report)


def test_a_path_or_bytes_instead_of_a_file_is_refused() -> None:
    with pytest.raises(ISO20022Error, match="open binary file object"):
        list(iter_camt("/etc/passwd"))  # type: ignore[arg-type]
    with pytest.raises(ISO20022Error, match="open binary file object"):
        list(iter_camt(b"<Document/>"))  # type: ignore[arg-type]
    with pytest.raises(ISO20022Error, match="not a PosixPath"):
        list(iter_camt(SAMPLES / "camt.054.001.08.xml"))  # type: ignore[arg-type]
