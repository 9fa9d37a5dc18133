"""Render the backlog test's section of docs/benchmarks.md (see backlog.py)."""

from __future__ import annotations

# A level whose rate is within this fraction of the first level's counts as flat.
FLAT_TOLERANCE = 0.2


def run_rows(run: dict) -> list[str]:
    """Return the machine table's row that describes the backlog test's settings."""
    if "backlog" not in run:
        return []
    if not run["backlog"]:
        return ["| Backlog test | not run (`--no-backlog`) |"]
    levels = ", ".join(f"{level:,}" for level in run["backlog_levels"])
    churn = ", then once more after a drain" if run.get("backlog_churn") else ""
    return [f"| Backlog test | {run['backlog_dequeues']:,} dequeues at backlogs of "
            f"{levels}{churn} |"]


def render(systems: dict, run: dict, machine: dict) -> str:
    """Return the section, or "" when no system has backlog results."""
    records = {name: record for name, record in systems.items() if "backlog" in record}
    if not records:
        return ""
    first = next(iter(records.values()))["backlog"]
    lines = ["## Backlog test\n", _intro(first, run), ""]
    for name, record in records.items():
        lines.append(_system_part(record.get("label", name), record["backlog"], machine))
    return "\n".join(lines)


def _intro(backlog: dict, run: dict) -> str:
    churn = ""
    if run.get("backlog_churn"):
        churn = (
            " After the highest level, threads reserve and ack until the queue is "
            "empty, and the row \"0, after drain\" measures once more on that empty "
            "queue, after every message of the test has passed through the table. On "
            "PostgreSQL, the harness then runs `VACUUM` on the messages table and "
            "measures a last row, which shows how much of the change a vacuum undoes."
        )
    return (
        "This test shows whether dequeuing gets slower as messages pile up. It starts "
        "a new server on a new, empty store (a new SQLite file or PostgreSQL schema). "
        "At each level, the queue contains that many messages besides the "
        f"{backlog['dequeues_per_level']:,} that are measured. One harness thread "
        f"reserves those through the SDK's HTTP client, up to {backlog['reserve_batch']} "
        "per call (the maximum for one reserve), and acks each batch before the next "
        "reserve. No worker runs and no task body, so the rate covers the server's "
        "reserve and ack paths and nothing else. The backlog is posted with the SDK's "
        f"batch post, {backlog['post_batch_size']:,} messages per call." + churn +
        " The sizes are taken after each measurement, so they include the messages "
        "still waiting. For PostgreSQL they are `pg_table_size` of the messages table "
        "(heap, TOAST, free space and visibility maps), `pg_indexes_size` and "
        "`pg_total_relation_size`, and the dead rows come from `pg_stat_user_tables`. "
        "For SQLite they come from its `dbstat` table, and free pages are pages of the "
        "whole file that deleted rows left for reuse. A rate within "
        f"{FLAT_TOLERANCE:.0%} of the first row's counts as flat, because this page "
        "does not measure how much runs vary on this shared machine."
    )


def _system_part(label: str, backlog: dict, machine: dict) -> str:
    levels = backlog["levels"]
    postgres = "dead_rows" in levels[0]["sizes"]
    last_column = "Dead rows" if postgres else "Free pages (whole file)"
    lines = [
        f"### {label}\n",
        "| Messages waiting | Processed before | Reserve and ack (msg/s) "
        f"| Relative to the first row | Table | Indexes | Table and indexes | {last_column} |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    base = levels[0]["dequeues_per_second"]
    for level in levels:
        sizes = level["sizes"]
        extra = (_count(sizes.get("dead_rows")) if postgres
                 else _bytes(sizes.get("free_bytes")))
        lines.append(
            f"| {_row_label(level)} | {level['processed_before']:,} "
            f"| {level['dequeues_per_second']:,.0f} "
            f"| {level['dequeues_per_second'] / base:.0%} "
            f"| {_bytes(sizes['table_bytes'])} | {_bytes(sizes['indexes_bytes'])} "
            f"| {_bytes(sizes['total_bytes'])} | {extra} |"
        )

    lines.append("")
    lines.append(_flatness_sentence(levels) + " " + _size_sentence(levels, postgres, machine))
    lines.append("")
    lines.append(_index_table(levels))

    drain = backlog.get("drain")
    if drain:
        lines.append(
            f"The drain before the row \"0, after drain\" reserved and acked "
            f"{drain['messages']:,} "
            f"messages in {drain['seconds']:,.1f} s from several threads; its rate is "
            "not comparable with the rows above.\n"
        )
    return "\n".join(lines)


def _flatness_sentence(levels: list[dict]) -> str:
    """Say whether any level's rate falls more than FLAT_TOLERANCE below the first level's.

    The row measured after a VACUUM does not count, because the harness
    changed the table before it.
    """
    levels = [level for level in levels if not level.get("vacuumed")]
    base = levels[0]["dequeues_per_second"]
    ratios = [level["dequeues_per_second"] / base for level in levels]
    slow = [level for level, ratio in zip(levels, ratios) if ratio < 1 - FLAT_TOLERANCE]
    if slow:
        worst = min(slow, key=lambda level: level["dequeues_per_second"])
        return (f"Throughput does not stay flat: {_level_name(worst)}, it falls to "
                f"{worst['dequeues_per_second'] / base:.0%} of the first row's rate.")
    if max(ratios) <= 1 + FLAT_TOLERANCE:
        largest = max(abs(ratio - 1) for ratio in ratios)
        return (f"Throughput stays flat: no row differs from the first by more "
                f"than {largest:.0%}.")
    return (f"Throughput does not fall as the backlog grows: no row is more than "
            f"{FLAT_TOLERANCE:.0%} slower than the first, and the fastest is "
            f"{max(ratios) - 1:.0%} faster, which shows how much one measurement varies "
            "here.")


def _row_label(level: dict) -> str:
    label = f"{level['backlog']:,}"
    if level.get("vacuumed"):
        return label + ", after drain and VACUUM"
    if level.get("churned"):
        return label + ", after drain"
    return label


def _level_name(level: dict) -> str:
    if level.get("churned"):
        return f"on the empty queue after {level['processed_before']:,} messages passed through"
    return f"with {level['backlog']:,} messages waiting"


def _size_sentence(levels: list[dict], postgres: bool, machine: dict) -> str:
    """Compare the sizes of the churned empty queue with the first row, if both exist."""
    churned = [level for level in levels if level.get("churned") and not level.get("vacuumed")]
    if not churned:
        return ""
    first, last = levels[0]["sizes"], churned[-1]["sizes"]
    text = (f"After {churned[-1]['processed_before']:,} messages passed through, the "
            f"messages table and its indexes take {_bytes(last['total_bytes'])} with an "
            f"empty queue, against {_bytes(first['total_bytes'])} in the first row.")
    if not postgres:
        return text + (" SQLite reuses the pages that deleted rows free, inside the same "
                       "file, without a separate vacuum step.")

    autovacuum = (machine.get("postgres") or {}).get("autovacuum", "not recorded")
    text += (f" The server runs with autovacuum `{autovacuum}`, and the harness runs no "
             "VACUUM before the row \"0, after drain\". Without a vacuum, PostgreSQL "
             "frees the space of deleted rows only by pruning heap pages and by cleaning "
             "index pages when they would split.")
    vacuumed = [level for level in levels if level.get("vacuumed")]
    if vacuumed:
        base = levels[0]["dequeues_per_second"]
        text += (f" After VACUUM, the table and its indexes take "
                 f"{_bytes(vacuumed[-1]['sizes']['total_bytes'])} and the rate is "
                 f"{vacuumed[-1]['dequeues_per_second'] / base:.0%} of the first row's. A "
                 "plain VACUUM makes the space of dead rows reusable, and it returns to "
                 "the operating system only empty pages at the end of a table.")
    return text


def _index_table(levels: list[dict]) -> str:
    """Return a table of each index's size (rows) at each level (columns)."""
    names = sorted({name for level in levels for name in level["sizes"]["index_bytes"]})
    headers = [_row_label(level) for level in levels]
    lines = [
        "Each index's size, in the same rows as the table above (messages waiting):\n",
        "| Index | " + " | ".join(headers) + " |",
        "| --- | " + " | ".join("---:" for _ in levels) + " |",
    ]
    for name in names:
        cells = [_bytes(level["sizes"]["index_bytes"].get(name)) for level in levels]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    if value < 2**20:
        return f"{value / 2**10:,.0f} KiB"
    return f"{value / 2**20:,.1f} MiB"


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"
