"""What the reference scripts share: the exported official repository on ``sys.path`` (``argv[1]``) and where the
fixture goes (``argv[2]``, default ``tests/fixtures/official/<name>.json``), written whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "tests/fixtures/official"


def official_repo_and_out(name: str) -> tuple[Path, Path]:
    """(the official repository, importable from now on; the fixture path) from the command line."""
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: {Path(sys.argv[0]).name} /path/to/the/exported/official/repo [out.json]")
    repo = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(repo))
    return repo, Path(sys.argv[2]) if len(sys.argv) > 2 else FIXTURES / f"{name}.json"


def write_fixture(out: Path, fixture: dict, compact: bool = False) -> None:
    from vtp_bench.atomic import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, separators=(",", ":")) if compact else json.dumps(fixture, indent=1)
    atomic_write_text(out, text + "\n")
    print("wrote", out, out.stat().st_size, "bytes")
