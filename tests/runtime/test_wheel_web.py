"""``fer-onnx web`` from an installed wheel: the page ships as package data, the JavaScript
runtime (npm's onnxruntime-web and OpenCV.js) is found, fetched, or asked for clearly.

The fast tests use the page of this checkout with a stand-in runtime (two files where npm
would put them). The slow one builds the wheel from a copy of the sources, installs it into a
fresh virtual environment and serves the demo from there.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from fer_onnx.cli import main
from fer_onnx.web import WebDemoSite, make_server, serve_in_thread, server_url
from fer_onnx.web_runtime import (
    RUNTIME_ENV,
    RUNTIME_FILES,
    WebDemoError,
    default_web_root,
    fetch_runtime,
    find_runtime,
    runtime_cache,
)

PAGE = ROOT / "examples" / "web"
PAGE_FILES = ("index.html", "style.css", "package.json", "package-lock.json")


def stand_in_runtime(folder: Path) -> Path:
    """A folder whose node_modules has the files the page loads (content: their names)."""
    for name in RUNTIME_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"// {name}\n")
    return folder


def copy_page(folder: Path) -> Path:
    """The page without node_modules (what the wheel holds)."""
    shutil.copytree(PAGE, folder, ignore=shutil.ignore_patterns("node_modules"))
    return folder


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No runtime from the environment or a real cache: the cache is an empty folder."""
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


# -- finding the runtime -----------------------------------------------------------------------


def test_the_page_is_found_in_this_checkout() -> None:
    assert (default_web_root() / "index.html").is_file()


@pytest.mark.usefixtures("clean_env")
def test_runtime_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = copy_page(tmp_path / "page")
    cached = stand_in_runtime(runtime_cache(page))
    assert cached.is_relative_to(tmp_path / "cache")
    assert find_runtime(page) == cached
    stand_in_runtime(page)  # a checkout after npm ci: the page's own node_modules comes first
    assert find_runtime(page) == page
    env = stand_in_runtime(tmp_path / "env")
    monkeypatch.setenv(RUNTIME_ENV, str(env / "node_modules"))  # node_modules itself will do
    assert find_runtime(page) == env
    given = stand_in_runtime(tmp_path / "given")
    assert find_runtime(page, given) == given


@pytest.mark.usefixtures("clean_env")
def test_a_missing_runtime_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    page = copy_page(tmp_path / "page")
    with pytest.raises(WebDemoError) as info:
        find_runtime(page)
    message = str(info.value)
    assert "--fetch-runtime" in message
    assert "--runtime" in message
    assert str(runtime_cache(page)) in message
    with pytest.raises(WebDemoError, match=r"--runtime .*lacks node_modules/onnxruntime-web"):
        find_runtime(page, tmp_path / "empty")


def test_the_cache_follows_the_lockfile(tmp_path: Path, clean_env: Path) -> None:
    page = copy_page(tmp_path / "page")
    first = runtime_cache(page)
    (page / "package-lock.json").write_text("{}")
    assert runtime_cache(page) != first
    assert first.parent == clean_env / "fer-onnx"


# -- fetching it with npm ----------------------------------------------------------------------


def fake_npm(folder: Path, exit_code: int = 0) -> Path:
    """An ``npm`` that records its arguments and lays out the runtime files (or fails)."""
    script = folder / "npm"
    files = " ".join(RUNTIME_FILES)
    script.write_text(
        "#!/bin/sh\n"
        'echo "$@" > npm-args.txt\n'
        f"[ {exit_code} = 0 ] || {{ echo 'npm ERR! 404 no such package' >&2; exit {exit_code}; }}\n"
        f"for f in {files}; do mkdir -p $(dirname $f); echo '//' > $f; done\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in npm is a shell script")
@pytest.mark.usefixtures("clean_env")
def test_fetch_runtime_runs_npm_ci_on_the_page_lockfile(tmp_path: Path) -> None:
    page = copy_page(tmp_path / "page")
    runtime = fetch_runtime(page, npm=str(fake_npm(tmp_path)))
    assert runtime == runtime_cache(page)
    assert (runtime / "npm-args.txt").read_text().split()[:2] == ["ci", "--omit=dev"]
    assert (runtime / "package-lock.json").read_bytes() == (page / "package-lock.json").read_bytes()
    assert find_runtime(page) == runtime


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in npm is a shell script")
def test_fetch_runtime_reports_npm_failures(tmp_path: Path) -> None:
    page = copy_page(tmp_path / "page")
    with pytest.raises(WebDemoError, match=r"npm ci.*failed \(exit 3\).*404 no such package"):
        fetch_runtime(page, tmp_path / "rt", npm=str(fake_npm(tmp_path, exit_code=3)))


def test_fetch_runtime_without_npm_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm there
    with pytest.raises(WebDemoError, match=r"--fetch-runtime needs npm.*Node\.js"):
        fetch_runtime(PAGE, tmp_path / "rt")


# -- serving -----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, WebDemoSite]]:
    site = WebDemoSite.create(copy_page(tmp_path / "page"), runtime=stand_in_runtime(tmp_path))
    server = make_server(site, port=0)
    thread = serve_in_thread(server)
    yield server_url(server), site
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_the_runtime_is_served_beside_the_page(served: tuple[str, WebDemoSite]) -> None:
    url, site = served
    assert site.runtime is not None
    assert site.runtime != site.root
    status, body = get(url + "index.html")
    assert status == 200
    assert b"<html" in body.lower()
    for name in RUNTIME_FILES:
        assert get(url + name) == (200, f"// {name}\n".encode())
    assert get(url + "node_modules/../../../etc/passwd")[0] == 404  # stays inside the folders


@pytest.mark.usefixtures("clean_env")
def test_cli_without_a_runtime_exits_2_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = copy_page(tmp_path / "page")
    assert main(["web", "--port", "0", "--root", str(page)]) == 2
    assert "fer-onnx web --fetch-runtime" in capsys.readouterr().err


# -- the wheel ---------------------------------------------------------------------------------


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources (the checkout's build/ stays untouched)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    copy_page(source / "examples" / "web")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("fer_onnx-*.whl")
    return wheel


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", RUNTIME_ENV)}


def venv_with_wheel(folder: Path, wheel: Path) -> Path:
    """A new virtual environment with ``wheel`` installed, which then sees this environment's
    packages (numpy, onnxruntime, OpenCV) behind its own site-packages: no download needed.

    (``venv --system-site-packages`` would not do: this environment may itself be a venv.)
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", wheel],
        capture_output=True,
        text=True,
        timeout=300,
        env=without_pythonpath(),  # a fer-onnx on PYTHONPATH would count as installed
    )
    assert done.returncode == 0, done.stderr[-3000:]
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "outer-environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


SERVE_FROM_THE_WHEEL = textwrap.dedent(
    """
    import json, sys, urllib.request
    from pathlib import Path
    import fer_onnx
    from fer_onnx.web import WebDemoSite, make_server, serve_in_thread, server_url

    site = WebDemoSite.create(runtime=sys.argv[1])
    server = make_server(site, port=0)
    serve_in_thread(server)
    url = server_url(server)

    def get(path):
        with urllib.request.urlopen(url + path, timeout=30) as response:
            return response.read()

    config = json.loads(get("fer-onnx.json"))
    report = {
        "package": fer_onnx.__file__,
        "root": str(site.root),
        "index": get("index.html").decode(),
        "app": len(get("js/app.js")),
        "runtime": get("node_modules/onnxruntime-web/dist/ort.wasm.min.mjs").decode(),
        "models": {c["name"]: len(get(c["url"])) for c in config["classifiers"]},
        "detector": len(get(config["detector"]["url"])),
        "sizes": {name: path.stat().st_size for name, path in site.models.items()},
    }
    server.shutdown()
    print(json.dumps(report))
    """
)


FACTORY_FROM_THE_WHEEL = textwrap.dedent(
    """
    import json
    from fer_onnx_factory.cli import usage
    from fer_onnx_factory.data.framing import FER2013_TEMPLATE
    from fer_onnx_factory.ledger import default_ledger, read

    print(json.dumps({
        "ledger": str(default_ledger()),
        "entries": len(read(default_ledger())),
        "template": FER2013_TEMPLATE.is_file(),
        "usage": usage(),
    }))
    """
)


@pytest.mark.slow
def test_the_installed_wheel_serves_the_page_and_the_models(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for name in (*PAGE_FILES, "js/app.js", "js/recognizer.js"):
        assert f"fer_onnx/web_page/{name}" in names
    assert not [n for n in names if "node_modules" in n]
    # every module and data file of src/ ships (packages are listed by hand in pyproject.toml)
    tracked = subprocess.run(
        ["git", "ls-files", "src"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    sources = {
        Path(path).relative_to("src").as_posix()
        for path in tracked
        if Path(path).suffix in (".py", ".json", ".onnx", ".txt", ".typed")
    }
    assert "fer_onnx/py.typed" in sources
    assert sources - set(names) == set()

    python = venv_with_wheel(tmp_path / "venv", wheel)
    runtime = stand_in_runtime(tmp_path / "runtime")
    env = {**without_pythonpath(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.run(
        [str(python), "-c", SERVE_FROM_THE_WHEEL, str(runtime)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # no checkout around: the page can only come from the wheel
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    venv = (tmp_path / "venv").resolve()
    assert Path(report["package"]).resolve().is_relative_to(venv)
    assert Path(report["root"]).is_relative_to(venv)
    assert Path(report["root"]).name == "web_page"
    assert report["index"] == (PAGE / "index.html").read_text()
    assert report["app"] == (PAGE / "js" / "app.js").stat().st_size
    assert report["runtime"] == f"// {RUNTIME_FILES[0]}\n"
    assert report["models"] == {k: v for k, v in report["sizes"].items() if k != "detector"}
    assert report["models"]
    assert report["detector"] == report["sizes"]["detector"]

    factory = subprocess.run(
        [str(python), "-c", FACTORY_FROM_THE_WHEEL],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not a checkout: the ledger and template come from the wheel
        env=env,
    )
    assert factory.returncode == 0, factory.stderr[-3000:]
    found = json.loads(factory.stdout)
    assert Path(found["ledger"]).resolve().is_relative_to(venv)
    assert found["entries"] >= 5
    assert found["template"] is True
    assert "usage: fer-onnx-factory COMMAND" in found["usage"]

    cli = [str(python), "-m", "fer_onnx.cli", "web", "--port", "0"]
    refused = subprocess.run(
        cli, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert refused.returncode == 2
    assert "fer-onnx web --fetch-runtime" in refused.stderr
