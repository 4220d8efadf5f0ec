"""`carseg serve` under load: a fixed number of requests at several concurrencies, against 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from carseg import console
from carseg.bench.measure import random_checkpoint
from carseg.bench.report import show, write
from carseg.errors import CarsegError
from carseg.serving.app import request_memory_bound_mb

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class PeakMemory(threading.Thread):
    """Polls a process's peak resident memory (VmHWM) until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.status, self.peak_kb, self.running = Path(f"/proc/{pid}/status"), 0, True

    def run(self) -> None:
        while self.running:
            try:
                for line in self.status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.2)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _load(url: str, photos: list[bytes], requests: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """Send `requests` uploads with `concurrency` in flight; latencies of the answered ones, statuses of all."""
    latencies: list[float] = []
    statuses: list[int] = []
    counter = iter(range(requests))

    async def user(client: httpx.AsyncClient) -> None:
        for i in counter:
            start = time.perf_counter()
            try:
                response = await client.post(url, files={"file": ("car.jpg", photos[i % len(photos)], "image/jpeg")})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
            except httpx.HTTPError:
                statuses.append(0)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ok = statuses.count(200)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok,
        "rejected (503)": statuses.count(503),
        "errors": len(statuses) - ok - statuses.count(503),
        "req/s": round(ok / seconds, 2),
        "p50 ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p95 ms": round(1000 * _percentile(latencies, 0.95), 1) if latencies else None,
        "p99 ms": round(1000 * _percentile(latencies, 0.99), 1) if latencies else None,
    }


def _photo_at_the_limit(src: Path, megapixels: float) -> bytes:
    """A JPEG of the photo `src` scaled up to just under `megapixels`: the largest photo the server takes."""
    import io

    with Image.open(src) as im:
        scale = (megapixels * 1e6 * 0.999 / (im.width * im.height)) ** 0.5
        big = im.convert("RGB").resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _request_memory(base: str, pid: int, photo: bytes, timeout: float) -> dict[str, Any]:
    """The server's resident memory added by one request for `photo`: its peak during the request (the
    kernel's high-water mark, reset before it) less its memory before."""
    clear, status = Path(f"/proc/{pid}/clear_refs"), Path(f"/proc/{pid}/status")

    def field(name: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(name))
        return int(line.split()[1])

    try:
        clear.write_text("5")  # resets VmHWM to the present VmRSS
    except OSError as err:
        return {"error": f"cannot reset the peak memory of the server ({err})"}
    before = field("VmRSS:")
    start = time.perf_counter()
    answer = httpx.post(f"{base}/api/remove", files={"file": ("big.jpg", photo, "image/jpeg")}, timeout=timeout)
    return {
        "status": answer.status_code,
        "seconds": round(time.perf_counter() - start, 2),
        "added_peak_mb": round((field("VmHWM:") - before) / 1024, 1),
    }


def _wait_until_up(base: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CarsegError(f"carseg serve stopped with exit code {proc.returncode} before it answered")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise CarsegError(f"carseg serve did not answer {base}/health within {seconds:.0f} s")


def run(
    data_dir: str | Path,
    ckpt: str | Path | None = None,
    requests: int = 32,
    concurrency: tuple[int, ...] = (1, 4, 16),
    workers: int = 1,
    queue: int = 8,
    images: int = 8,
    timeout: float = 120.0,
    out: str | Path = "bench/serve.json",
    max_megapixels: float = 50.0,
) -> dict[str, Any]:
    """Start `carseg serve` on 127.0.0.1, send `requests` photos at each concurrency, then one photo at the
    pixel limit to measure a request's memory against the documented bound; stop it; write JSON."""
    files = sorted(Path(data_dir, "train").glob("*.jpg"))[:images] or sorted(Path(data_dir).glob("*.jpg"))[:images]
    if not files:
        raise CarsegError(f"{data_dir}: no JPEG photos (in it or in its train/ folder)")
    photos = [f.read_bytes() for f in files]
    tmp = Path(tempfile.mkdtemp(prefix="carseg-bench-serve-"))
    ckpt = Path(ckpt) if ckpt else random_checkpoint(tmp / "model.ckpt", "unet_resnet18_light", [320, 480])
    port = free_port()
    base = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "carseg.cli", "serve", "--ckpt", str(ckpt), "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers), "--queue", str(queue), "--max-megapixels", str(max_megapixels), "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(proc.pid)
    memory.start()
    try:
        _wait_until_up(base, proc)
        asyncio.run(_load(f"{base}/api/remove", photos, 2, 1, timeout))  # warm-up
        rows = [asyncio.run(_load(f"{base}/api/remove", photos, requests, c, timeout)) for c in concurrency]
        big = _photo_at_the_limit(files[0], max_megapixels)
        at_limit = {"megapixels": round(_jpeg_pixels(big) / 1e6, 2), "upload_mb": round(len(big) / 2**20, 1)}
        at_limit |= _request_memory(base, proc.pid, big, timeout)
    finally:
        memory.running = False
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    capacity = workers + queue
    size = "x".join(map(str, _photo_size(files[0])))
    show(f"carseg serve: POST /api/remove, {size} photos, {workers} worker(s), {queue} waiting places", rows)
    payload = {
        "photos": [str(f) for f in files],
        "photo_size": size,
        "checkpoint": str(ckpt),
        "workers": workers,
        "queue": queue,
        "capacity": capacity,
        "load": rows,
        "server_peak_rss_mb": round(memory.peak_kb / 1024, 1),
        "request_at_pixel_limit": at_limit,
        "request_memory_bound_mb": round(request_memory_bound_mb(max_megapixels)),
    }
    console.info(f"server peak memory {payload['server_peak_rss_mb']} MB")
    added = at_limit.get("added_peak_mb")
    console.info(
        f"one {at_limit['megapixels']} MP photo added {added} MB at its peak "
        f"(bound: {payload['request_memory_bound_mb']} MB a request)"
    )
    write(out, payload)
    return payload


def _jpeg_pixels(data: bytes) -> int:
    import io

    with Image.open(io.BytesIO(data)) as im:
        return im.width * im.height


def _photo_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size
