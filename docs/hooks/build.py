"""MkDocs hooks: pages and files made at build time from the repository itself.

* ``<!-- ledger -->`` in a page is replaced by the table of the committed ledger of training
  runs (``src/fer_onnx_factory/experiments.json``, rendered by
  ``fer_onnx_factory.ledger.table``), so the
  experiment history can never fall behind the ledger.
* The browser demo's screenshot (``examples/web/screenshot.png``, written by the browser test)
  is published as ``img/browser-demo.png`` without a copy in ``docs/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LEDGER_MARKER = "<!-- ledger -->"
EXTRA_FILES = {"img/browser-demo.png": ROOT / "examples" / "web" / "screenshot.png"}


def ledger_table() -> str:
    """The table of the committed ledger, as ``fer-onnx-factory ledger table``."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from fer_onnx_factory.ledger import read, table

    return table(read())


def render(markdown: str) -> str:
    """``markdown`` with the ledger marker replaced by the ledger's table."""
    if LEDGER_MARKER not in markdown:
        return markdown
    return markdown.replace(LEDGER_MARKER, ledger_table())


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: fill in generated content."""
    return render(markdown)


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    """MkDocs hook: add repository files that the pages show."""
    from mkdocs.structure.files import File

    for dest, src in EXTRA_FILES.items():
        files.append(File.generated(config, dest, abs_src_path=str(src)))
    return files
