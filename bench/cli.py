"""``python -m bench.run`` (or ``python -m bench.cli``): the command line of one bench run."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.config import CHANNELS, FAULTS, BenchConfig
from bench.harness import run_bench
from bench.report import render_markdown


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="End-to-end benchmark of the bridge and the Example Bank, one OS process each.",
    )
    p.add_argument("--n", type=int, help="disbursements in the envelope")
    p.add_argument("--batch", type=int, help="disbursements per HTTP request")
    p.add_argument("--failure-rate", type=float)
    p.add_argument("--backend", choices=("postgres", "embedded"))
    p.add_argument(
        "--channel",
        choices=CHANNELS,
        help="the bank's JSON API, or ISO 20022 files over its SFTP endpoint",
    )
    p.add_argument("--workers", type=int, help="g2p-bridge worker processes")
    p.add_argument("--api-workers", type=int, help="g2p-bridge api processes")
    p.add_argument("--worker-concurrency", type=int)
    p.add_argument("--bank-concurrency", type=int)
    p.add_argument("--clients", type=int, help="concurrent client threads")
    p.add_argument(
        "--envelopes",
        type=int,
        help="split N evenly over this many envelopes, submitted concurrently",
    )
    p.add_argument(
        "--programs",
        type=int,
        help="programs the envelopes come from, each its own account (default min(envelopes, 5))",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--timeout", type=float, help="overall limit in seconds")
    p.add_argument("--stall-timeout", type=float)
    p.add_argument("--beat-interval", type=float)
    p.add_argument("--dispatch-batch", type=int)
    p.add_argument("--mapper-batch", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--redis-db-bridge", type=int, help="default: claim a free one")
    p.add_argument("--redis-db-bank", type=int, help="default: claim a free one")
    p.add_argument("--keep-db", action="store_true", help="do not drop the databases afterwards")
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor (a COPY and an UPDATE ... FROM of N rows after the run, postgres)",
    )
    p.add_argument(
        "--no-vacuum",
        action="store_true",
        help="skip measuring the bridge database after VACUUM and VACUUM FULL (postgres)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy record every component")
    p.add_argument("--profile-svg", action="store_true", help="also write flamegraph SVGs")
    p.add_argument("--profile-rate", type=int, help="py-spy samples per second")
    p.add_argument("--no-latest", action="store_true", help="do not overwrite latest.json")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--fault",
        action="append",
        choices=sorted(FAULTS),
        default=[],
        help="inject a fault (repeatable): "
        + "; ".join(f"{name}: {what}" for name, what in FAULTS.items()),
    )
    p.add_argument("--bank-timeout", type=float, help="bridge's bank timeout (s)")
    p.add_argument("--outage-seconds", type=float)
    p.add_argument("--ingest-attempts", type=int)
    p.add_argument(
        "--ingest-retry-budget",
        type=float,
        help="per request, the longest the client waits out 503 Retry-After answers (s)",
    )
    # BenchConfig's defaults are the only ones: a second copy here once ran every `make bench`
    # with 2 worker children while the config (and the docs) said 4.
    defaults = BenchConfig()
    p.set_defaults(**{f.name: getattr(defaults, f.name) for f in fields(BenchConfig)})
    a = p.parse_args(argv)
    # A flag named like a BenchConfig field (--worker-concurrency: worker_concurrency) sets it;
    # a new scenario option is a field there and an add_argument here. The rest are spelt
    # differently on the command line.
    spelt_otherwise = {
        "profile",
        "profile_formats",
        "write_latest",
        "faults",
        "floor",
        "vacuum",
    }
    same = {
        f.name: getattr(a, f.name)
        for f in fields(BenchConfig)
        if hasattr(a, f.name) and f.name not in spelt_otherwise
    }
    return BenchConfig(
        **same,
        floor=not a.no_floor,
        vacuum=not a.no_vacuum,
        profile=a.profile or a.profile_svg,
        profile_formats=(("raw", "txt"), ("flamegraph", "svg"))
        if a.profile_svg
        else (("raw", "txt"),),
        write_latest=not a.no_latest,
        faults=tuple(a.fault),
    )


def exit_on_sigterm() -> None:
    """SIGTERM ends the run as Ctrl-C does: through its clean-up, which stops what it started."""

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    exit_on_sigterm()
    result = run_bench(cfg)
    print(render_markdown(result))
    print(f"results: {result.get('run_dir')} and {cfg.out / 'latest.json'}")
    return 0 if result.get("correct") else 1


if __name__ == "__main__":
    sys.exit(main())
