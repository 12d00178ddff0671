"""The documentation: README is a front door, and every snippet marked runnable runs.

A snippet is runnable when the line right before its fence is ``<!-- runnable -->``: Python
fences run as a script (``python snippet.py``, so ``if __name__ == "__main__":`` works as it
does for a reader), ``bash``/``sh`` fences in ``bash -euo pipefail`` with the virtual
environment's ``bin`` first on ``PATH``; both verbatim, from the repository root, where the
snippets find the shared photos at ``../shared/media``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT

MARKER = "<!-- runnable -->"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The snippets say ../shared/media literally, as a reader of a fresh clone types it.
SHARED_MEDIA = ROOT.parent / "shared" / "media"
README_MAX_LINES = 300
LANGUAGES = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
TIMEOUT_S = 180


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # 1-based line of the opening fence
    kind: str  # "python" or "shell"
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def snippets(path: Path) -> list[Snippet]:
    """The runnable snippets of ``path``; a marker not right before a runnable fence fails."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        m = re.fullmatch(r"```(\w+)\s*", fence)
        if m is None or m.group(1) not in LANGUAGES:
            raise AssertionError(
                f"{path}:{i + 1}: {MARKER} must be followed by a ```python or ```bash fence"
            )
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{path}:{i + 2}: the fence is never closed")
        code = "\n".join(lines[i + 2 : end]) + "\n"
        found.append(Snippet(path, i + 2, LANGUAGES[m.group(1)], code))
    return found


ALL = [s for page in pages() for s in snippets(page)]


def test_snippets_are_found_in_readme_and_docs() -> None:
    assert any(s.path == README and s.kind == "python" for s in ALL)
    assert any(s.path == README and s.kind == "shell" for s in ALL)
    assert len({s.path for s in ALL}) >= 5, "most docs pages should show a runnable snippet"


@pytest.mark.parametrize("snippet", ALL, ids=[s.id for s in ALL])
def test_runnable_snippet(snippet: Snippet, tmp_path: Path) -> None:
    if not SHARED_MEDIA.is_dir():
        pytest.skip(f"{SHARED_MEDIA} not present: the snippets read the shared photos there")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if snippet.kind == "python":
        script = tmp_path / "snippet.py"
        script.write_text(snippet.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", snippet.code]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, (
        f"{snippet.id} exited with {done.returncode}\n--- code\n{snippet.code}"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, (
        f"README.md has {len(text.splitlines())} lines (at most {README_MAX_LINES}): "
        "move the details to docs/"
    )
    for block in ("install", "test"):  # .ci/run extracts and runs these two
        assert f"<!-- ci:{block} -->\n```bash\n" in text
        assert f"\n```\n<!-- /ci:{block} -->" in text


def test_relative_links_of_readme_and_docs_exist() -> None:
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if page.parent == DOCS and path.startswith("img/"):
                continue  # published by docs/hooks/build.py
            assert (page.parent / path).exists(), f"{page.name}: broken link {target}"


def test_every_docs_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", config, re.M))
    on_disk = {p.name for p in DOCS.glob("*.md")}
    assert on_disk <= listed, f"pages missing from mkdocs.yml's nav: {sorted(on_disk - listed)}"
    assert listed <= on_disk, f"nav entries without a page: {sorted(listed - on_disk)}"


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_experiment_history_is_rendered_from_the_ledger() -> None:
    from fer_onnx_factory.ledger import read, table

    hooks = load_hooks()
    page = (DOCS / "history.md").read_text(encoding="utf-8")
    assert page.count(hooks.LEDGER_MARKER) == 1
    rendered = hooks.render(page)
    assert hooks.LEDGER_MARKER not in rendered
    assert table(read()) in rendered
    assert all(src.is_file() for src in hooks.EXTRA_FILES.values())
