"""The one way this package reads XML: hardened, streaming, and strict about what it accepts.

Bank files arrive over SFTP or HTTP from systems we do not control, so every reader goes through
:func:`secure_events`, which

* never resolves an entity, loads a DTD or touches the network, and refuses a document that has a
  DOCTYPE at all (ISO 20022 messages never carry one; a DOCTYPE is only ever an attack or a
  mistake, and refusing it is simpler to reason about than neutralising it);
* keeps libxml2's own limits on (``huge_tree=False``: text nodes and names are capped at 10 MB and
  nesting at 256 levels), and adds tighter, explicit ones (:class:`Limits`) that fit these
  messages, whose longest text field is 2,048 characters and whose deepest element is about 15
  levels down;
* checks the root element's namespace against the message types and versions the caller
  supports, before anything else is read.

Every problem, from a syntax error to a wrong version, becomes an :class:`ISO20022Error`; no other
exception type escapes for bad input.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import IO

from lxml import etree

__all__ = ["ISO20022Error", "Limits", "MessageId", "secure_events"]

NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"
_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:([a-z]{4}\.\d{3})\.\d{3}\.\d{2}")


class ISO20022Error(ValueError):
    """The input is not an ISO 20022 message this package accepts, or an output would be wrong.

    ``reason`` is the human-readable cause; it names what was found (a version, an element, a
    limit) so that an operator can act on it without opening the file.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on an input document, tighter than libxml2's own.

    ``max_text_chars`` is checked when an element ends, so a text node is held in memory up to
    libxml2's 10 MB cap before it is refused; ``max_depth`` is checked as elements start.
    """

    max_text_chars: int = 4096
    max_depth: int = 40


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class MessageId:
    """What the root namespace says the document is."""

    message: str  # "camt.053"
    name: str  # "camt.053.001.08": the message with its variant and version
    namespace: str

    def __str__(self) -> str:
        return self.name


def identify(namespace: str) -> MessageId | None:
    match = _NAMESPACE.fullmatch(namespace)
    if match is None:
        return None
    message = match.group(1)
    return MessageId(message, namespace[len(NAMESPACE_PREFIX) :], namespace)


def secure_events(
    source: IO[bytes],
    supported: dict[str, frozenset[str]],
    limits: Limits = DEFAULT_LIMITS,
    max_yield_depth: int = 4,
) -> Iterator[tuple[str, etree._Element, int, MessageId]]:
    """Yield ``(event, element, depth, message id)`` for "start" and "end" events.

    ``supported`` maps message types to the full names of their accepted versions, e.g.
    ``{"camt.053": frozenset({"camt.053.001.02", "camt.053.001.08"})}``. The root ``Document``
    has depth 1.
    Callers free what they have read (``element.clear()``) to keep memory flat. Events deeper
    than ``max_yield_depth`` are checked but not yielded: the readers take each entry as a
    subtree when it ends, and most events of a statement are inside entries.
    """
    if isinstance(source, str | bytes | bytearray | os.PathLike):
        # A path or a document passed by mistake would be read as a file name by lxml.
        raise ISO20022Error(
            f"expected an open binary file object, not a {type(source).__name__} "
            "(a str or bytes would be taken as a file name)"
        )
    parser = etree.iterparse(
        source,
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=False,
    )
    depth = 0
    message: MessageId | None = None
    try:
        for event, element in parser:
            if event == "start":
                depth += 1
                if message is None:
                    message = _check_root(element, supported)
                if depth > limits.max_depth:
                    raise ISO20022Error(
                        f"elements nested deeper than {limits.max_depth} levels "
                        f"(at {etree.QName(element).localname})"
                    )
            else:
                text = element.text
                if text is not None and len(text) > limits.max_text_chars:
                    raise ISO20022Error(
                        f"text of element {etree.QName(element).localname} is longer than "
                        f"{limits.max_text_chars} characters"
                    )
            if depth <= max_yield_depth:
                if message is None:  # set at the first start event; cannot be missing
                    raise ISO20022Error("an element came before the document's root")
                yield event, element, depth, message
            if event == "end":
                depth -= 1
    except etree.XMLSyntaxError as exc:
        if "limit exceeded" in str(exc).lower():
            # libxml2's own bounds (huge_tree=False): a text node over 10 MB, nesting over 256.
            raise ISO20022Error(f"the document exceeds a parser limit: {exc}") from exc
        raise ISO20022Error(f"not a well-formed XML document: {exc}") from exc
    except (etree.LxmlError, UnicodeError, OSError, MemoryError) as exc:
        raise ISO20022Error(f"cannot read the XML document: {type(exc).__name__}: {exc}") from exc
    if message is None:
        raise ISO20022Error("the document has no root element")


def _check_root(root: etree._Element, supported: dict[str, frozenset[str]]) -> MessageId:
    docinfo = root.getroottree().docinfo
    # lxml-stubs 0.5.1 does not declare DocInfo.doctype.
    doctype = docinfo.doctype  # type: ignore[attr-defined]
    if doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ISO20022Error(
            "the document has a DOCTYPE declaration; ISO 20022 messages never do, and a DTD "
            "is not read here"
        )
    qname = etree.QName(root)
    wanted = ", ".join(name for _, names in sorted(supported.items()) for name in sorted(names))
    if qname.localname != "Document" or qname.namespace is None:
        raise ISO20022Error(
            f"root element is {root.tag!r}, not an ISO 20022 Document; expected one of {wanted}"
        )
    message = identify(qname.namespace)
    if message is None:
        raise ISO20022Error(
            f"namespace {qname.namespace!r} is not an ISO 20022 message namespace; "
            f"expected one of {wanted}"
        )
    versions = supported.get(message.message)
    if versions is None:
        raise ISO20022Error(f"the document is {message}, not one of {wanted}")
    if message.name not in versions:
        raise ISO20022Error(
            f"{message.name} is a version of {message.message} this reader does not support; "
            f"supported: {', '.join(sorted(versions))}"
        )
    return message


# -- values ------------------------------------------------------------------------------------

_AMOUNT = re.compile(r"\d{1,18}(\.\d{1,17})?")
_NUMBER = re.compile(r"\d{1,18}")


def parse_amount(text: str | None, where: str) -> Decimal:
    """An xs:decimal amount as ISO 20022 writes it: digits, optional fraction, no sign/exponent."""
    value = (text or "").strip()
    if not _AMOUNT.fullmatch(value):
        raise ISO20022Error(f"{where}: {value[:40]!r} is not an amount")
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ISO20022Error(f"{where}: {value[:40]!r} is not an amount") from exc


def parse_number(text: str | None, where: str) -> int:
    value = (text or "").strip()
    if not _NUMBER.fullmatch(value):
        raise ISO20022Error(f"{where}: {value[:40]!r} is not a whole number")
    return int(value)


def parse_date(text: str | None, where: str) -> date:
    value = (text or "").strip()
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ISO20022Error(f"{where}: {value[:40]!r} is not a date (YYYY-MM-DD)") from exc


def parse_datetime(text: str | None, where: str) -> datetime:
    value = (text or "").strip()
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ISO20022Error(f"{where}: {value[:40]!r} is not a date and time") from exc


class Paths:
    """Namespace-qualified ElementPath expressions, built once per document namespace."""

    __slots__ = ("_cache", "_ns")

    def __init__(self, namespace: str) -> None:
        self._ns = "{" + namespace + "}"
        self._cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        qualified = self._cache.get(path)
        if qualified is None:
            qualified = "/".join(self._ns + step for step in path.split("/"))
            self._cache[path] = qualified
        return qualified

    def text(self, element: etree._Element, path: str) -> str | None:
        """The stripped text at ``path``, or None when the element is absent or empty."""
        found = element.find(self(path))
        if found is None or found.text is None:
            return None
        return found.text.strip() or None

    def texts(self, element: etree._Element, path: str) -> list[str]:
        return [t.strip() for e in element.iterfind(self(path)) if (t := e.text) and t.strip()]

    def index(self, element: etree._Element, skip: frozenset[str] = frozenset()) -> Index:
        """Every descendant of ``element`` by its relative path ("Refs/EndToEndId").

        One walk over a small subtree (an entry has a few dozen elements) instead of one
        ElementPath search per field: this made reading a statement about five times faster.
        Children of ``element`` named in ``skip`` are not descended into.
        """
        found: dict[str, list[etree._Element]] = {}
        prefix_length = len(self._ns)
        # Breadth first, so that elements sharing a path stay in document order.
        queue: deque[tuple[etree._Element, str]] = deque([(element, "")])
        while queue:
            node, prefix = queue.popleft()
            for child in node:
                tag = child.tag
                if not isinstance(tag, str) or not tag.startswith(self._ns):
                    continue  # comments, and elements of other namespaces (SplmtryData)
                name = tag[prefix_length:]
                if not prefix and name in skip:
                    continue
                path = prefix + name
                found.setdefault(path, []).append(child)
                if len(child):
                    queue.append((child, path + "/"))
        return Index(found)

    def local(self, element: etree._Element) -> str:
        tag = element.tag
        if isinstance(tag, str) and tag.startswith(self._ns):
            return tag[len(self._ns) :]
        return ""


class Index:
    """What :meth:`Paths.index` found: elements by relative path, in document order per path."""

    __slots__ = ("_found",)

    def __init__(self, found: dict[str, list[etree._Element]]) -> None:
        self._found = found

    def element(self, path: str) -> etree._Element | None:
        elements = self._found.get(path)
        return elements[0] if elements else None

    def all(self, path: str) -> list[etree._Element]:
        return self._found.get(path, [])

    def text(self, path: str) -> str | None:
        elements = self._found.get(path)
        if not elements or elements[0].text is None:
            return None
        return elements[0].text.strip() or None

    def texts(self, path: str) -> list[str]:
        return [t.strip() for e in self._found.get(path, ()) if (t := e.text) and t.strip()]

    def below(self, path: str) -> Index:
        """What lies under ``path``, by paths relative to it: a subtree's fields without
        walking the subtree again."""
        prefix = path + "/"
        cut = len(prefix)
        return Index({k[cut:]: v for k, v in self._found.items() if k.startswith(prefix)})
