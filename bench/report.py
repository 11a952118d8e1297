"""The run's result: ``result.json`` / ``result.md`` and the latest and summary files. A new
figure is a key of ``Bench.result``; to show it in the table add it to ``METRICS`` (and to
``SUMMARY_KEYS`` for runs.jsonl)."""

from __future__ import annotations

import json
from typing import Any

SUMMARY_KEYS = (
    "run_id",
    "n",
    "backend",
    "channel",
    "ingest_per_s",
    "ingest_p50_s",
    "ingest_p99_s",
    "ingest_api_cpu_ms_per_disbursement",
    "ingest_bridge_db_cpu_ms_per_disbursement",
    "shipped_after_s",
    "reconciled_after_s",
    "callbacks_after_s",
    "peak_rss_mb",
    "peak_rss_tree_mb",
    "db_mb",
    "log_bytes",
    "correct",
    "git_commit",
    "cpu_ms_per_disbursement",
    "floor",
    "floor_ratio",
    "vacuumed",
    "envelope_reconciled_median_s",
    "envelope_reconciled_max_s",
    "envelope_starvation",
)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# The table of result.md: (label, key of the result).
METRICS = (
    ("ingest rate (disbursements/s)", "ingest_per_s"),
    ("ingest wall time (s)", "ingest_s"),
    ("request latency p50 (s)", "ingest_p50_s"),
    ("request latency p95 (s)", "ingest_p95_s"),
    ("request latency p99 (s)", "ingest_p99_s"),
    ("bridge API CPU during ingest (ms / disbursement)", "ingest_api_cpu_ms_per_disbursement"),
    (
        "bridge DB backends' CPU during ingest (ms / disbursement, sampled)",
        "ingest_bridge_db_cpu_ms_per_disbursement",
    ),
    ("last ingest -> all shipped (s)", "shipped_after_s"),
    ("last ingest -> all reconciled (s)", "reconciled_after_s"),
    ("last result -> last callback delivered (s)", "callbacks_after_s"),
    ("many envelopes: own last ingest -> reconciled, median (s)", "envelope_reconciled_median_s"),
    ("many envelopes: own last ingest -> reconciled, slowest (s)", "envelope_reconciled_max_s"),
    ("many envelopes: slowest / median (target <= 1.5)", "envelope_starvation"),
    ("peak RSS, largest single process (MB)", "peak_rss_mb"),
    ("peak RSS, largest process tree (MB)", "peak_rss_tree_mb"),
    ("database size (MB)", "db_mb"),
    ("log bytes", "log_bytes"),
    ("wall time of the whole run (s)", "wall_s"),
)


def heading(r: dict[str, Any], title: str) -> list[str]:
    """A result's title, commit and verdict, as result.md and the soak's report open."""
    error = f"; error: {r['error']}" if r.get("error") else ""
    return [
        f"# {title}",
        "",
        f"commit `{r.get('git_commit')}`; correct: **{r.get('correct')}**{error}",
        "",
    ]


def render_markdown(r: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = [
        *heading(
            r,
            f"Bench {r.get('run_id')}: {r.get('backend')}, {r.get('channel', 'example-bank')},"
            f" N = {r.get('n')}",
        ),
        "| metric | value |",
        "| --- | --- |",
    ]
    for label, key in METRICS:
        lines.append(f"| {label} | {fmt(r.get(key))} |")
    per = r.get("cpu_ms_per_disbursement", {})
    lines += [
        "",
        "| process | peak RSS tree sum (MB) | largest single (MB) | processes | CPU (s) "
        "| CPU ms / disbursement |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in sorted(r.get("rss", {}).items()):
        lines.append(
            f"| {name} | {v['peak_rss_mb']} | {v['max_single_process_mb']} | {v['max_processes']}"
            f" | {v.get('cpu_s', '-')} | {fmt(per.get(name))} |"
        )
    for name in sorted(k for k in per if k.startswith("postgres-")):
        lines.append(f"| {name} (its backends) | - | - | - | - | {per[name]} |")
    if "postgres_cpu_s" in r:
        lines.append(
            f"| postgres (whole server) | - | - | - | {r['postgres_cpu_s']} "
            f"| {fmt(per.get('postgres'))} |"
        )
    floor = r.get("floor")
    if floor:
        ratio = r.get("floor_ratio", {})
        lines += [
            "",
            f"floor on the same server after the run (load {fmt(floor.get('loadavg'))}): COPY of "
            f"{fmt(floor.get('n'))} disbursement rows {fmt(floor.get('copy_s'))} s, one UPDATE "
            f"... FROM of them {fmt(floor.get('update_from_s'))} s"
            + (f" ({floor['error']})" if "error" in floor else "")
            + f"; ingest / COPY = {fmt(ratio.get('ingest_over_copy'))}, last ingest -> "
            f"reconciled / UPDATE = {fmt(ratio.get('settle_over_update'))}, both / both = "
            f"{fmt(ratio.get('total_over_floor'))}",
        ]
    vacuumed = r.get("vacuumed")
    if vacuumed:
        plain, full = vacuumed.get("vacuum", {}), vacuumed.get("vacuum_full", {})
        lines += [
            "",
            f"bridge database after VACUUM {fmt(plain.get('mb'))} MB "
            f"({fmt(plain.get('bytes_per_disbursement'))} bytes per disbursement), after VACUUM "
            f"FULL {fmt(full.get('mb'))} MB ({fmt(full.get('bytes_per_disbursement'))} bytes per "
            f"disbursement); largest after FULL, MB: {fmt(vacuumed.get('largest_after_full_mb'))}"
            + (f" ({vacuumed['error']})" if "error" in vacuumed else ""),
        ]
    envelopes = r.get("envelopes")
    if envelopes:
        lines += [
            "",
            "| envelope | program | account | N | its last ingest, s before the last of all "
            "| its last ingest -> reconciled (s) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for e in envelopes:
            before = None if e["last_ingest_s"] is None else 0.0 - e["last_ingest_s"]
            lines.append(
                f"| {e['envelope']} | {e['program']} | {e['account']} | {e['n']} "
                f"| {fmt(before)} | {fmt(e['reconciled_after_s'])} |"
            )
    lines += ["", "| check | passed | values |", "| --- | --- | --- |"]
    for name, c in r.get("checks", {}).items():
        values = {k: v for k, v in c.items() if k != "passed"}
        lines.append(f"| {name} | {c['passed']} | `{json.dumps(values, default=str)}` |")
    recovered = [
        (f"{fault.get('fault')}" + (f" ({x['during']})" if "during" in x else ""), x)
        for fault in r.get("faults", [])
        for x in fault.get("restarts") or [fault]
        if "recovered_after_s" in x
    ]
    if recovered:
        lines += [
            "",
            "| fault | back at (s after last ingest) | recovered after (s) |",
        ]
        lines.append("| --- | --- | --- |")
        for name, x in recovered:
            lines.append(
                f"| {name} | {fmt(x.get('restarted_at_s'))} | {fmt(x['recovered_after_s'])} |"
            )
        lines.append(f"\nlongest stall of the counters (s): {fmt(r.get('longest_stall_s'))}")
    for fault in r.get("faults", []):
        lines += ["", f"fault `{fault.get('fault')}`: `{json.dumps(fault, default=str)}`"]
    lines += ["", f"settings: `{json.dumps(r.get('settings'), default=str)}`", ""]
    return "\n".join(lines)
