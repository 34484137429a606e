"""mqkit.bench on memory://: a tiny run gives sane rows and a complete table. No timings checked."""

from __future__ import annotations

import io
import platform
from importlib.metadata import version

import pytest
from rich.console import Console

from mqkit.bench import Row, main, percentile, runners_for, targets
from mqkit.bench_baselines import kombu_available
from mqkit.errors import ConfigurationError

COUNT = 200
SIZE = 64


@pytest.fixture(scope="module")
def run() -> tuple[list[Row], str]:
    # Given a console that writes to a string
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    # When the benchmark runs on memory:// with a tiny count and one round
    rows = main("memory://", COUNT, SIZE, 1, console=console)
    return rows, out.getvalue()


def expected_keys() -> list[str]:
    return ["bare", "client", "queue"] + (["kombu"] if kombu_available() else [])


def test_memory_run_has_a_row_per_contender(run: tuple[list[Row], str]) -> None:
    rows, _ = run
    assert [r.key for r in rows] == expected_keys()


def test_every_message_is_consumed_in_every_row(run: tuple[list[Row], str]) -> None:
    rows, _ = run
    for row in rows:
        assert (row.count, row.consumed, row.size, row.rounds) == (COUNT, COUNT, SIZE, 1), row.key


def test_rates_and_costs_are_positive(run: tuple[list[Row], str]) -> None:
    rows, _ = run
    for row in rows:
        assert row.publish_rate > 0, row.key
        assert row.consume_rate > 0, row.key
        assert row.cpu_us_per_msg > 0, row.key
        assert row.peak_rss_mib > 0, row.key
        assert row.rss_growth_mib >= 0, row.key
        assert 0 <= row.latency_p50_ms <= row.latency_p99_ms, row.key


def test_ratios_are_relative_to_bare_and_queue(run: tuple[list[Row], str]) -> None:
    rows, _ = run
    by = {r.key: r for r in rows}
    assert by["bare"].vs_bare == pytest.approx(1.0)
    assert by["queue"].vs_queue == pytest.approx(1.0)
    for row in rows:
        assert row.vs_bare == pytest.approx(row.consume_rate / by["bare"].consume_rate)
        assert row.vs_queue == pytest.approx(row.consume_rate / by["queue"].consume_rate)


def test_memory_run_reports_all_three_targets(run: tuple[list[Row], str]) -> None:
    rows, _ = run
    names = [t.name for t in targets(rows)]
    assert len(names) == (3 if kombu_available() else 2)
    assert all(t.measured > 0 for t in targets(rows))


def test_table_names_size_versions_columns_and_targets(run: tuple[list[Row], str]) -> None:
    rows, text = run
    assert f"{COUNT:,} msgs of {SIZE} B" in text
    assert f"Python {platform.python_version()}" in text
    assert f"mqkit {version('mqkit')}" in text
    columns = ("pub k/s", "e2e k/s", "vs bare", "vs queue", "p50 ms", "p99 ms", "CPU µs", "RSS")
    for column in columns:
        assert column in text
    for row in rows:
        assert row.label in text
    assert text.count("target ") == len(targets(rows))


def test_other_brokers_get_only_bare_and_client() -> None:
    assert [r.key for r in runners_for("kafka://127.0.0.1:9092")] == ["bare", "client"]


@pytest.mark.parametrize(("count", "size", "rounds"), [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_main_rejects_nonsense_arguments(count: int, size: int, rounds: int) -> None:
    with pytest.raises(ConfigurationError):
        main("memory://", count, size, rounds, console=Console(file=io.StringIO()))


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0
