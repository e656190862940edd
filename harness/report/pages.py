"""A generated part of a documentation page: the lines between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``,
replaced by what a generator wrote (the claims table, the list of studies)."""

from __future__ import annotations

import re
from pathlib import Path


def replace_block(page: Path, name: str, body: str) -> str | None:
    """Rewrite the page's NAME block with ``body``; None when done, else why not (one line)."""
    try:
        text = page.read_text()
    except OSError as e:
        return f"cannot read {page}: {e.strerror or e}"
    new, n = re.subn(
        rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
        lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2),
        text,
        flags=re.S,
    )
    if not n:
        return f"{page} has no <!-- {name}:start --> ... <!-- {name}:end --> block"
    page.write_text(new)
    return None
