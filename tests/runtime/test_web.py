"""The browser demo (examples/web) in headless Chromium: parity with Python, screenshots, timing.

Needs Debian's ``chromium`` and ``chromium-driver`` (or FER_ONNX_CHROMIUM / FER_ONNX_CHROMEDRIVER),
``pip install selenium``, and ``npm ci`` in examples/web; each test skips, saying which is
missing, otherwise. Screenshots of the annotated page are kept under pytest's temporary folder
(``--basetemp`` to choose it); FER_ONNX_WEB_SCREENSHOT=path also copies the one of astronaut.png
there: the warm int8 frame of the timing test (that is how examples/web/screenshot.png is made).
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import MEDIA, ROOT, shared_file

from fer_onnx import EmotionRecognizer, ModelLoadError
from fer_onnx.images import load_image
from fer_onnx.recognizer import DEFAULT_MODEL, bundled_model_path
from fer_onnx.session import SessionConfig
from fer_onnx.web import WebDemoError, WebDemoSite, make_server, serve_in_thread, server_url

WEB = ROOT / "examples" / "web"
PHOTOS = (
    "astronaut.png",
    "obama.jpg",
    "biden.jpg",
    "justin.jpg",
    "two_people.jpg",
    "obama_and_biden.jpg",
)
PROBABILITY_TOLERANCE = 1e-3


def _installed(name: str) -> bool:
    try:
        bundled_model_path(name)
    except ModelLoadError:
        return False
    return True


MODELS = [m for m in ("accurate", "fast", "fp32") if _installed(m)]
"""The bundled classifiers the page lists ("int8" is another name of "fast")."""
DEFAULT = DEFAULT_MODEL if _installed(DEFAULT_MODEL) else "fast"


def probability_tolerance(model: str) -> float:
    """What two runtimes may differ by in a probability from ``model``.

    1e-3 for a float model. An int8 QDQ model has no single correct output: kernels that
    requantize with different arithmetic (wasm and x86, or onnxruntime's fused int8 kernels
    and its unfused QDQ reference) round values near a half step to neighbouring steps, and
    the network carries that on. So the bound is the larger of one step of its quantized
    Softmax output (1/255, read from the file) and what onnxruntime's own two CPU paths differ
    by on the shared photos' faces (:func:`int8_kernel_spread`): the browser may differ from
    Python as much as onnxruntime differs from itself, and no more.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(bundled_model_path(model))).graph
    scales = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    softmax = {out for node in graph.node if node.op_type == "Softmax" for out in node.output}
    steps = [
        float(scales[node.input[1]])
        for node in graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] in softmax
    ]
    if not steps:
        return PROBABILITY_TOLERANCE
    return max([PROBABILITY_TOLERANCE, *steps, int8_kernel_spread(model)])


@functools.cache
def int8_kernel_spread(model: str) -> float:
    """Largest probability difference of ``model`` between onnxruntime's fused int8 kernels
    (graph optimisations on) and its QDQ reference (off) on the faces of the shared photos."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    with EmotionRecognizer(model, device="cpu") as rec:
        crops = []
        for name in PHOTOS:
            image = load_image(shared_file(MEDIA / name))
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            for face in rec.recognize(image):
                b = face.box
                crop = grey[max(b.y, 0) : b.y + b.height, max(b.x, 0) : b.x + b.width]
                crops.append(cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA))
    faces = np.stack(crops)[..., None].astype(np.float32)
    outputs = []
    for level in (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(
            str(bundled_model_path(model)), options, providers=["CPUExecutionProvider"]
        )
        outputs.append(session.run(None, {session.get_inputs()[0].name: faces})[0])
    return float(np.abs(outputs[0] - outputs[1]).max())


BOX_TOLERANCE_PX = 1  # detector outputs come from different float kernels (wasm SIMD vs x86)
LANDMARK_TOLERANCE_PX = 0.05
TIMING_RUNS = 20


def _executable(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def site() -> WebDemoSite:
    try:
        return WebDemoSite.create(WEB)
    except WebDemoError as e:
        pytest.skip(f"browser demo not installed: {e}")


@pytest.fixture(scope="module")
def url(site: WebDemoSite) -> Iterator[str]:
    server = make_server(site, port=0)
    thread = serve_in_thread(server)
    yield server_url(server)
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver(url: str) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    chromium = _executable("FER_ONNX_CHROMIUM", "chromium", "chromium-browser")
    chromedriver = _executable("FER_ONNX_CHROMEDRIVER", "chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "headless Chromium not found: apt-get install chromium chromium-driver "
            "(or set FER_ONNX_CHROMIUM and FER_ONNX_CHROMEDRIVER)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--use-fake-ui-for-media-stream",  # the webcam test gets Chromium's fake camera
        "--use-fake-device-for-media-stream",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    browser.set_script_timeout(300)
    try:
        yield browser
    finally:
        browser.quit()


class Page:
    """The demo page in the browser, driven as a person would (file input, buttons)."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url
        self.loaded: tuple[int, str] | None = None

    def state(self) -> str:
        return str(self.driver.execute_script("return document.body.dataset.state"))

    def wait(self, states: tuple[str, ...], timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state == "error":
                status = self.driver.execute_script(
                    "return document.getElementById('status').textContent"
                )
                logs = [e["message"] for e in self.driver.get_log("browser")]
                pytest.fail(f"page error: {status}\nconsole: {logs}")
            if state in states:
                return state
            time.sleep(0.05)
        pytest.fail(f"page still {self.state()!r} after {timeout}s, expected one of {states}")

    def open(self, threads: int, model: str) -> None:
        if self.loaded == (threads, model):
            return
        self.driver.get(f"{self.url}?threads={threads}&model={model}")
        self.wait(("ready",))
        self.loaded = (threads, model)

    def recognize(self, photo: Path) -> dict[str, Any]:
        from selenium.webdriver.common.by import By

        self.driver.execute_script("document.body.dataset.state = 'submitted'")
        self.driver.find_element(By.ID, "file").send_keys(str(photo))
        self.wait(("done",))
        result: dict[str, Any] = self.driver.execute_script("return window.ferDemo.last")
        assert result["source"] == photo.name
        return result

    def classify_detections(self, faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
        detections = [
            {"box": _box(f), "landmarks": f["landmarks"], "score": f["detection_score"]}
            for f in faces
        ]
        result: list[dict[str, Any]] | str = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.ferDemo.classifyDetections(arguments[0]).then(done, (e) => done(String(e)));",
            detections,
        )
        assert isinstance(result, list), result
        return result

    def benchmark(self, runs: int) -> list[float]:
        times: list[float] = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.ferDemo.benchmark(arguments[0]).then(done, (e) => done(String(e)));",
            runs,
        )
        assert isinstance(times, list), times
        return times

    def screenshot(self, path: Path) -> Path:
        from selenium.webdriver.common.by import By

        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.find_element(By.ID, "result").screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def page(driver: Any, url: str) -> Page:
    return Page(driver, url)


@pytest.fixture(scope="module")
def python_result() -> Callable[[str, Path], list[dict[str, Any]]]:
    recognizers: dict[str, EmotionRecognizer] = {}

    def run(model: str, photo: Path) -> list[dict[str, Any]]:
        rec = recognizers.setdefault(model, EmotionRecognizer(model, device="cpu"))
        return [face.to_dict() for face in rec.recognize(photo)]

    return run


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-screenshots")


def test_server_serves_page_models_and_isolation_headers(site: WebDemoSite, url: str) -> None:
    with urllib.request.urlopen(url + "fer-onnx.json") as response:
        config = json.load(response)
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    names = [c["name"] for c in config["classifiers"]]
    assert config["default"] in names
    assert config["detector"]["options"] == {
        "scoreThreshold": 0.7,
        "nmsThreshold": 0.3,
        "topK": 5000,
        "detectWidth": 320,
    }
    for name in names:
        with urllib.request.urlopen(f"{url}models/{name}.onnx") as response:
            assert response.read() == site.models[name].read_bytes()
    with urllib.request.urlopen(url + "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs") as r:
        assert r.headers["Content-Type"].startswith("text/javascript")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url + "models/nothing.onnx")
    assert info.value.code == 404
    info.value.close()


def test_site_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FER_ONNX_WEB_RUNTIME", raising=False)
    with pytest.raises(WebDemoError, match="source repository"):
        WebDemoSite.create(tmp_path)
    (tmp_path / "index.html").write_text("<!doctype html>")
    with pytest.raises(WebDemoError, match="npm ci"):
        WebDemoSite.create(tmp_path)


def _fake_page(root: Path) -> Path:
    """A page folder with the files the server checks for (no real npm packages)."""
    for name in (
        "index.html",
        "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
        "node_modules/@techstark/opencv-js/dist/opencv.js",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("// stand-in\n")
    return root


def test_site_serves_a_given_classifier_first(tmp_path: Path, tiny_model: Path) -> None:
    site = WebDemoSite.create(_fake_page(tmp_path), model=tiny_model)
    config = site.config()
    assert config["default"] == "custom"
    assert {"name": "custom", "url": "models/custom.onnx", "file": tiny_model.name} in config[
        "classifiers"
    ]
    with pytest.raises(WebDemoError, match="no such file"):
        WebDemoSite.create(tmp_path, model=tmp_path / "missing.onnx")


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    site = WebDemoSite.create(_fake_page(tmp_path))
    server = make_server(site, port=0)
    try:
        with pytest.raises(WebDemoError, match="choose another --port"):
            make_server(site, port=server.server_address[1])
    finally:
        server.server_close()


def test_web_command_prints_the_url_and_serves(tmp_path: Path) -> None:
    script = (
        "import argparse, signal, sys\n"
        # a shell's background job starts with SIGINT ignored, and Python keeps it so
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from fer_onnx.cli.web import add_web_parser\n"
        "parser = argparse.ArgumentParser(prog='fer-onnx')\n"
        "add_web_parser(parser.add_subparsers(dest='command', required=True))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "raise SystemExit(args.func(args))\n"
    )
    argv = [sys.executable, "-c", script, "web", "--port", "0", "--root", str(_fake_page(tmp_path))]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("fer-onnx web demo: http://localhost:"), line
            url = line.split()[3]
            with urllib.request.urlopen(url + "fer-onnx.json", timeout=60) as response:
                assert json.load(response)["default"] == DEFAULT
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 130
        finally:
            if process.poll() is None:  # a failed check must not leave the server running
                process.kill()


def _box(face: dict[str, Any]) -> list[int]:
    box = face["box"]
    return list(box) if isinstance(box, list) else [box[k] for k in ("x", "y", "width", "height")]


def _detection_score(face: dict[str, Any]) -> float:
    """A face's detector score, from the page's result or from ``FaceEmotion.to_dict()``."""
    return float(face["detectionScore"] if "detectionScore" in face else face["detection_score"])


def _compare(browser: list[dict[str, Any]], python: list[dict[str, Any]]) -> dict[str, float]:
    """Largest differences between two runtimes' faces (same faces, same order, same labels)."""
    assert len(browser) == len(python), (browser, python)
    diffs = dict.fromkeys(("box_px", "landmark_px", "detection_score", "probability"), 0.0)
    for b, p in zip(browser, python, strict=True):
        assert b["label"] == p["label"], (b, p)
        assert set(b["probabilities"]) == set(p["probabilities"])
        pairs = {
            "box_px": zip(_box(b), _box(p), strict=True),
            "landmark_px": (
                (u, v)
                for bp, pp in zip(b["landmarks"], p["landmarks"], strict=True)
                for u, v in zip(bp, pp, strict=True)
            ),
            "detection_score": [(b["detectionScore"], _detection_score(p))],
            "probability": ((b["probabilities"][k], v) for k, v in p["probabilities"].items()),
        }
        for key, values in pairs.items():
            diffs[key] = max(diffs[key], *(abs(u - v) for u, v in values))
    return diffs


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", PHOTOS)
def test_browser_matches_python(
    page: Page,
    python_result: Callable[[str, Path], list[dict[str, Any]]],
    screenshots: Path,
    record_property: Callable[[str, object], None],
    model: str,
    name: str,
) -> None:
    photo = shared_file(MEDIA / name)
    page.open(threads=1, model=model)
    result = page.recognize(photo)
    # Twice more, so that the screenshot shows a warm frame time; the results must not change.
    page.benchmark(2)
    again: dict[str, Any] = page.driver.execute_script("return window.ferDemo.last")
    assert again["faces"] == result["faces"]
    shot = page.screenshot(screenshots / f"{model}-{Path(name).stem}.png")
    record_property("screenshot", str(shot))
    assert result["model"] == model
    python = python_result(model, photo)
    assert python, f"Python finds no face in {name}"
    # Crop/align + classifier stages on identical detections: the same model file on the same
    # pixels must give the same probabilities.
    staged = page.classify_detections(python)
    staged_diffs = _compare(staged, python)
    tolerance = probability_tolerance(model)
    assert staged_diffs["probability"] <= tolerance, staged_diffs
    # End to end: the detector too runs in the browser.
    diffs = _compare(result["faces"], python)
    record_property("max_diffs", {"end_to_end": diffs, "same_detections": staged_diffs})
    print(
        f"{model} {name}: {len(python)} face(s); end to end {diffs}; same detections "
        f"{staged_diffs['probability']:.2e}"
    )
    assert diffs["box_px"] <= BOX_TOLERANCE_PX, diffs
    assert diffs["landmark_px"] <= LANDMARK_TOLERANCE_PX, diffs
    assert diffs["detection_score"] <= PROBABILITY_TOLERANCE, diffs
    # Landmarks snap to 1/8 px before the warp (alignment.LANDMARK_GRID), so the detector's
    # last-bit differences between wasm and x86 kernels do not reach the aligned pixels.
    assert diffs["probability"] <= tolerance, diffs


def _python_ms(photo: Path, model: str, threads: int) -> float:
    image = load_image(photo)
    config = SessionConfig(intra_op_threads=threads)
    with EmotionRecognizer(model, device="cpu", session_config=config) as rec:
        rec.recognize(image)  # warm-up
        times = []
        for _ in range(TIMING_RUNS):
            start = time.perf_counter()
            rec.recognize(image)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_frame_time_browser_and_python(
    page: Page,
    python_result: Callable[[str, Path], list[dict[str, Any]]],
    screenshots: Path,
    tmp_path_factory: pytest.TempPathFactory,
    record_property: Callable[[str, object], None],
) -> None:
    photo = shared_file(MEDIA / "astronaut.png")
    rows = []
    for model in MODELS:
        python = python_result(model, photo)
        row = [model]
        for threads in (1, 2):
            page.open(threads=threads, model=model)
            first = page.recognize(photo)
            # The thread count took effect (multi-threaded wasm needs cross-origin isolation)
            # and leaves the results as they were.
            assert first["threads"] == threads
            assert first["isolated"] is True
            _compare(first["faces"], python)
            times = page.benchmark(TIMING_RUNS)
            assert len(times) == TIMING_RUNS
            assert all(math.isfinite(t) and t > 0 for t in times), times
            again: dict[str, Any] = page.driver.execute_script("return window.ferDemo.last")
            assert _compare(again["faces"], first["faces"])["probability"] == 0.0
            row.append(f"{statistics.median(times):.1f}")
            if (model, threads) == (DEFAULT, 1):
                # The README's screenshot: the default model, a warm frame.
                shot = page.screenshot(screenshots / "readme-astronaut.png")
                target = os.environ.get("FER_ONNX_WEB_SCREENSHOT")
                if target:
                    shutil.copyfile(shot, target)
        row += [f"{_python_ms(photo, model, threads):.1f}" for threads in (1, 2)]
        rows.append(row)
    table = "\n".join(
        [
            f"astronaut.png (512x512, 1 face), ms per frame, median of {TIMING_RUNS} runs "
            f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}):",
            "| model | browser, wasm, 1 thread | browser, wasm, 2 threads "
            "| Python, 1 thread | Python, 2 threads |",
            "| --- | ---: | ---: | ---: | ---: |",
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    )
    out = tmp_path_factory.mktemp("web-timing") / "timing.md"
    out.write_text(table + "\n")
    record_property("timing", table)
    print(table)


def test_browser_runs_a_stamped_foreign_model(
    driver: Any, page: Page, site: WebDemoSite, tmp_path: Path, screenshots: Path
) -> None:
    """An RGB NCHW logits model with ImageNet normalisation and no crop template, stamped."""
    pytest.importorskip("onnx")
    from test_model_tools import foreign_classifier

    from fer_onnx.model_tools import stamp_model

    photo = shared_file(MEDIA / "two_people.jpg")
    foreign, _, _ = foreign_classifier(tmp_path / "foreign.onnx", channels=3, size=32)
    stamped = tmp_path / "stamped.onnx"
    labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    stamp_model(
        foreign,
        stamped,
        labels=labels,
        input_size=(32, 32),
        color="rgb",
        value_range=(0.0, 1.0),
        softmax=True,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    with EmotionRecognizer(stamped, device="cpu") as rec:
        python = [face.to_dict() for face in rec.recognize(photo)]
    assert python
    server = make_server(WebDemoSite.create(site.root, model=stamped), port=0)
    thread = serve_in_thread(server)
    try:
        custom = Page(driver, server_url(server))
        custom.open(threads=1, model="custom")
        result = custom.recognize(photo)
        custom.screenshot(screenshots / "custom-two_people.png")
        staged = _compare(custom.classify_detections(python), python)
        diffs = _compare(result["faces"], python)
    finally:
        page.loaded = None  # the shared page must be loaded again
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    print(f"stamped model, two_people.jpg: end to end {diffs}; same detections {staged}")
    assert staged["probability"] <= PROBABILITY_TOLERANCE, staged
    assert diffs["box_px"] <= BOX_TOLERANCE_PX, diffs
    assert diffs["probability"] <= PROBABILITY_TOLERANCE, diffs


def test_webcam_loop_runs_on_a_camera(page: Page) -> None:
    from selenium.webdriver.common.by import By

    page.open(threads=1, model="fast")
    page.driver.find_element(By.ID, "webcam").click()
    deadline = time.monotonic() + 60
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        assert page.state() != "error", page.driver.execute_script(
            "return document.getElementById('status').textContent"
        )
        last = page.driver.execute_script("return window.ferDemo.last")
        if last and last.get("source") == "webcam" and last["frames"] >= 3:
            break
        time.sleep(0.1)
    assert last is not None
    assert last["source"] == "webcam"
    assert last["frames"] >= 3, last
    assert isinstance(last["faces"], list)
    assert last["timings"]["totalMs"] > 0
    page.driver.find_element(By.ID, "webcam").click()  # stop
    assert page.driver.find_element(By.ID, "webcam").text == "Start webcam"


# -- issue 25 item 13: ports, HEAD, hostile paths, a file that is no classifier -----------------


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_web_refuses_a_port_out_of_range(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    from fer_onnx.cli import main

    with pytest.raises(SystemExit) as info:
        main(["web", "--port", port])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected a port number 0..65535" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", [99999, -1, True])
def test_make_server_refuses_a_port_out_of_range(tmp_path: Path, port: int) -> None:
    site = WebDemoSite.create(_fake_page(tmp_path))
    with pytest.raises(WebDemoError, match=r"expected a port number 0\.\.65535"):
        make_server(site, port=port)


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[tuple[WebDemoSite, str]]:
    site = WebDemoSite.create(_fake_page(tmp_path))
    server = make_server(site, port=0)
    serve_in_thread(server)
    try:
        yield site, server_url(server)
    finally:
        server.shutdown()
        server.server_close()


def _raw(url: str, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request with the path sent as is (urllib would quote it); headers any case."""

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.msg, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/fer-onnx.json", "/models/detector.onnx", "/index.html"])
def test_head_answers_like_get(fake_server: tuple[WebDemoSite, str], path: str) -> None:
    _, url = fake_server
    get_status, get_headers, get_body = _raw(url, "GET", path)
    head_status, head_headers, head_body = _raw(url, "HEAD", path)
    assert get_status == head_status == 200
    assert head_body == b""
    assert head_headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))
    assert head_headers["Content-Type"] == get_headers["Content-Type"]
    assert head_headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert _raw(url, "HEAD", "/models/nothing.onnx")[0] == 404


@pytest.mark.parametrize("path", ["/%00", "/models/%00.onnx", "/index.html%00.png", "/%ff"])
def test_hostile_paths_get_an_answer(fake_server: tuple[WebDemoSite, str], path: str) -> None:
    _, url = fake_server
    for method in ("GET", "HEAD"):
        status, _, _ = _raw(url, method, path)
        assert status in (400, 404)
    assert _raw(url, "GET", "/fer-onnx.json")[0] == 200  # the server still serves


def test_web_model_must_be_an_onnx_classifier(tmp_path: Path) -> None:
    page = _fake_page(tmp_path / "page")
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(WebDemoError, match="expected an ONNX expression classifier"):
        WebDemoSite.create(page, model=text)
    from fer_onnx.yunet import bundled_yunet_path

    with pytest.raises(WebDemoError, match="model stamp"):  # ONNX, but a detector
        WebDemoSite.create(page, model=bundled_yunet_path())
