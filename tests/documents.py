"""Documents for retrieval QA (tests and bench/): ~N bytes of memos with one paragraph holding the answer."""

from __future__ import annotations

from pathlib import Path

NEEDLE = "The spare key to the archive is kept in the blue tin box under the lighthouse stairs."
QUESTION = "Where is the spare key to the archive kept?"
TOPICS = ["harbour cranes", "orchard pruning", "railway timetables", "choir rehearsals", "bakery ovens",
          "glacier surveys", "library fines", "bicycle repairs", "tide tables", "museum lighting"]


def write_documents(folder: Path, total_bytes: int, needle_file: int = 37) -> list[Path]:
    """~total_bytes of memos in 100 files; one paragraph (in one file) holds the answer.

    Each file repeats the same memo body with its own number, so most chunks repeat across files
    (the index embeds a text once) while every file still differs."""
    folder.mkdir(parents=True, exist_ok=True)
    body = "\n\n".join(
        f"Memo on {topic}: the committee reviewed {topic} again this week. Costs for {topic} rose slightly, "
        f"and the team agreed to revisit {topic} after the summer. No decision on {topic} was final."
        for topic in TOPICS)
    paths = []
    per_file = total_bytes // 100
    for i in range(100):
        parts, size = [f"File {i}: notes of the weekly committee."], 0
        while size < per_file:
            parts.append(body)
            size += len(body)
        if i == needle_file:
            parts.insert(len(parts) // 2, NEEDLE)
        path = folder / f"memo-{i:03}.txt"
        path.write_text("\n\n".join(parts))
        paths.append(path)
    return paths
