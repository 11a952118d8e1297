"""The operators' console at ``/console``: server-rendered pages over the same domain functions
as the API, for the people who run a payroll day (see routes.py)."""

from __future__ import annotations

from fastapi import FastAPI


def mount_console(app: FastAPI) -> None:
    from g2p_bridge.console import oidc, payroll
    from g2p_bridge.console.routes import install

    install(app)
    payroll.install(app)
    oidc.install(app)


__all__ = ["mount_console"]
