"""Summarise py-spy "raw" (collapsed-stack) profiles written by ``python -m bench.run --profile``.

    python -m bench.profile_summary bench/results/<run>/profile-bridge-api.txt [--top 25]

Prints, per file, the sampled share of (a) the innermost frame ("self": where the CPU is) and
(b) the innermost frame that belongs to this project (``g2p_bridge``/``example_bank``), so library
time is charged to the project function that called into it. Idle samples (py-spy only records
active threads with --nonblocking off, but Celery's idle loop still shows) are counted too.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

OWN = ("g2p_bridge/", "example_bank/")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def _frames(stack: str) -> list[str]:
    # py-spy raw lines: "process;thread;frame;frame... COUNT"; frames are "func (file:line)".
    return [f for f in stack.split(";") if "(" in f]


def _short(frame: str, with_line: bool) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/src/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    line = f":{m.group('line')}" if with_line and m.group("line") else ""
    return f"{m.group('func')} ({file}{line})"


def summarise(path: Path, top: int) -> str:
    self_time: Counter[str] = Counter()
    own_time: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        if not frames:
            continue
        total += n
        self_time[_short(frames[-1], False)] += n
        own = next((f for f in reversed(frames) if any(o in f for o in OWN)), None)
        own_time[_short(own, True) if own else "(no project frame: library/idle)"] += n
    lines = [
        f"## {path.name}: {total} samples",
        "",
        "innermost project frame (inclusive of the libraries it calls):",
    ]
    for name, n in own_time.most_common(top):
        lines.append(f"  {100 * n / max(total, 1):5.1f}%  {name}")
    lines += ["", "innermost frame (self):"]
    for name, n in self_time.most_common(top):
        lines.append(f"  {100 * n / max(total, 1):5.1f}%  {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top))


if __name__ == "__main__":
    main()
