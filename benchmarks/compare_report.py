"""Figures of ``benchmarks/compare.py``: rows, targets, the rich table, markdown and PNG."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compare_core import PEERS
from rich import box
from rich.console import Console
from rich.table import Table

PIPELINE_HEADING = "## Order pipeline at 10,000 orders/s"


@dataclass
class Samples:
    """One contender's figures, one entry per round."""

    key: str
    label: str
    guarantee: str
    publish: list[float] = field(default_factory=list)
    consume: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    gc_pct: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    growth_mib: list[float] = field(default_factory=list)
    consumed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


@dataclass(frozen=True)
class Row:
    """Medians over rounds for one contender on one broker and size."""

    broker: str
    size: int
    count: int
    key: str
    label: str
    guarantee: str
    publish: float
    consume: float
    cpu_us: float
    gc_pct: float
    p50_ms: float
    p99_ms: float
    peak_mib: float
    growth_mib: float
    lost: int
    errors: tuple[str, ...]
    publish_vs_raw: float
    consume_vs_raw: float


def rows_for(broker: str, size: int, count: int, samples: Sequence[Samples]) -> list[Row]:
    raw = next((s for s in samples if s.key == "raw"), None)
    raw_pub = _median(raw.publish) if raw else math.nan
    raw_con = _median(raw.consume) if raw else math.nan
    rows = []
    for s in samples:
        pub, con = _median(s.publish), _median(s.consume)
        rows.append(Row(
            broker, size, count, s.key, s.label, s.guarantee, pub, con, _median(s.cpu_us),
            _median(s.gc_pct),
            _median(s.p50_ms), _median(s.p99_ms), _median(s.peak_mib), _median(s.growth_mib),
            max((count - c for c in s.consumed), default=0), tuple(dict.fromkeys(s.errors)),
            pub / raw_pub, con / raw_con,
        ))
    return rows


@dataclass(frozen=True)
class Target:
    broker: str
    size: int
    name: str
    measured: float
    wanted: float
    strict: bool = False
    """``measured > wanted`` (ahead of a peer) rather than ``>=``."""

    @property
    def met(self) -> bool:
        if math.isnan(self.measured):
            return False
        return self.measured > self.wanted if self.strict else self.measured >= self.wanted


RAW_TARGETS: dict[str, list[tuple[str, str, str, float]]] = {
    # broker -> (column, figure, wording, wanted ratio over raw)
    "kafka": [("bare", "publish", "publish ≥ 50% of raw", 0.5),
              ("bare", "consume", "consume ≥ 40% of raw", 0.4),
              ("batch", "consume", "batch handler consume ≥ 70% of raw", 0.7)],
    "rabbitmq": [("bare", "publish", "publish with confirms ≥ 2x pika confirm-each", 2.0),
                 ("bare", "consume", "consume ≥ 90% of pika", 0.9)],
    "nats": [("bare", "publish", "publish ≥ 50% of raw", 0.5),
             ("bare", "consume", "consume ≥ 50% of raw", 0.5)],
    "jetstream": [("bare", "publish", "publish ≥ 80% of raw publish_async", 0.8),
                  ("bare", "consume", "consume ≥ 80% of raw", 0.8)],
    "sqs": [("bare", "publish", "publish ≥ 90% of raw boto3", 0.9),
            ("bare", "consume", "consume ≥ 90% of raw boto3", 0.9)],
    "memory": [("bare", "pass", "publish+consume pass ≥ 15% of asyncio.Queue", 0.15)],
}


def _pass_rate(row: Row) -> float:
    """Messages per second over publish then consume: count / (publish s + consume s)."""
    if not row.publish or not row.consume or math.isnan(row.publish + row.consume):
        return math.nan
    return 1 / (1 / row.publish + 1 / row.consume)


def targets(rows: Sequence[Row]) -> list[Target]:
    if not rows:
        return []
    broker, size = rows[0].broker, rows[0].size
    by = {r.key: r for r in rows}
    found = []
    for column, figure, wording, wanted in RAW_TARGETS.get(broker, []):
        row, raw = by.get(column), by.get("raw")
        if row is None or raw is None:
            continue
        if figure == "publish":
            measured = row.publish_vs_raw
        elif figure == "consume":
            measured = row.consume_vs_raw
        else:
            measured = _pass_rate(row) / _pass_rate(raw)
        found.append(Target(broker, size, wording, measured, wanted))
    for key, peer in PEERS.items():
        if key not in by:
            continue
        for column, name in (("bare", "mqkit bare"), ("full-memory", "mqkit full stack")):
            if column not in by:
                continue
            for figure in ("publish", "consume"):
                mine, theirs = getattr(by[column], figure), getattr(by[key], figure)
                found.append(Target(broker, size, f"{name} {figure} ahead of {peer}",
                                    mine / theirs, 1.0, strict=True))
    return found


# --- output ------------------------------------------------------------------------------
def _k(rate: float) -> str:
    return "—" if math.isnan(rate) else f"{rate / 1000:,.2f}" if rate < 10_000 else \
        f"{rate / 1000:,.1f}"


def _x(ratio: float) -> str:
    return "—" if math.isnan(ratio) else f"{ratio:.2f}"


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


HEADERS = ("column", "pub k/s", "pub/raw", "cons k/s", "cons/raw", "p50 ms", "p99 ms",
           "CPU µs/msg", "GC %", "peak RSS MiB")


def _cells(r: Row) -> list[str]:
    name = r.label + (f" (LOST {r.lost})" if r.lost else "") + (" (ERROR)" if r.errors else "")
    return [name, _k(r.publish), _x(r.publish_vs_raw), _k(r.consume), _x(r.consume_vs_raw),
            _ms(r.p50_ms), _ms(r.p99_ms), _ms(r.cpu_us),
            "—" if math.isnan(r.gc_pct) else f"{r.gc_pct:.0f}",
            f"{r.peak_mib:.0f} (+{r.growth_mib:.0f})" if not math.isnan(r.peak_mib) else "—"]


def print_table(title: str, rows: Sequence[Row], console: Console) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for i, name in enumerate(HEADERS):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*_cells(r))
    console.print(table)
    for t in targets(rows):
        mark = "[green]met[/green]" if t.met else "[red]MISSED[/red]"
        console.print(f"  target {t.name}: {_x(t.measured)} (wanted {'>' if t.strict else '≥'}"
                      f" {t.wanted:g}) {mark}", highlight=False)
    for r in rows:
        for error in r.errors:
            console.print(f"  [red]{r.label}: {error}[/red]", highlight=False)


def markdown(
    *, header: Sequence[str], tables: Sequence[tuple[str, Sequence[Row]]], chart: str | None,
    pipeline: Path,
) -> str:
    out = list(header)
    all_targets: list[Target] = []
    guarantees: dict[str, dict[str, str]] = {}
    for title, rows in tables:
        out += [f"### {title}", "", "| " + " | ".join(HEADERS) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
        out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
        errors = [f"- {r.label}: {e}" for r in rows for e in r.errors]
        out += ["", *errors, *([""] if errors else [])]
        all_targets += targets(rows)
        if rows:
            guarantees.setdefault(rows[0].broker, {}).update(
                {r.label: r.guarantee for r in rows})
    if chart:
        out += [f"![msgs/s normalised to the raw client]({chart})", ""]
    out += ["## Targets", "", "| broker | size | target | measured | wanted | |",
            "|---|---:|---|---:|---:|---|"]
    for t in all_targets:
        mark = "met" if t.met else "**missed**"
        sign = ">" if t.strict else "≥"
        out.append(f"| {t.broker} | {t.size} B | {t.name} | {_x(t.measured)} | "
                   f"{sign} {t.wanted:g} | {mark} |")
    out += ["", "## Delivery guarantee of each column", ""]
    for broker, labels in guarantees.items():
        out += [f"### {broker}", ""]
        out += [f"- **{label}**: {text}" for label, text in labels.items()]
        out.append("")
    out += [PIPELINE_HEADING, ""]
    if pipeline.exists():
        body = pipeline.read_text().strip().splitlines()
        if body and body[0].lstrip("#").strip() == PIPELINE_HEADING.lstrip("#").strip():
            body = body[1:]
        out += [*body, ""]
    else:
        out += ["Not measured in this run: `benchmarks/pipeline*.py` writes "
                f"`{pipeline.name}`, included here when it exists as the report is generated.",
                ""]
    return "\n".join(out)


def chart(tables: Sequence[tuple[str, Sequence[Row]]], sizes: Sequence[int], path: Path) -> bool:
    """Grouped bars of publish and consume msgs/s over raw, per broker; a panel per size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys: list[str] = []
    for _, rows in tables:
        keys += [r.key for r in rows if r.key not in keys and r.key != "raw"]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(13, 4.2 * len(sizes)), squeeze=False)
    width = 0.8 / max(1, 2 * len(keys))
    colours = plt.get_cmap("tab10")
    for ax, size in zip(axes[:, 0], sizes, strict=True):
        groups = [(rows[0].broker, {r.key: r for r in rows}) for _, rows in tables
                  if rows and rows[0].size == size]
        for k, key in enumerate(keys):
            for f, figure in enumerate(("publish_vs_raw", "consume_vs_raw")):
                xs = [g + (2 * k + f - len(keys)) * width + width / 2
                      for g in range(len(groups))]
                ys = [getattr(by[key], figure) if key in by else math.nan for _, by in groups]
                ax.bar(xs, ys, width,
                       color=colours(k), alpha=1.0 if f else 0.55,
                       label=f"{key} {'consume' if f else 'publish'}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [name for name, _ in groups])
        ax.set_ylabel("msgs/s ÷ raw client (log)")
        ax.set_title(f"{size} B messages (light: publish, dark: consume; line = raw)")
        ax.legend(ncol=max(1, len(keys)), fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
