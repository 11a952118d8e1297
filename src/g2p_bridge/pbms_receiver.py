"""A small receiving PBMS on 127.0.0.1: what ``g2p-bridge demo`` runs to show callbacks
arriving, and the receiver the tests break in various ways.

It does what the README asks of a real one: verify the detached JWS against the bridge's key
set, drop a callback whose event id it has already seen, and keep each envelope's highest
sequence number so a stale update could be told apart."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from g2p_bridge.signing import SIGNATURE_HEADER, verify

_MAX_BODY = 64 * 1024 * 1024


@dataclass
class Received:
    """What the receiver kept: every request in arrival order, and the de-duplicated view."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)  # event id -> first body
    duplicates: int = 0
    bad_signatures: int = 0
    results: dict[str, list[str]] = field(default_factory=dict)  # disbursement id -> statuses
    sequences: dict[str, list[int]] = field(default_factory=dict)  # envelope -> seqs, in order

    @property
    def result_count(self) -> int:
        return sum(len(v) for v in self.results.values())


class ReceivingPBMS:
    """Answers 200 to every validly signed callback. ``answer`` decides per request what to
    do instead (tests): "ok", an HTTP status as a string ("500"), "close" (drop the connection
    without an answer) or "hang" (answer only once :meth:`release` is called, or never)."""

    def __init__(self, jwks: dict[str, Any], port: int = 0) -> None:
        self.jwks = jwks
        self.received = Received()
        self.lock = threading.Lock()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the demo prints its own summary

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callbacks"

    def answer(self, body: bytes) -> str:
        return "ok"

    def release(self) -> None:
        self._released.set()

    def start(self) -> ReceivingPBMS:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ReceivingPBMS:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length") or 0)
        if not 0 < length <= _MAX_BODY:
            request.send_error(413)
            return
        body = request.rfile.read(length)
        action = self.answer(body)
        if action == "close":
            request.close_connection = True
            request.connection.close()
            return
        if action == "hang":
            self._released.wait(timeout=60)
            action = "ok"
        if action != "ok":
            request.send_response(int(action))
            request.send_header("content-length", "0")
            request.end_headers()
            return
        signature = request.headers.get(SIGNATURE_HEADER) or ""
        if not verify(signature, body, self.jwks):
            with self.lock:
                self.received.bad_signatures += 1
            request.send_response(401)
            request.send_header("content-length", "0")
            request.end_headers()
            return
        self._keep(body)
        request.send_response(200)
        request.send_header("content-type", "application/json")
        answer = b'{"status": "rcvd"}'
        request.send_header("content-length", str(len(answer)))
        request.end_headers()
        request.wfile.write(answer)

    def _keep(self, body: bytes) -> None:
        message = json.loads(body)["message"]
        event_id = message["event_id"]
        with self.lock:
            got = self.received
            got.requests.append(message)
            if event_id in got.bodies:
                got.duplicates += 1
                return
            got.bodies[event_id] = body
            envelope = message["disbursement_envelope_id"]
            got.sequences.setdefault(envelope, []).append(message["sequence"])
            for item in message.get("disbursements_status", []):
                got.results.setdefault(item["reference_id"], []).append(item["status"])
