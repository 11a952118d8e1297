"""The CLI's calls to a running bridge's API, all in this one place (``g2p-bridge envelopes
submit``): upload a payroll file, read an envelope's status. Plain httpx with a bearer token;
a PBMS client library, where the package has one, can take its place behind the same two
methods."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

UPLOAD_CHUNK = 256 * 1024
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ApiRefused(Exception):
    """The API answered with a refusal: its status, message and (for a file) faulty lines."""

    def __init__(self, status: int, message: str, lines: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.lines = lines


@dataclass
class BridgeApi:
    base_url: str
    token: str | None
    timeout: float = 300.0

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        header = body.get("header", {}) if isinstance(body, dict) else {}
        meta = header.get("meta") or {}
        message = meta.get("error_message") or header.get("status_reason_message")
        lines = body.get("message") if isinstance(body, dict) else None
        raise ApiRefused(
            response.status_code,
            str(message or f"HTTP {response.status_code}"),
            lines if isinstance(lines, list) else [],
        )

    def submit_payroll_file(
        self, path: Path, params: dict[str, str], sent: Callable[[int], None]
    ) -> dict[str, Any]:
        """Uploads the file as the request body, telling ``sent`` the bytes sent so far."""

        def body() -> Iterator[bytes]:
            done = 0
            with path.open("rb") as handle:
                while chunk := handle.read(UPLOAD_CHUNK):
                    done += len(chunk)
                    yield chunk
                    sent(done)

        content_type = XLSX_TYPE if path.suffix.lower() == ".xlsx" else "text/csv"
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(path.stat().st_size),
        }
        with self._client() as client:
            response = client.post(
                "/payroll_files",
                params={**params, "file_name": path.name},
                content=body(),
                headers=headers,
            )
        return self._answer(response)

    def envelope_status(self, envelope_id: str) -> dict[str, Any]:
        with self._client() as client:
            return self._answer(client.get(f"/envelopes/{envelope_id}/status"))
