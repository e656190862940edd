"""MkDocs hook: the site carries the reports (``reports/``) that its pages link to.

A page under ``docs/`` links to a report as ``../reports/NAME/report.md``, which works where the repository is
read as files (GitHub, an editor). For the built site, every file under ``reports/`` is added to the site at
``reports/...`` and those links are rewritten to point there, so ``mkdocs build --strict`` checks them too.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent.parent
REPORTS = ROOT / "reports"


def on_files(files: Files, config) -> Files:
    for path in sorted(REPORTS.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            files.append(
                File(
                    str(path.relative_to(ROOT)),
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    depth = page.file.src_uri.count("/")  # a page in a sub-folder of docs/ reaches the repository one level further up
    return re.sub(r"\]\((?:\.\./)+reports/", "](" + "../" * depth + "reports/", markdown)
