"""The page in a real headless Chromium against a running `carseg serve`: upload a car photo, get its cut-out."""

import base64
import io
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"carseg serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.fixture
def server(small_ckpt):
    port = free_port()
    command = [sys.executable, "-m", "carseg.cli", "serve", "--ckpt", str(small_ckpt), "--port", str(port), "--quiet"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no headless Chromium here (Debian's chromium and chromium-driver packages; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_page_cuts_out_a_real_photo_as_the_cli_does(server, browser, sample_full, small_ckpt, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = sorted((sample_full / "train").glob("*.jpg"))[0]
    cli_out = tmp_path / "cli"
    predict = [
        sys.executable,
        "-m",
        "carseg.cli",
        "predict",
        str(photo),
        "--ckpt",
        str(small_ckpt),
        "--out",
        str(cli_out),
    ]
    subprocess.run([*predict, "--quiet"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    cli_mask = np.asarray(Image.open(cli_out / f"{photo.stem}_mask.png")) > 127

    browser.get(server + "/")
    assert "carseg" in browser.title
    browser.find_element(By.ID, "photos").send_keys(str(photo))
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card.done, .card.failed"))
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert "done" in card.get_attribute("class"), card.find_element(By.CSS_SELECTOR, ".state").text
    browser.save_screenshot(str(tmp_path / "page.png"))
    png_b64 = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(document.querySelector('.card .after').src).then(r => r.arrayBuffer()).then(b => {
          let s = ''; new Uint8Array(b).forEach(x => s += String.fromCharCode(x)); done(btoa(s)); });"""
    )
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))))
    assert rgba.shape == (*cli_mask.shape, 4)
    assert float(np.mean((rgba[..., 3] > 127) == cli_mask)) >= 0.999
    download = browser.find_element(By.CSS_SELECTOR, ".card .download")
    assert download.get_attribute("download") == f"{photo.stem}_cutout.png" and download.is_displayed()
    assert (tmp_path / "page.png").stat().st_size > 10_000
    # the cut-out's quality is shown, and the cut-out opens at its full size, zoomable
    assert "quality" in card.find_element(By.CSS_SELECTOR, ".state").text
    assert 0 <= float(card.get_attribute("data-quality")) <= 1
    card.find_element(By.CSS_SELECTOR, ".zoom").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.getElementById('viewer-image').naturalWidth") > 0
    )
    shown = browser.execute_script(
        "const i = document.getElementById('viewer-image'); return [i.naturalWidth, i.getBoundingClientRect().width]"
    )
    assert shown[0] == cli_mask.shape[1] and abs(shown[1] - shown[0]) <= 1  # 100%: one photo pixel a screen pixel
    browser.find_element(By.ID, "zoom-out").click()
    assert browser.execute_script("return document.getElementById('viewer-image').getBoundingClientRect().width") < (
        shown[0] * 0.7
    )
