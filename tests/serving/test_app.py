"""The web service in-process (FastAPI's TestClient): both APIs, options, bad input, access, the queue, metrics."""

import base64
import io
import resource
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from carseg.inference.predictor import Predictor
from carseg.serving.app import ServeConfig, create_app


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def zero_size_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo(tiny_data) -> np.ndarray:
    return np.asarray(Image.open(sorted((tiny_data / "train").glob("*.jpg"))[0]).convert("RGB"))


@pytest.fixture(scope="module")
def predictor(small_ckpt) -> Predictor:
    return Predictor(ckpt=small_ckpt, device="cpu", precision="32")


@pytest.fixture(scope="module")
def expected_mask(predictor, photo) -> np.ndarray:
    return predictor.masks([decode(png_bytes(photo))])[0]


@pytest.fixture(scope="module")
def transparent(predictor, photo) -> np.ndarray:
    """Where the cut-out is fully transparent (the model's alpha rounds to 0)."""
    ((_, alpha),) = predictor.mattes([decode(png_bytes(photo))])
    return alpha * 255 + 0.5 < 1


def client_for(small_ckpt, predictor, **options) -> TestClient:
    return TestClient(create_app(ServeConfig(ckpt=str(small_ckpt), **options), predictor=predictor))


@pytest.fixture(scope="module")
def client(small_ckpt, predictor) -> TestClient:
    with client_for(small_ckpt, predictor) as c:
        yield c


def test_remove_returns_the_cutout_whose_alpha_is_the_mask(client, photo, expected_mask):
    assert 0.05 < expected_mask.mean() < 0.95
    response = client.post("/api/remove", files={"file": ("car.png", png_bytes(photo), "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    rgba = decode(response.content)
    assert rgba.shape == (*photo.shape[:2], 4)
    assert np.array_equal(rgba[..., 3] > 127, expected_mask.astype(bool))  # alpha: the model's probability
    assert ((rgba[..., 3] > 0) & (rgba[..., 3] < 255)).any()
    assert np.array_equal(rgba[..., :3][expected_mask.astype(bool)], photo[expected_mask.astype(bool)])


def test_remove_options_mask_formats_and_backgrounds(client, photo, expected_mask, transparent):
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    mask = decode(client.post("/api/remove", files=files, data={"om": "true"}).content)
    assert mask.ndim == 2 and np.array_equal(mask > 127, expected_mask.astype(bool))
    for fmt, content_type in (("jpg", "image/jpeg"), ("webp", "image/webp")):
        response = client.post("/api/remove", files=files, data={"format": fmt})
        assert (
            response.headers["content-type"] == content_type and decode(response.content).shape[:2] == photo.shape[:2]
        )
    blue = decode(client.post("/api/remove?bgc=0,0,255,255", files=files).content)
    outside = transparent
    assert outside.mean() > 0.1 and blue.shape[2] == 3 and (blue[outside] == [0, 0, 255]).all()
    gradient = decode(client.post("/api/remove", files=files, data={"bg": "gradient:#000000:#ffffff"}).content)
    quarter = len(outside) // 4
    top, bottom = gradient[:quarter][outside[:quarter]], gradient[-quarter:][outside[-quarter:]]
    assert top.size and bottom.size and top.mean() + 100 < bottom.mean()
    wall = np.full((10, 20, 3), (200, 30, 40), np.uint8)
    uploaded = decode(client.post("/api/remove", files={**files, "bg_file": ("bg.png", png_bytes(wall))}).content)
    assert (uploaded[outside] == [200, 30, 40]).all()


def test_shadow_darkens_only_the_ground_under_the_car(client, photo, predictor):
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    plain = decode(client.post("/api/remove", files=files, data={"bg": "white"}).content).astype(int)
    shaded = decode(client.post("/api/remove", files=files, data={"bg": "white", "shadow": "0.6"}).content).astype(int)
    ((mask, alpha),) = predictor.mattes([decode(png_bytes(photo))])
    ground = ~mask.astype(bool)
    # a pixel darkens by at most the shadow's strength times the share of the ground in it (1 - alpha)
    assert ((plain - shaded) <= (1 - alpha[..., None]) * 255 * 0.6 + 1).all()
    assert (shaded <= plain).all() and shaded[ground].mean() < plain[ground].mean() - 1
    refused = client.post("/api/remove", files=files, data={"shadow": "0.5"})
    assert refused.status_code == 400 and "background" in refused.json()["detail"]


def test_removebg_endpoint_speaks_remove_bg(client, photo, expected_mask):
    files = {"image_file": ("car.jpg", jpeg_bytes(photo), "image/jpeg")}
    response = client.post("/v1.0/removebg", files=files)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-type"] == "car" and int(response.headers["x-width"]) == photo.shape[1]
    rows, cols = np.nonzero(decode(response.content)[..., 3] > 127)
    assert (
        int(response.headers["x-foreground-top"]) == rows.min()
        and int(response.headers["x-foreground-left"]) == cols.min()
    )
    small = client.post("/v1.0/removebg", files=files, data={"size": "preview"})
    assert decode(small.content).shape[:2] == photo.shape[:2]  # already under preview's 0.25 megapixels
    alpha = decode(client.post("/v1.0/removebg", files=files, data={"channels": "alpha"}).content)
    assert alpha.ndim == 2
    coloured = client.post("/v1.0/removebg", files=files, data={"bg_color": "81d4fa"})
    assert coloured.headers["content-type"] == "image/jpeg"  # format auto: JPEG where nothing is transparent
    b64 = base64.b64encode(jpeg_bytes(photo)).decode()
    as_json = client.post("/v1.0/removebg", data={"image_file_b64": b64}, headers={"Accept": "application/json"})
    result = as_json.json()["data"]
    assert decode(base64.b64decode(result["result_b64"])).shape[2] == 4 and result["foreground_top"] == rows.min()


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"type": "person"}, 400, "invalid_type"),
        ({"format": "zip"}, 400, "invalid_format"),
        ({"size": "huge"}, 400, "invalid_size"),
        ({"channels": "rgb"}, 400, "invalid_channels"),
        ({"bg_color": "not-a-colour"}, 400, "bad_colour"),
    ],
)
def test_removebg_errors_have_its_shape(client, photo, fields, status, code):
    files = {"image_file": ("car.jpg", jpeg_bytes(photo), "image/jpeg")}
    response = client.post("/v1.0/removebg", files=files, data=fields)
    assert response.status_code == status
    (error,) = response.json()["errors"]
    assert error["code"] == code and list(fields)[0] in error["title"]


def test_removebg_without_an_image_or_with_a_url(client):
    missing = client.post("/v1.0/removebg", data={"size": "auto"})
    assert missing.status_code == 400 and missing.json()["errors"][0]["code"] == "missing_source"
    url = client.post("/v1.0/removebg", data={"image_url": "https://example.com/car.jpg"})
    assert url.status_code == 400 and "image_file" in url.json()["errors"][0]["title"]


def _truncated_jpeg(photo: np.ndarray) -> bytes:
    data = jpeg_bytes(photo)
    return data[: len(data) // 2]


def _hundred_megapixels() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda p: b"", 400, "empty"),
        (lambda p: b"this is not a photo at all", 415, "not a JPEG, PNG or WebP"),
        (_truncated_jpeg, 400, "truncated"),
        (lambda p: _hundred_megapixels(), 413, "100.0 megapixels; the limit is 50"),
        (lambda p: zero_size_png(), 400, "0x0 pixels"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg", "100-megapixels", "0x0-png"],
)
def test_bad_uploads_get_a_4xx_naming_the_problem_and_the_server_goes_on(client, photo, make, status, words):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = client.post("/api/remove", files={"file": ("x.jpg", make(photo), "image/jpeg")})
    assert response.status_code == status and words in response.json()["detail"]
    assert "'file'" in response.json()["detail"]
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 150  # a 100-megapixel photo is refused from its header, never decoded (300 MB as RGB)
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/api/remove", files={"file": ("car.png", png_bytes(photo))}).status_code == 200


def test_a_wrong_field_name_names_the_right_one(client, photo):
    response = client.post("/api/remove", files={"image": ("car.png", png_bytes(photo), "image/png")})
    assert response.status_code == 400 and "'file'" in response.json()["detail"]
    no_body = client.post("/api/remove")
    assert no_body.status_code == 400 and "'file'" in no_body.json()["detail"]
    bad_value = client.post("/api/remove", files={"file": ("car.png", png_bytes(photo))}, data={"feather": "lots"})
    assert bad_value.status_code == 422 and "feather" in bad_value.json()["detail"]


def test_uploads_over_the_limit_are_refused(small_ckpt, predictor, photo):
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)  # ~120 KB as PNG
    with client_for(small_ckpt, predictor, max_upload_mb=0.05) as small:
        response = small.post("/api/remove", files={"file": ("big.png", png_bytes(big), "image/png")})
        assert response.status_code == 413 and "the limit is 0.05 MB" in response.json()["detail"]
        ok = small.post("/api/remove", files={"file": ("car.jpg", jpeg_bytes(photo), "image/jpeg")})
        assert ok.status_code == 200


def test_uploads_keep_their_transparency_and_colour_profile(client, photo):
    """What the upload had transparent stays transparent in every answer; its ICC profile comes back."""
    from PIL import ImageCms

    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:, : photo.shape[1] // 2, 3] = 0  # the left half transparent
    files = {"file": ("car.png", png_bytes(rgba), "image/png")}
    for data in ({}, {"format": "webp"}, {"om": "true"}):
        answer = decode(client.post("/api/remove", files=files, data=data).content)
        alpha = answer if answer.ndim == 2 else answer[..., 3]
        assert alpha[:, : photo.shape[1] // 2].max() == 0, data
    removebg = client.post("/v1.0/removebg", files={"image_file": files["file"]}, data={"channels": "alpha"})
    assert decode(removebg.content)[:, : photo.shape[1] // 2].max() == 0
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=95, icc_profile=icc)
    tagged = {"file": ("p3.jpg", buffer.getvalue(), "image/jpeg")}
    for fmt in ("png", "jpg", "webp"):
        answer = client.post("/api/remove", files=tagged, data={"format": fmt})
        assert Image.open(io.BytesIO(answer.content)).info.get("icc_profile") == icc, fmt


def test_api_keys_that_cannot_work_are_refused_and_health_shows_no_path(small_ckpt, predictor):
    from carseg.errors import CarsegError

    for key, words in (("", "empty"), ("clé", "ASCII"), ("a\nb", "ASCII")):
        with pytest.raises(CarsegError, match=words):
            client_for(small_ckpt, predictor, api_key=key)
    with client_for(small_ckpt, predictor) as plain:
        model = plain.get("/health").json()["model"]
    assert model == small_ckpt.name and "/" not in model


def test_api_key_guards_everything_but_health(small_ckpt, predictor, photo):
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    with client_for(small_ckpt, predictor, api_key="s3cret") as guarded:
        assert guarded.get("/health").status_code == 200
        for path in ("/", "/metrics", "/docs"):
            assert guarded.get(path).status_code == 403
        refused = guarded.post("/api/remove", files=files)
        assert refused.status_code == 403 and "X-Api-Key" in refused.json()["detail"]
        wrong = guarded.post("/v1.0/removebg", files={"image_file": files["file"]}, headers={"X-Api-Key": "guess"})
        assert wrong.status_code == 403 and wrong.json()["errors"][0]["code"] == "auth_failed"
        assert guarded.post("/api/remove", files=files, headers={"X-Api-Key": "s3cret"}).status_code == 200


def _held_predictor(small_ckpt) -> tuple[Predictor, threading.Event, threading.Event]:
    """A predictor whose every photo waits for `gate` (after setting `started`): a worker held busy."""
    gate, started = threading.Event(), threading.Event()

    class HeldPredictor(Predictor):
        def assess(self, images):
            started.set()
            gate.wait(30)
            return super().assess(images)

    return HeldPredictor(ckpt=small_ckpt, device="cpu", precision="32"), gate, started


def test_a_full_queue_answers_503_with_retry_after(small_ckpt, photo):
    slow, gate, started = _held_predictor(small_ckpt)
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    with client_for(small_ckpt, slow, workers=1, queue=0) as busy:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=busy.post("/api/remove", files=files)))
        worker.start()
        assert started.wait(30)
        refused = busy.post("/api/remove", files=files)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
        assert "retry" in refused.json()["detail"]
        assert "carseg_queue_depth 1.0" in busy.get("/metrics").text
        gate.set()
        worker.join(30)
        assert first["r"].status_code == 200
        assert "carseg_queue_rejected_total 1.0" in busy.get("/metrics").text


def test_health_metrics_docs_and_page(client, photo):
    client.post("/api/remove", files={"file": ("car.png", png_bytes(photo), "image/png")})
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["capacity"] == 9
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'carseg_requests_total{endpoint="/api/remove",status="200"}' in metrics.text
    assert 'carseg_request_seconds_bucket{endpoint="/api/remove",le="0.05"}' in metrics.text
    assert client.get("/docs").status_code == 200 and "/v1.0/removebg" in client.get("/openapi.json").text
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "api/remove" in client.get("/static/app.js").text


def test_a_background_over_http_is_never_a_file_of_the_server(client, photo, tmp_path):
    """`bg` names a colour or a gradient: a path of the server is refused like any other wrong colour, the
    same whether the file exists or not (nothing tells a client which files there are)."""
    picture = tmp_path / "secret.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(picture)
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    for bg in (str(picture), "/etc/passwd", "/no/such/file", "x" * 300):
        response = client.post("/api/remove", files=files, data={"bg": bg})
        assert response.status_code == 400, (bg, response.text)
        detail = str(response.json()["detail"])
        assert "not a colour" in detail and "file" not in detail.replace(bg[:57], ""), detail


def test_only_the_hosts_it_is_bound_to_are_answered(small_ckpt, predictor, photo):
    """A page elsewhere cannot drive a local server through DNS rebinding: a request naming another host
    is refused before any work, the bound names are served."""
    from carseg.cli import allowed_hosts

    hosts = allowed_hosts("127.0.0.1", None)
    assert "localhost" in hosts and "127.0.0.1" in hosts and allowed_hosts("0.0.0.0", None) is None
    assert "cars.example.com" in allowed_hosts("0.0.0.0", ["cars.example.com"])
    client = client_for(small_ckpt, predictor, allowed_hosts=hosts)
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    refused = client.post("/api/remove", files=files, headers={"host": "attacker.example"})
    assert refused.status_code == 400 and refused.json()["code"] == "bad_host"  # the API's JSON shape
    assert "attacker.example" in refused.json()["detail"]
    assert client.get("/health", headers={"host": "attacker.example:7000"}).status_code == 400
    assert client.post("/api/remove", files=files, headers={"host": "localhost:7000"}).status_code == 200
    assert client.get("/health", headers={"host": "127.0.0.1:7000"}).status_code == 200


def _bytes_as(picture: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF", "PPM", "ICO"])
def test_only_the_claimed_formats_reach_a_decoder(client, fmt):
    """An allow-list before any decoder: other formats Pillow could open (PostScript, for one, through
    Ghostscript) are refused as no image."""
    data = _bytes_as(Image.new("RGB", (64, 48), (200, 10, 10)), fmt)
    response = client.post("/api/remove", files={"file": ("car.img", data, "application/octet-stream")})
    assert response.status_code == 415 and "not a JPEG, PNG or WebP" in response.text
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n"
    assert client.post("/api/remove", files={"file": ("x.eps", eps)}).status_code == 415


def test_every_image_mode_keeps_its_levels():
    from carseg.serving.images import decode_photo

    ramp = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64500
    grey16 = decode_photo(_bytes_as(Image.fromarray(ramp), "PNG"), "file", 50).rgb
    assert grey16.shape == (48, 64, 3) and grey16.dtype == np.uint8
    np.testing.assert_allclose(grey16[..., 0].astype(float), ramp / 257, atol=1)  # not a white picture
    for mode in ("L", "LA", "P", "RGBA", "1"):
        picture = Image.new("RGB", (32, 24), (90, 90, 90)).convert(mode)
        decoded = decode_photo(_bytes_as(picture, "PNG"), "file", 50).rgb
        assert decoded.shape == (24, 32, 3), mode


@pytest.mark.parametrize("value", ["0,0,0,999", "0,0,0,-1", "256,0,0", "1,2", "0,0,0,0,0"])
def test_colours_are_checked_in_full(client, photo, value):
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    response = client.post(f"/api/remove?bgc={value}", files=files)
    assert response.status_code == 400 and "bgc=" in response.text


def test_a_result_too_large_for_its_format_is_a_4xx():
    from carseg.serving.images import UploadError, encode

    wide = np.zeros((2, 16_400, 3), np.uint8)
    with pytest.raises(UploadError, match="webp holds at most 16383 a side") as err:
        encode(wide, "webp")
    assert err.value.status == 400
    assert encode(wide, "png")[1] == "image/png"


def test_remove_bg_answers_in_its_error_shape_and_takes_base64_up_to_the_limit(client, photo):
    not_form = client.post("/v1.0/removebg", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert not_form.status_code == 400 and "errors" in not_form.json()
    wrong_method = client.get("/v1.0/removebg")
    assert wrong_method.status_code == 405 and wrong_method.json()["errors"][0]["code"] == "method_not_allowed"
    noise = np.random.default_rng(0).integers(0, 255, (560, 840, 3), dtype=np.uint8)  # about 1.4 MB as PNG
    big = png_bytes(noise)
    assert 0.9 * 2**20 < len(big) < 25 * 2**20 * 0.7
    answer = client.post("/v1.0/removebg", data={"image_file_b64": base64.b64encode(big).decode()})
    assert answer.status_code == 200, answer.text[:300]


def test_garbage_is_refused_before_it_takes_a_queue_place(small_ckpt, photo):
    """With the one worker busy and no waiting place, uploads whose headers already say no get their 4xx,
    not 503: the check comes before the queue."""
    slow, gate, started = _held_predictor(small_ckpt)
    good = {"file": ("car.png", png_bytes(photo), "image/png")}
    garbage = [
        ({"file": ("x.png", b"not an image at all", "image/png")}, {}, 415),
        ({"file": ("x.png", b"", "image/png")}, {}, 400),
        ({"file": ("x.png", _hundred_megapixels(), "image/png")}, {}, 413),
        (good, {"format": "gif"}, 400),
        (good, {"bg": "no-such-colour"}, 400),
    ]
    with client_for(small_ckpt, slow, workers=1, queue=0) as busy:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=busy.post("/api/remove", files=good)))
        worker.start()
        try:
            assert started.wait(30)
            for files, data, status in garbage:
                assert busy.post("/api/remove", files=files, data=data).status_code == status
        finally:
            gate.set()
            worker.join(30)
        assert first["r"].status_code == 200
        assert "carseg_queue_rejected_total 0.0" in busy.get("/metrics").text


def test_every_cutout_answers_with_its_quality(client, photo):
    files = {"file": ("car.png", png_bytes(photo), "image/png")}
    rembg = client.post("/api/remove", files=files)
    score = float(rembg.headers["x-carseg-quality"])
    assert 0 <= score <= 1 and rembg.headers["x-carseg-quality-target"] == "raw"  # no calibration fitted
    assert rembg.headers["x-carseg-review"] in ("0", "1")
    image = {"image_file": ("car.png", png_bytes(photo), "image/png")}
    removebg = client.post("/v1.0/removebg", files=image, headers={"Accept": "application/json"})
    body = removebg.json()["data"]["carseg_quality"]
    assert body["score"] == pytest.approx(score, abs=1e-4) and body["calibrated"] is False
    assert body["review"] == (rembg.headers["x-carseg-review"] == "1") == (score < 0.5)  # the raw score's line
    assert float(removebg.headers["x-carseg-quality"]) == pytest.approx(score, abs=1e-4)
