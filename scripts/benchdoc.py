"""Replace one marked section of docs/benchmarks.md (``<!-- bench-<key>:start/end -->``), or append it under a
heading: every benchmark script owns its section, so a rerun replaces its numbers and leaves the rest alone."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(doc: str | Path, key: str, heading: str, body: str) -> None:
    doc = Path(doc)
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    start, end = f"<!-- bench-{key}:start -->", f"<!-- bench-{key}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{block}\n"
    doc.write_text(text)
    print(f"written to {doc} (section bench-{key})")


def peak_rss_mib() -> float:
    """This process's peak resident set size (getrusage ru_maxrss, KiB on Linux), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's current resident set size, in MiB (/proc/self/statm)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def default_threads() -> int:
    """Torch threads of a benchmark: $VTP_BENCH_THREADS, else every core. On a machine shared with other jobs,
    1 avoids OpenMP threads waiting on each other (measured: 3x slower with 2 threads under a load of 10)."""
    import os

    return int(os.environ.get("VTP_BENCH_THREADS") or os.cpu_count() or 1)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux: ``5`` into /proc/self/clear_refs resets the
    high-water mark that ru_maxrss reports), so a later peak is that of what ran after the reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
