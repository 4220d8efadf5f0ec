"""The web service: rembg's and remove.bg's endpoints, a page, health and metrics, on one loaded model."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import ImageColor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from carseg import __version__
from carseg.data.photo import Photo
from carseg.errors import CarsegError
from carseg.inference.background import colour_background, composite, cutout, fit_background
from carseg.inference.predictor import Predictor
from carseg.serving.images import FORMATS, UploadError, decode_photo, encode, open_photo
from carseg.serving.queue import BoundedQueue, QueueFull
from carseg.serving.telemetry import Telemetry

REMOVEBG = "/v1.0/removebg"
OPEN_PATHS = ("/health",)
RETRY_AFTER_S = 2
# remove.bg's output sizes, as the most pixels of the result (None: the photo's own size)
REMOVEBG_SIZES = {
    "auto": None,
    "full": None,
    "4k": None,
    "50mp": None,
    "preview": 0.25e6,
    "small": 0.25e6,
    "regular": 0.25e6,
    "medium": 1.5e6,
    "hd": 4e6,
}
REMOVEBG_TYPES = ("auto", "car", "transportation")
# memory one request in work may add, per pixel of its photo: the photo, its logits at full size, mask,
# alpha and the encoded result (`make bench-serve` measures it with a photo at the pixel limit)
REQUEST_BYTES_PER_PIXEL = 24


def request_memory_bound_mb(max_megapixels: float) -> float:
    """The most memory (MB) one request in work adds, for photos of up to `max_megapixels`."""
    return REQUEST_BYTES_PER_PIXEL * max_megapixels * 1e6 / 2**20


@dataclass
class ServeConfig:
    """What `carseg serve` is started with."""

    ckpt: str | list[str] | None = None
    onnx: str | None = None
    workers: int = 1
    queue: int = 8
    max_upload_mb: float = 25.0
    max_megapixels: float = 50.0
    api_key: str | None = None
    # the Host names it answers (None: any); requests naming another get 400 (no DNS rebinding)
    allowed_hosts: list[str] | None = None
    predictor: dict[str, Any] = field(default_factory=dict)


@dataclass
class Render:
    """What to make of a photo and its mask."""

    fmt: str = "png"
    only_mask: bool = False
    background: str | np.ndarray | None = None
    feather: float = 0.0
    shadow: float = 0.0
    max_pixels: float | None = None


def parse_colour(text: str, field_name: str) -> str:
    """A colour as rembg (`r,g,b[,a]`), remove.bg (`81d4fa`) or CSS (`white`, `#1e90ff`) write it → `#rrggbb`."""
    text = text.strip()
    parts = text.split(",")
    try:
        if len(parts) in (3, 4):
            values = tuple(int(p) for p in parts)
            if not all(0 <= c <= 255 for c in values):  # the alpha too
                raise ValueError
            rgb = values[:3]
        else:
            hex_digits = len(text) in (3, 6) and all(c in "0123456789abcdefABCDEF" for c in text)
            rgb = ImageColor.getrgb(f"#{text}" if hex_digits else text)[:3]
    except ValueError:
        raise UploadError(
            400, "bad_colour", f"{field_name}={text!r}: write r,g,b, a hex code or a colour name"
        ) from None
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _shrink(picture: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """`picture` resized to `size` (W, H) with the area filter (None stays None)."""
    if picture is None or picture.shape[1::-1] == size:
        return picture
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def render(photo: Photo, mask: np.ndarray, alpha: np.ndarray, how: Render) -> tuple[bytes, str, np.ndarray]:
    """The encoded result, its content type and the mask at the result's size. The mask answers `om` and
    channels=alpha (0/1, as Kaggle's masks); cut-outs and composites go through the model's `alpha`. What the
    photo had transparent stays so (its alpha multiplies the answer's), and its colour profile is kept."""
    image, opacity = photo.rgb, photo.alpha
    h, w = mask.shape
    if how.max_pixels is not None and h * w > how.max_pixels:
        scale = (how.max_pixels / (h * w)) ** 0.5
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image, alpha, opacity = _shrink(image, size), _shrink(alpha, size), _shrink(opacity, size)
        mask = (alpha >= 0.5).astype(np.uint8)
    if how.only_mask:
        picture = mask.astype(np.uint8) * 255
        if opacity is not None:
            picture = ((picture.astype(np.uint16) * opacity + 127) // 255).astype(np.uint8)
    elif how.background is not None:
        size = mask.shape
        if isinstance(how.background, np.ndarray):
            ground = fit_background(how.background, size)
        else:
            try:  # over HTTP a background is text (a colour, a gradient) or an upload, never a path
                ground = colour_background(how.background, size)
            except CarsegError as err:
                raise UploadError(400, "bad_background", str(err)) from None
        picture = composite(image, mask, ground, how.feather, how.shadow, alpha, opacity)
    else:
        if how.shadow:
            raise UploadError(400, "shadow_without_background", "shadow darkens a new background: give one too")
        picture = cutout(image, mask, how.feather, alpha, opacity)
    data, content_type = encode(picture, how.fmt, icc=None if how.only_mask else photo.icc)
    return data, content_type, mask


def _foreground_box(mask: np.ndarray) -> dict[str, int]:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return {"top": 0, "left": 0, "width": 0, "height": 0}
    return {
        "top": int(rows.min()),
        "left": int(cols.min()),
        "width": int(cols.max() - cols.min() + 1),
        "height": int(rows.max() - rows.min() + 1),
    }


def _error(path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """remove.bg's error shape on its endpoint, FastAPI's `detail` (what rembg's clients read) elsewhere."""
    if path.startswith(REMOVEBG):
        body: dict[str, Any] = {"errors": [{"title": message, "code": code}]}
    else:
        body = {"detail": message, "code": code}
    return JSONResponse(body, status_code=status, headers=headers)


def removebg_render(
    size: str, type_: str, format_: str, channels: str, bg_color: str | None, has_bg_file: bool, max_megapixels: float
) -> Render:
    """What remove.bg's form fields ask for, checked (an UploadError naming the field otherwise)."""
    size_key, type_key, fmt, channels = size.lower(), type_.lower(), format_.lower(), channels.lower()
    if size_key not in REMOVEBG_SIZES:
        raise UploadError(400, "invalid_size", f"size={size!r}: choose one of {', '.join(REMOVEBG_SIZES)}")
    if type_key not in REMOVEBG_TYPES:
        raise UploadError(
            400, "invalid_type", f"type={type_!r}: this server cuts out cars ({', '.join(REMOVEBG_TYPES)})"
        )
    if channels not in ("rgba", "alpha"):
        raise UploadError(400, "invalid_channels", f"channels={channels!r}: choose rgba or alpha")
    if fmt == "auto":
        fmt = "jpg" if (bool(bg_color) or has_bg_file) and channels == "rgba" else "png"
    if fmt not in ("png", "jpg", "webp"):
        raise UploadError(400, "invalid_format", f"format={format_!r}: choose auto, png, jpg or webp")
    return Render(
        fmt=fmt,
        only_mask=channels == "alpha",
        background=parse_colour(bg_color, "bg_color") if bg_color else None,
        max_pixels=REMOVEBG_SIZES[size_key] or max_megapixels * 1e6,
    )


def removebg_photo(image: bytes | None, image_b64: str | None, image_url: str | None) -> bytes:
    """The photo of a remove.bg request: an upload, else base64 text; never a URL."""
    if image_url:
        raise UploadError(400, "unsupported_image_url", "image_url: this server fetches nothing; send image_file")
    if image is None and image_b64:
        try:
            image = base64.b64decode(image_b64, validate=True)
        except ValueError:
            raise UploadError(400, "invalid_b64", "image_file_b64 is not valid base64") from None
    if image is None:
        raise UploadError(400, "missing_source", "no image given: send image_file (or image_file_b64)")
    return image


def removebg_headers(mask: np.ndarray) -> dict[str, str]:
    """remove.bg's answer headers: the result's size and the car's box."""
    box = _foreground_box(mask)
    return {
        "X-Type": "car",
        "X-Width": str(mask.shape[1]),
        "X-Height": str(mask.shape[0]),
        "X-Credits-Charged": "0",
        **{f"X-Foreground-{k.title()}": str(v) for k, v in box.items()},
    }


def removebg_json(data: bytes, mask: np.ndarray, quality: dict[str, Any] | None = None) -> bytes:
    """remove.bg's JSON answer (Accept: application/json): the result as base64, the car's box and, carseg's
    own, the cut-out's quality."""
    box = _foreground_box(mask)
    body: dict[str, Any] = {
        "data": {"result_b64": base64.b64encode(data).decode(), **{f"foreground_{k}": v for k, v in box.items()}}
    }
    if quality is not None:
        body["data"]["carseg_quality"] = {k: quality[k] for k in ("score", "calibrated", "target", "review")}
    return json.dumps(body).encode()


def quality_headers(quality: dict[str, Any]) -> dict[str, str]:
    """The cut-out's quality in answer headers: the score (predicted boundary F1 where the checkpoint has a
    calibration), what it predicts, and whether it would be sent to review (under the calibration's own
    threshold: `QualityModel.review_below`)."""
    return {
        "X-Carseg-Quality": f"{quality['score']:.4f}",
        "X-Carseg-Quality-Target": str(quality["target"]),
        "X-Carseg-Review": "1" if quality["review"] else "0",
    }


def check_api_key(key: str, name: str = "api_key") -> None:
    """A usable API key: not empty (an unset shell variable) and ASCII (HTTP headers carry bytes, and a
    non-ASCII key would never match); else a CarsegError naming `name`."""
    if not key:
        raise CarsegError(f"{name} is empty (an unset variable?): give the key, or leave the option out")
    if not key.isascii() or not key.isprintable():
        raise CarsegError(f"{name}: use printable ASCII characters only; HTTP headers carry the key byte for byte")


class Service:
    """One loaded model behind a bounded queue, with the limits and metrics of one app."""

    def __init__(self, config: ServeConfig, predictor: Predictor | None = None):
        if (config.ckpt is None) == (config.onnx is None) and predictor is None:
            raise CarsegError("carseg serve: give exactly one of --ckpt or --onnx")
        if config.max_upload_mb <= 0 or config.max_megapixels <= 0:
            raise CarsegError(
                f"max_upload_mb={config.max_upload_mb:g}, max_megapixels={config.max_megapixels:g}: both must be "
                "positive"
            )
        if config.api_key is not None:
            check_api_key(config.api_key)
        self.config = config
        self.predictor = predictor or Predictor(ckpt=config.ckpt, onnx=config.onnx, **config.predictor)
        self.queue = BoundedQueue(config.workers, config.queue)
        self.telemetry = Telemetry()
        self.telemetry.queue_depth.set_function(lambda: self.queue.pending)
        self.limit = int(config.max_upload_mb * 2**20)  # bytes of one upload

    async def read_upload(self, upload: UploadFile | None, field_name: str, required: bool, hint: str) -> bytes | None:
        """The bytes of an uploaded field (None when absent and not `required`), at most the upload limit."""
        if upload is None or isinstance(upload, str):
            if required:
                raise UploadError(400, "missing_file", f"no {field_name!r} in the request: {hint}")
            return None
        data = await upload.read(self.limit + 1)
        if len(data) > self.limit:
            raise UploadError(
                413, "upload_too_large", f"field {field_name!r} is over the {self.config.max_upload_mb:g} MB limit"
            )
        return data

    def check(self, photo: bytes, field_name: str, how: Render, background: tuple[str, bytes | None]) -> None:
        """Everything the headers and fields can tell, before a place in the queue is taken."""
        open_photo(photo, field_name, self.config.max_megapixels)
        if background[1] is not None:
            open_photo(background[1], background[0], self.config.max_megapixels)
        if how.fmt not in FORMATS:
            raise UploadError(400, "bad_format", f"format {how.fmt!r}: choose one of {', '.join(FORMATS)}")
        if isinstance(how.background, str):
            try:
                colour_background(how.background, (1, 1))
            except CarsegError as err:
                raise UploadError(400, "bad_background", str(err)) from None

    async def process(
        self, photo: bytes, field_name: str, how: Render, background: tuple[str, bytes | None]
    ) -> tuple[bytes, str, np.ndarray, dict[str, Any]]:
        """The encoded result, its content type, the mask at its size and the cut-out's quality, computed on a
        worker thread."""
        self.check(photo, field_name, how, background)
        limit = self.config.max_megapixels

        def job() -> tuple[bytes, str, np.ndarray, dict[str, Any]]:  # reads only its arguments; changes nothing shared
            image = decode_photo(photo, field_name, limit)
            ground = how.background if background[1] is None else decode_photo(background[1], background[0], limit).rgb
            ((mask, alpha, quality),) = self.predictor.assess([image.rgb])
            return (*render(image, mask, alpha, dataclasses.replace(how, background=ground)), quality)

        return await self.queue.run(job)


def service_of(request: Request) -> Service:
    """The app's Service (a FastAPI dependency)."""
    return request.app.state.service


def _count(request: Request, response: Response, start: float) -> Response:
    route = request.scope.get("route")
    endpoint = getattr(route, "path", None) or ("/static" if request.url.path.startswith("/static") else "other")
    telemetry = service_of(request).telemetry
    telemetry.requests.labels(endpoint, str(response.status_code)).inc()
    telemetry.latency.labels(endpoint).observe(time.perf_counter() - start)
    return response


def host_allowed(host: str, allowed: list[str] | None) -> bool:
    """Whether a request's Host header (port aside; "" when absent) names one of `allowed` (None: any;
    "*.example.com" takes its subdomains)."""
    if allowed is None:
        return True
    name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
    name = name.lower()
    return bool(name) and any(
        name == pattern.lower() or (pattern.startswith("*.") and name.endswith(pattern[1:].lower()))
        for pattern in allowed
    )


async def guard_and_measure(request: Request, call_next: Any) -> Response:
    """The Host, the framing, the API key and the declared upload size, checked before anything else; every
    answer counted."""
    start, path, config = time.perf_counter(), request.url.path, service_of(request).config
    if not host_allowed(request.headers.get("host", ""), config.allowed_hosts):
        given = request.headers.get("host")
        message = f"Host {given!r} is not served here" if given else "no Host header: HTTP/1.1 needs one"
        return _count(request, _error(path, 400, "bad_host", message), start)
    if "content-length" in request.headers and "transfer-encoding" in request.headers:
        # RFC 9112 6.1: a message with both may be a smuggling attempt; refuse it and close the connection
        message = "both Content-Length and Transfer-Encoding: send one"
        response = _error(path, 400, "bad_framing", message, headers={"Connection": "close"})
        return _count(request, response, start)
    if config.api_key and path not in OPEN_PATHS:
        given = request.headers.get("x-api-key", "")
        if not secrets.compare_digest(given.encode(), config.api_key.encode()):
            response: Response = _error(path, 403, "auth_failed", "missing or wrong API key: send it in X-Api-Key")
            return _count(request, response, start)
    length = request.headers.get("content-length")
    if request.method == "POST" and length and length.isdigit() and int(length) > service_of(request).limit:
        message = f"upload of {int(length) / 2**20:.1f} MB; the limit is {config.max_upload_mb:g} MB"
        return _count(request, _error(path, 413, "upload_too_large", message), start)
    return _count(request, await call_next(request), start)


async def upload_error(request: Request, err: UploadError) -> JSONResponse:
    return _error(request.url.path, err.status, err.code, err.message)


async def queue_full(request: Request, err: QueueFull) -> JSONResponse:
    service = service_of(request)
    service.telemetry.rejected.inc()
    message = f"all {service.queue.capacity} places are taken; retry in {RETRY_AFTER_S} s"
    return _error(request.url.path, 503, "busy", message, headers={"Retry-After": str(RETRY_AFTER_S)})


async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (an unparsable body, a wrong method, no such path) in the endpoint's shape."""
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return _error(request.url.path, err.status_code, code, str(err.detail), headers=getattr(err, "headers", None))


async def bad_fields(request: Request, err: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in err.errors())
    return _error(request.url.path, 422, "bad_field", f"bad request fields ({problems})")


router = APIRouter()


@router.get("/health", summary="Liveness and the loaded model")
async def health(service: Service = Depends(service_of)) -> dict[str, Any]:
    model = service.config.ckpt or service.config.onnx
    names = [Path(str(m)).name for m in (model if isinstance(model, list) else [model])]  # never the server's paths
    return {
        "status": "ok",
        "model": names[0] if len(names) == 1 else names,
        "queue": service.queue.pending,
        "capacity": service.queue.capacity,
    }


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(service: Service = Depends(service_of)) -> Response:
    return Response(generate_latest(service.telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/api/remove",
    summary="Cut the car out (rembg's endpoint)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
)
async def remove(
    file: UploadFile | None = File(None, description="the photo (JPEG, PNG or WebP)"),
    om: bool = Form(False, description="only the mask (rembg's option)"),
    bgc: str | None = Query(None, description="background colour: r,g,b[,a] (rembg), hex or name"),
    bg: str | None = Form(None, description="background: a colour, or gradient:<top>:<bottom>"),
    bg_file: UploadFile | None = File(None, description="background image"),
    feather: float = Form(0.0, ge=0, le=50, description="soften the edge (Gaussian sigma, pixels)"),
    format: str = Form("png", description="png, jpg or webp"),
    shadow: float = Form(0.0, ge=0, le=1, description="contact shadow under the car (0..1), with a background"),
    model: str | None = Form(None, description="accepted for rembg's clients; carseg has its one model"),
    service: Service = Depends(service_of),
) -> Response:
    photo = await service.read_upload(file, "file", True, "send the photo as the multipart field 'file'")
    background_file = await service.read_upload(bg_file, "bg_file", False, "")
    background = parse_colour(bgc, "bgc") if bgc else bg
    how = Render(fmt=format.lower(), only_mask=om, background=background, feather=feather, shadow=shadow)
    data, content_type, _, quality = await service.process(photo, "file", how, ("bg_file", background_file))
    return Response(data, media_type=content_type, headers=quality_headers(quality))


@router.post(
    REMOVEBG,
    summary="Cut the car out (remove.bg's endpoint)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "application/json": {}}}},
)
async def removebg(
    request: Request,
    image_file: UploadFile | None = File(None, description="the photo"),
    image_file_b64: str | None = Form(None, description="the photo, base64"),
    image_url: str | None = Form(None, description="not supported: send image_file"),
    size: str = Form("auto", description="auto, preview, small, regular, medium, hd, full, 4k"),
    type: str = Form("auto", description="auto, car or transportation: carseg cuts out cars"),
    format: str = Form("auto", description="auto, png, jpg or webp"),
    bg_color: str | None = Form(None, description="background colour: hex (81d4fa) or name"),
    bg_image_file: UploadFile | None = File(None, description="background image"),
    channels: str = Form("rgba", description="rgba (the cut-out) or alpha (the mask alone)"),
    service: Service = Depends(service_of),
) -> Response:
    upload = await service.read_upload(image_file, "image_file", False, "")
    photo = removebg_photo(upload, image_file_b64, image_url)
    background_file = await service.read_upload(bg_image_file, "bg_image_file", False, "")
    how = removebg_render(
        size, type, format, channels, bg_color, background_file is not None, service.config.max_megapixels
    )
    data, content_type, mask, quality = await service.process(
        photo, "image_file", how, ("bg_image_file", background_file)
    )
    headers = {**removebg_headers(mask), **quality_headers(quality)}
    if "application/json" in request.headers.get("accept", ""):
        return Response(removebg_json(data, mask, quality), media_type="application/json", headers=headers)
    return Response(data, media_type=content_type, headers=headers)


STATIC = resources.files("carseg.serving") / "static"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text())


def create_app(config: ServeConfig, predictor: Predictor | None = None) -> FastAPI:
    """The app, with the model loaded once (or `predictor`, already loaded)."""
    service = Service(config, predictor)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.queue.close()

    app = FastAPI(
        lifespan=lifespan,
        title="carseg",
        summary="Cut cars out of photos: rembg- and remove.bg-compatible endpoints, a page, health and metrics.",
        version=__version__,
        # a text field (image_file_b64) may hold an upload at the limit, base64-encoded
        form_limits={"max_part_size": service.limit * 4 // 3 + 4096},
    )
    app.state.service = service
    app.middleware("http")(guard_and_measure)
    app.add_exception_handler(UploadError, upload_error)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_fields)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
