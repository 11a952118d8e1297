"""End-to-end benchmark: the bridge and the Example Bank, every component its own OS process.

    python -m bench.run --n 10000 --batch 5000 --failure-rate 0.05 --backend postgres

``postgres`` backend: fresh PostgreSQL databases for the bridge and the bank (unique names,
migrated), two flushed Redis databases as brokers, and the processes ``g2p-bridge api``,
``g2p-bridge beat``, ``g2p-bridge worker`` (``--workers`` of them), ``example-bank api`` and
``example-bank worker``. ``embedded`` backend: ``g2p-bridge api`` and ``example-bank api`` only,
each on its own fresh SQLite file (they run their pipelines in-process).

The harness funds a program account at the bank, configures a program with the inline resolver,
creates one envelope of N disbursements and submits them over HTTP in requests of ``--batch``
from ``--clients`` threads. It then watches the envelope's counters until everything is shipped
and settled, checks the outcome against the databases (one bank payment per shipped
disbursement, counters equal rows, ledger balanced, exactly the expected reversals), and writes
``result.json`` / ``result.md`` in a run directory plus ``latest.json`` / ``latest.md`` in the
results directory. Every process it started is stopped on the way out (SIGTERM, then SIGKILL).

The package, by concern: ``config`` (scenario options, faults), ``harness`` (the phases),
``processes``, ``sampling`` (memory, CPU), ``postgres`` (databases), ``workload``, ``faults``,
``checks``, ``report`` (result files), ``cli``.
"""

from __future__ import annotations

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
