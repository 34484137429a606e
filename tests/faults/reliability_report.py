"""Turn the fault suite's figures into the tables of docs/reliability.md.

    .venv/bin/python -m tests.faults.reliability_report [REPORT.jsonl] [docs/reliability.md]

Every fault test appends a row of figures (``tests.faults.ledger.report``). This keeps the
newest row per (scenario, broker, variant) and rewrites the part of the document between the
two ``<!-- figures -->`` markers: one table per scenario, a column per figure. The prose
around the markers is written by hand.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from tests.faults.ledger import REPORT

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- figures -->", "<!-- /figures -->"
BROKER_ORDER = ["memory", "kafka", "rabbitmq", "nats", "jetstream", "sqs", "sqlite", "postgres"]
# Figures first in every table, in this order; the rest follow alphabetically.
FIRST = ["lost", "unexpected", "duplicates", "side_effects", "attempted", "acked",
         "indeterminate", "delivered", "deliveries"]
SKIP = {"scenario", "broker", "at", "seed"}
VARIANTS = ("hook", "extension", "case", "store", "writer", "boundary")


def load(path: Path) -> list[dict[str, object]]:
    newest: dict[tuple[str, str, str], dict[str, object]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        variant = " ".join(f"{k}={row[k]}" for k in VARIANTS if k in row)
        newest[(str(row["scenario"]), str(row["broker"]), variant)] = row
    return list(newest.values())


def cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, dict)):
        return "`" + json.dumps(value)[:60] + "`"
    return str(value).replace("|", "\\|")


def tables(rows: list[dict[str, object]]) -> str:
    by_scenario: dict[str, list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        by_scenario[str(row["scenario"])].append(row)
    out: list[str] = []
    for scenario, group in by_scenario.items():
        group.sort(key=lambda r: (
            BROKER_ORDER.index(str(r["broker"])) if r["broker"] in BROKER_ORDER else 99,
            *(str(r.get(k, "")) for k in VARIANTS),
        ))
        keys = {k for r in group for k in r} - SKIP
        columns = [k for k in FIRST if k in keys] + sorted(keys - set(FIRST))
        variant_cols = [k for k in VARIANTS if k in keys]
        columns = variant_cols + [k for k in columns if k not in variant_cols]
        out.append(f"### {scenario}\n")
        out.append("| broker | " + " | ".join(columns) + " |")
        out.append("|---" * (len(columns) + 1) + "|")
        for r in group:
            out.append(f"| {r['broker']} | "
                       + " | ".join(cell(r.get(k, "")) for k in columns) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else REPORT
    target = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "reliability.md"
    text = target.read_text() if target.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    body = tables(load(source))
    target.write_text(f"{head}{BEGIN}\n\n{body}\n{END}{tail}")
    print(f"wrote {target} from {source}")


if __name__ == "__main__":
    main(sys.argv[1:])
