"""The bench's many-programs-at-once scenario (``--envelopes K``): how N is split over
envelopes and programs, and the per-envelope and starvation figures it reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.cli import parse_args
from bench.config import PROGRAM_ACCOUNT, BenchConfig
from bench.harness import Bench
from bench.report import render_markdown
from bench.state import plan_envelopes


def test_a_payday_splits_n_evenly_over_five_programs_each_with_its_own_account() -> None:
    plan = plan_envelopes(1_000_000, 10, None)
    assert [e.n for e in plan] == [100_000] * 10
    assert len({e.key for e in plan}) == 10
    assert len({e.id_prefix for e in plan}) == 10
    programs = {e.program: e.account for e in plan}
    assert len(programs) == 5
    assert len(set(programs.values())) == 5  # no two programs share an account
    assert plan[0].account == PROGRAM_ACCOUNT
    assert all(sum(e.program == p for e in plan) == 2 for p in programs)


def test_the_remainder_goes_to_the_first_envelopes_and_nothing_is_lost() -> None:
    plan = plan_envelopes(10, 3, 2)
    assert [e.n for e in plan] == [4, 3, 3]
    assert [e.program for e in plan] == ["BENCH00", "BENCH01", "BENCH00"]


def test_one_envelope_is_the_classic_run() -> None:
    (only,) = plan_envelopes(500, 1, None)
    assert (only.program, only.account, only.n, only.id_prefix) == (
        "BENCH",
        PROGRAM_ACCOUNT,
        500,
        "bench",
    )


@pytest.mark.parametrize(("n", "envelopes", "programs"), [(10, 0, None), (3, 4, None), (10, 2, 3)])
def test_impossible_splits_are_refused(n: int, envelopes: int, programs: int | None) -> None:
    with pytest.raises(ValueError):
        plan_envelopes(n, envelopes, programs)


def test_the_flags_reach_the_config() -> None:
    cfg = parse_args(["--n", "1000", "--envelopes", "4", "--programs", "2", "--clients", "5"])
    assert (cfg.envelopes, cfg.programs, cfg.clients) == (4, 2, 5)
    assert parse_args([]).envelopes == 1 and parse_args([]).programs is None


def test_the_command_line_defaults_are_the_configs() -> None:
    # A run with no flags is the documented scenario (4 worker children, among the rest).
    assert parse_args([]) == BenchConfig()
    assert parse_args(["--worker-concurrency", "2"]).worker_concurrency == 2


def test_faults_stay_single_envelope(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Bench(BenchConfig(n=100, envelopes=2, faults=("bank-5xx",), out=tmp_path))


def test_starvation_is_the_slowest_envelope_over_the_median(tmp_path: Path) -> None:
    bench = Bench(BenchConfig(n=400, envelopes=4, out=tmp_path))
    bench.envelope_ids = ["e0", "e1", "e2", "e3"]
    bench.ingest_end = 100.0
    bench.envelope_ingest_end = {"e0": 99.0, "e1": 99.5, "e2": 100.0, "e3": 100.0}
    bench._envelope_figures({"e0": 109.0, "e1": 110.5, "e2": 112.0, "e3": 130.0})
    r = bench.result
    assert [e["reconciled_after_s"] for e in r["envelopes"]] == [10.0, 11.0, 12.0, 30.0]
    assert [e["n"] for e in r["envelopes"]] == [100] * 4
    assert r["envelope_reconciled_median_s"] == 11.5
    assert r["envelope_reconciled_max_s"] == 30.0
    assert r["envelope_starvation"] == round(30 / 11.5, 3)
    assert r["envelopes_within_1_5x_median"] is False
    table = render_markdown(r)
    assert "| e3 | BENCH03 | PRG-BENCH-0004 | 100 | 0.0 | 30.0 |" in table
    assert "| e0 | BENCH00 | PRG-BENCH-0001 | 100 | 1.0 | 10.0 |" in table


def test_an_envelope_that_never_settled_leaves_no_starvation_figure(tmp_path: Path) -> None:
    bench = Bench(BenchConfig(n=200, envelopes=2, out=tmp_path))
    bench.envelope_ids = ["e0", "e1"]
    bench.ingest_end = 10.0
    bench.envelope_ingest_end = {"e0": 10.0, "e1": 10.0}
    bench._envelope_figures({"e0": 12.0})
    assert bench.result["envelopes"][1]["reconciled_after_s"] is None
    assert bench.result["envelope_starvation"] is None
    assert bench.result["envelopes_within_1_5x_median"] is None
