"""python -m harness.bench.page [--page docs/performance.md]: the performance page's tables from the bench's files.

Each block of the page between ``<!-- bench:FILE -->`` and ``<!-- /bench -->`` is replaced by FILE (a path under
reports/bench/, as ``python -m harness.bench --out`` wrote it) without its title line: the run's header line and
its tables, as measured. ``tests/test_bench.py`` fails when a block and its file differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "reports" / "bench"
PAGE = ROOT / "docs" / "performance.md"
BLOCK = re.compile(r"(<!-- bench:(\S+) -->\n).*?(<!-- /bench -->)", re.S)


def body(path: Path) -> str:
    """A bench.md without its '# harness bench' title: the header line and the tables."""
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip() + "\n"


def render(page: str, bench: Path = BENCH) -> str:
    def fill(m: re.Match) -> str:
        source = bench / m.group(2)
        if not source.is_file():
            raise FileNotFoundError(f"{source} (named by a bench block of the page) does not exist")
        return m.group(1) + "\n" + body(source) + "\n" + m.group(3)

    return BLOCK.sub(fill, page)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.page", description=__doc__.split("\n\n")[0])
    p.add_argument("--page", default=str(PAGE), help="the page to rewrite (default: docs/performance.md)")
    args = p.parse_args(argv)
    page = Path(args.page)
    try:
        text = page.read_text()
        new = render(text)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    page.write_text(new)
    print(f"rewrote {len(BLOCK.findall(text))} bench block(s) of {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
