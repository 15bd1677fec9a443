"""The Gradio app in headless Chromium: upload (previews, face-crop defaults), animate,
play; a bad upload's error line in the page's words."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest
from animate_fixtures import REAL, tiny_checkpoint

from asrth_jax import media

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [name for name, ok in (
    ("gradio", importlib.util.find_spec("gradio")),
    ("selenium", importlib.util.find_spec("selenium")),
    ("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
    ("real clips", (REAL / "529_2.mp4").exists())) if not ok]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} "
                                "(CI installs them: .ci/run)")
PAGE_TIMEOUT = 900  # first request compiles the model on a shared 2-core CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, jax_env):
    root = tmp_path_factory.mktemp("app")
    files = tiny_checkpoint(root)
    port = _free_port()
    log = (root / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asrth_jax.app", "--checkpoint", files["ckpt"],
         "--config", files["config"], "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=jax_env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app exited: {(root / 'app.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"app did not answer: {(root / 'app.log').read_text()[-2000:]}")
            time.sleep(1)
        yield {"url": url, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _open(browser, url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 120).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#animate")))


def _upload(browser, elem_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    field = browser.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]")
    field.send_keys(str(path))
    # the file is uploaded when the component offers it for download
    WebDriverWait(browser, 120).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, f'#{elem_id} a[download="{path.name}"]'))


def _three_frame_clip(tmp_path: Path) -> Path:
    clip = tmp_path / "talk3.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-i",
                    str(REAL / "529_2.mp4"), "-frames:v", "3", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    return clip


@pytest.mark.browser
def test_upload_animate_and_play(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server["url"])
    _upload(browser, "portrait", REAL / "demo_img_1.jpg")
    # the preview arrives and, the portrait being larger than the model's 64x64, face
    # crop and paste-back are turned on, so the result has the portrait's 512x512
    WebDriverWait(browser, 120).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#portrait-preview img[src]"))
    WebDriverWait(browser, 60).until(
        lambda b: "green box" in b.find_element(By.ID, "portrait-info").text)
    for elem_id in ("crop", "paste-back"):
        assert browser.find_element(By.CSS_SELECTOR, f"#{elem_id} input").is_selected()
    _upload(browser, "driving", _three_frame_clip(tmp_path))
    WebDriverWait(browser, 120).until(
        lambda b: "3 frames at 15 fps" in b.find_element(By.ID, "driving-info").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#driving-preview img[src]")
    assert browser.find_element(By.ID, "stop").is_displayed()
    browser.find_element(By.ID, "animate").click()
    video = WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#result-video video[src]") or
        b.find_elements(By.CSS_SELECTOR, ".toast-body"))[0]
    assert video.tag_name == "video", video.text
    # the browser decoded it: metadata with a positive duration
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script("return arguments[0].readyState", video) >= 1)
    assert browser.execute_script("return arguments[0].duration", video) > 0
    shot = tmp_path / "app_result.png"
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    local = tmp_path / "downloaded.mp4"
    with urllib.request.urlopen(video.get_attribute("src"), timeout=60) as response:
        local.write_bytes(response.read())
    cap = cv2.VideoCapture(str(local))
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count += 1
        assert frame.shape[:2] == (512, 512)
    cap.release()
    assert count == 3
    assert "3 frames" in browser.find_element(By.ID, "status").text


@pytest.mark.browser
def test_bad_portrait_shows_one_line_error(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    fake = tmp_path / "portrait.jpg"
    fake.write_text("this is a text file, not a JPEG\n")
    _open(browser, server["url"])
    _upload(browser, "portrait", fake)
    _upload(browser, "driving", REAL / "demo_img_2.jpg")
    browser.find_element(By.ID, "animate").click()
    # the toast is inserted before its text is filled in: wait for the text itself
    from selenium.common.exceptions import StaleElementReferenceException

    text = WebDriverWait(browser, PAGE_TIMEOUT,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: next((toast.text for toast in b.find_elements(By.CSS_SELECTOR, ".toast-body")
                        if toast.text.strip()), None))
    # the toast's last line is the message: the upload's name, no server folder
    assert text.splitlines()[-1].startswith("cannot read image portrait.jpg: "), text
    assert "cannot read image portrait.jpg" in browser.find_element(By.ID, "portrait-info").text
    assert "Traceback" not in browser.page_source
    browser.save_screenshot(str(tmp_path / "app_error.png"))


def test_bad_start_is_one_line(tmp_path, capsys):
    from asrth_jax import app

    assert app._parse(["--checkpoint", "c", "--config", "f"]).host == "127.0.0.1"
    config = tmp_path / "tiny.py"
    from test_inference import tiny_config_file

    tiny_config_file(config)
    with pytest.raises(SystemExit) as exc:
        app.main(["--checkpoint", str(tmp_path / "none"), "--config", str(config)])
    message = str(exc.value.code)
    assert message.startswith("error: ") and "does not exist" in message and "\n" not in message
    with pytest.raises(SystemExit) as exc:
        app.main(["--checkpoint", "c", "--config", str(config), "--port", "70000"])
    assert "--port" in str(exc.value.code)


@pytest.mark.browser
def test_stop_ends_a_long_animation(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server["url"])
    _upload(browser, "portrait", REAL / "demo_img_1.jpg")
    _upload(browser, "driving", REAL / "390.mp4")  # 240 frames; the limit keeps all
    WebDriverWait(browser, 120).until(
        lambda b: "240 frames at 24 fps" in b.find_element(By.ID, "driving-info").text)
    browser.find_element(By.ID, "animate").click()
    # once the progress bar counts frames the request is rendering: stop it
    WebDriverWait(browser, PAGE_TIMEOUT, poll_frequency=0.2).until(
        lambda b: "animating" in b.find_element(By.TAG_NAME, "body").text)
    browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda b: "Stopped after" in b.find_element(By.ID, "status").text)
    status = browser.find_element(By.ID, "status").text
    assert "of 240 frames; nothing was kept." in status, status
    assert not browser.find_elements(By.CSS_SELECTOR, "#result-video video[src]")
