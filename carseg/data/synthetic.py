"""Embedded default data: synthetic studio photos of cars, written in the exact Carvana layout.

Each car is a small 3-D model (lower body and cabin extruded from side profiles, wheels, mirrors,
optional antenna and spoiler) photographed at 16 turntable angles in a studio (light wall and floor,
soft shadow). Rendering is 2x supersampled, so edges are anti-aliased like a real photo, and the
mask is the exact silhouette (windows included, shadow excluded). Everything is deterministic by seed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.progress import Progress

from carseg.data.rle import rle_encode
from carseg.errors import CarsegError

NUM_ANGLES = 16
SUPERSAMPLE = 2
# (name, BGR-free RGB colour); the first few are close to the light studio backdrop on purpose.
PALETTE: list[tuple[str, tuple[int, int, int]]] = [
    ("white", (236, 236, 234)),
    ("pearl", (226, 224, 216)),
    ("silver", (196, 198, 200)),
    ("light grey", (176, 178, 180)),
    ("black", (22, 23, 26)),
    ("dark grey", (70, 72, 76)),
    ("red", (170, 24, 28)),
    ("blue", (30, 60, 140)),
    ("navy", (20, 30, 70)),
    ("green", (30, 90, 50)),
    ("beige", (190, 170, 130)),
    ("yellow", (220, 180, 30)),
    ("orange", (210, 100, 30)),
    ("brown", (90, 60, 40)),
]
MAKES = ["Acura", "Audi", "BMW", "Chevrolet", "Ford", "Honda", "Hyundai", "Kia", "Mazda", "Nissan", "Toyota"]
BODIES = ["sedan", "hatchback", "suv", "coupe", "pickup"]


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; saved as `synth.json` beside the data so a mismatch is detected."""

    num_cars: int = 48
    width: int = 480
    height: int = 320
    seed: int = 0
    jpeg_quality: int = 92


def _car_params(rng: np.random.Generator) -> dict:
    body = BODIES[rng.integers(len(BODIES))]
    length = rng.uniform(4.2, 5.0)
    width = rng.uniform(1.75, 1.95)
    height = {"suv": 1.75, "pickup": 1.8, "coupe": 1.3}.get(body, 1.45) * rng.uniform(0.95, 1.05)
    light = rng.random() < 0.3  # close to the backdrop
    name, colour = PALETTE[rng.integers(0, 4)] if light else PALETTE[rng.integers(4, len(PALETTE))]
    colour = np.clip(np.array(colour) + rng.normal(0, 6, 3), 0, 255)
    return {
        "body": body,
        "length": length,
        "width": width,
        "height": height,
        "clearance": rng.uniform(0.14, 0.24) + (0.08 if body in ("suv", "pickup") else 0.0),
        "belt": rng.uniform(0.52, 0.6),  # belt line as a fraction of height
        "hood": rng.uniform(0.22, 0.3),
        "trunk": rng.uniform(0.12, 0.2) if body in ("sedan", "coupe") else rng.uniform(0.02, 0.06),
        "wheel_r": rng.uniform(0.31, 0.38) + (0.04 if body in ("suv", "pickup") else 0.0),
        "wheelbase": rng.uniform(0.56, 0.62),
        "colour_name": name,
        "colour": colour,
        "rim": rng.uniform(120, 215),
        "antenna": rng.random() < 0.5,
        "spoiler": body in ("hatchback", "coupe") and rng.random() < 0.5,
        "elevation": np.deg2rad(rng.uniform(8, 16)),
        "scale": rng.uniform(0.63, 0.72),
        "year": int(rng.integers(2000, 2017)),
        "make": MAKES[rng.integers(len(MAKES))],
    }


def _profiles(p: dict) -> tuple[np.ndarray, np.ndarray]:
    """Side profiles (x forward, z up) of the lower body and the cabin."""
    length, h, c = p["length"], p["height"], p["clearance"]
    x0, x1 = -length / 2, length / 2
    belt = h * p["belt"]
    hood_x = x1 - p["hood"] * length
    trunk_x = x0 + p["trunk"] * length
    lower = np.array(
        [
            [x1 - 0.05, c],
            [x1, c + 0.25],
            [x1 - 0.06, belt - 0.05],
            [hood_x, belt],
            [trunk_x, belt],
            [x0 + 0.03, belt - 0.04],
            [x0, c + 0.28],
            [x0 + 0.06, c],
        ]
    )
    rake = 0.45 * (h - belt)
    if p["body"] in ("suv", "hatchback"):
        rear = x0 + 0.06 * length
        cabin = [[hood_x, belt], [hood_x - rake * 1.4, h], [rear + 0.12, h], [rear, belt]]
    elif p["body"] == "pickup":
        cab_rear = x0 + 0.45 * length
        cabin = [[hood_x, belt], [hood_x - rake, h], [cab_rear + 0.05, h], [cab_rear, belt]]
    else:
        cabin = [[hood_x, belt], [hood_x - rake * 1.6, h], [trunk_x + rake * 1.3, h], [trunk_x, belt]]
    return lower, np.array(cabin)


def _inset(poly: np.ndarray, amount: float) -> np.ndarray:
    centre = poly.mean(axis=0)
    return centre + (poly - centre) * (1 - amount)


class _Camera:
    """Turntable camera: yaw the car, look at it from a small elevation with mild perspective."""

    def __init__(self, yaw: float, elevation: float, scale: float, size: tuple[int, int], length: float):
        self.yaw, self.elev = yaw, elevation
        width, height = size
        self.pix = scale * width / length
        self.cx, self.cy = width / 2, height * 0.56
        self.distance = 4.0 * length

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World (x, y, z) → camera (u right, v up, t toward the camera)."""
        cy, sy = np.cos(self.yaw), np.sin(self.yaw)
        x = pts[:, 0] * cy - pts[:, 1] * sy
        y = pts[:, 0] * sy + pts[:, 1] * cy
        z = pts[:, 2] - 0.7
        ce, se = np.cos(self.elev), np.sin(self.elev)
        return np.stack([x, y * se + z * ce, -y * ce + z * se], axis=1)

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = self.to_camera(pts)
        f = self.distance / (self.distance - cam[:, 2])
        xy = np.stack([self.cx + self.pix * cam[:, 0] * f, self.cy - self.pix * cam[:, 1] * f], axis=1)
        return xy, cam[:, 2]

    def facing(self, face: np.ndarray, centre: np.ndarray) -> bool:
        """Whether a planar face of a convex-ish part turns toward the camera."""
        cam = self.to_camera(np.vstack([face, centre[None]]))
        normal = np.cross(cam[1] - cam[0], cam[2] - cam[0])
        if np.dot(normal, cam[:-1].mean(0) - cam[-1]) < 0:
            normal = -normal
        eye = np.array([0.0, 0.0, self.distance])
        return float(np.dot(normal, eye - cam[:-1].mean(0))) > 0


class _Canvas:
    """An RGB float canvas plus the car's silhouette, painted polygon by polygon."""

    def __init__(self, background: np.ndarray):
        self.rgb = background
        self.mask = np.zeros(background.shape[:2], np.uint8)

    def paint(
        self,
        xy: np.ndarray,
        colour: np.ndarray,
        alpha: float = 1.0,
        gloss: float = 0.0,
        part_of_car: bool = True,
        thickness: int = 0,
    ) -> None:
        h, w = self.mask.shape
        pts = np.round(xy * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        x0, y0 = np.floor(xy.min(0)).astype(int) - 2
        x1, y1 = np.ceil(xy.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
        shifted = pts - np.array([x0 * 16, y0 * 16], np.int32)
        if thickness:
            cv2.polylines(layer, [shifted], False, 1, thickness, cv2.LINE_8, shift=4)
        else:
            cv2.fillPoly(layer, [shifted], 1, cv2.LINE_8, shift=4)
        if part_of_car:
            self.mask[y0:y1, x0:x1] |= layer
        m = layer.astype(np.float32)[..., None] * alpha
        fill = np.broadcast_to(np.asarray(colour, np.float32), (y1 - y0, x1 - x0, 3))
        if gloss:  # a soft reflection band: sky above, floor below, a highlight between
            v = np.linspace(0, 1, y1 - y0, dtype=np.float32)[:, None, None]
            band = 1 + gloss * (0.5 * np.exp(-((v - 0.3) ** 2) / 0.01) - 0.35 * v)
            fill = np.clip(fill * band + gloss * 60 * np.exp(-((v - 0.3) ** 2) / 0.004), 0, 255)
        crop = self.rgb[y0:y1, x0:x1]
        crop *= 1 - m
        crop += fill * m


def _backdrop(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    width, height = size
    tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.015, 3)
    horizon = rng.uniform(0.42, 0.5) * height
    rows = np.arange(height, dtype=np.float32)[:, None]
    wall = 236 + 14 * (1 - rows / height)
    floor = 214 + 20 * ((rows - horizon) / height)
    blend = 1 / (1 + np.exp(-(rows - horizon) / (0.02 * height)))
    shade = wall * (1 - blend) + floor * blend
    cols = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    shade = shade * (1 - 0.06 * cols**2)
    return np.clip(shade[..., None] * tint[None, None], 0, 255).astype(np.float32), horizon


def _box(cx: float, cy: float, cz: float, dx: float, dy: float, dz: float) -> list[np.ndarray]:
    corners = np.array(
        [[cx + sx * dx, cy + sy * dy, cz + sz * dz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    )
    idx = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
    return [corners[list(i)] for i in idx]


def _prism(profile: np.ndarray, half_width: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Extrude a side profile along y: (two side faces, the strip faces around it)."""
    sides = [
        np.column_stack([profile[:, 0], np.full(len(profile), s), profile[:, 1]]) for s in (-half_width, half_width)
    ]
    strips = []
    for i in range(len(profile)):
        a, b = profile[i], profile[(i + 1) % len(profile)]
        strips.append(
            np.array(
                [
                    [a[0], -half_width, a[1]],
                    [b[0], -half_width, b[1]],
                    [b[0], half_width, b[1]],
                    [a[0], half_width, a[1]],
                ]
            )
        )
    return sides, strips


def _shade(colour: np.ndarray, normal_world: np.ndarray) -> np.ndarray:
    light = np.array([0.3, -0.4, 0.87])
    n = normal_world / (np.linalg.norm(normal_world) + 1e-9)
    return np.clip(colour * (0.55 + 0.5 * max(float(np.dot(n, light)), 0.0)), 0, 255)


def _normal(face: np.ndarray, centre: np.ndarray) -> np.ndarray:
    n = np.cross(face[1] - face[0], face[2] - face[0])
    return -n if np.dot(n, face.mean(0) - centre) < 0 else n


def render_view(
    p: dict, angle_index: int, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render view `angle_index` (0..15) of car `p`: (RGB uint8 image, uint8 mask 0/1)."""
    width, height = size
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    background, _ = _backdrop(np.random.default_rng(p["backdrop_seed"]), big)
    cam = _Camera(np.pi / 2 + angle_index * 2 * np.pi / NUM_ANGLES, p["elevation"], p["scale"], big, p["length"])
    canvas = _Canvas(background)
    length, half_w = p["length"], p["width"] / 2

    # Soft shadow on the floor, under the car.
    ring = np.array(
        [[np.cos(t) * length * 0.56, np.sin(t) * half_w * 1.25, 0.0] for t in np.linspace(0, 2 * np.pi, 40)]
    )
    shadow = np.zeros(canvas.mask.shape, np.float32)
    cv2.fillPoly(shadow, [np.round(cam.project(ring)[0]).astype(np.int32)], 1.0)
    k = int(0.06 * big[0]) | 1
    shadow = cv2.GaussianBlur(shadow, (k, k), 0)
    canvas.rgb *= 1 - 0.5 * shadow[..., None]

    colour = p["colour"]
    glass = np.array([40.0, 48.0, 58.0])
    items: list[tuple[float, list]] = []  # (depth, paint calls), drawn far to near

    def face_item(face: np.ndarray, fill: np.ndarray, part_centre: np.ndarray, **kw) -> None:
        if cam.facing(face, part_centre):
            xy, depth = cam.project(face)
            items.append((float(depth.mean()), [(xy, _shade(fill, _normal(face, part_centre)), kw)]))

    lower, cabin = _profiles(p)
    sides, strips = _prism(lower, half_w)
    lower_centre = np.array([0.0, 0.0, lower[:, 1].mean()])
    for face in strips:
        face_item(face, colour, lower_centre, gloss=0.3)
    for face in sides:
        if cam.facing(face, lower_centre):
            xy, depth = cam.project(face)
            calls = [(xy, _shade(colour, _normal(face, lower_centre)), {"gloss": 0.6})]
            # Head and tail lights at the ends of the side face.
            for x_end, light in ((length / 2 - 0.12, (235, 230, 200)), (-length / 2 + 0.1, (170, 20, 20))):
                z = p["clearance"] + 0.45
                lamp = np.array(
                    [
                        [x_end - 0.12, face[0, 1], z],
                        [x_end + 0.06, face[0, 1], z],
                        [x_end + 0.04, face[0, 1], z + 0.12],
                        [x_end - 0.1, face[0, 1], z + 0.12],
                    ]
                )
                calls.append((cam.project(lamp)[0], np.array(light, float), {}))
            items.append((float(depth.mean()) - 0.5, calls))
    cabin_w = half_w * 0.86
    csides, cstrips = _prism(cabin, cabin_w)
    cabin_centre = np.array([cabin[:, 0].mean(), 0.0, cabin[:, 1].mean()])
    roof_index = 1  # edge from the windshield top to the rear top
    for i, face in enumerate(cstrips):
        is_glass = i in (0, 2)
        face_item(
            face,
            glass if is_glass else colour,
            cabin_centre,
            gloss=0.8 if is_glass else 0.3,
            alpha=0.92 if is_glass else 1.0,
        )
        if i == roof_index and p["antenna"]:
            base = face[0] * 0.15 + face[1] * 0.85
            base = np.array([base[0] - 0.2, 0.0, base[2]])
            tip = base + np.array([-0.25, 0.0, 0.45])
            xy, depth = cam.project(np.array([base, tip]))
            items.append((float(depth.mean()) + 0.01, [(xy, np.array([25.0, 25.0, 25.0]), {"thickness": 3})]))
    for face in csides:
        if cam.facing(face, cabin_centre):
            xy, depth = cam.project(face)
            window = _inset(cabin, 0.14)
            window3d = np.column_stack([window[:, 0], np.full(len(window), face[0, 1]), window[:, 1]])
            calls = [
                (xy, _shade(colour, _normal(face, cabin_centre)), {}),
                (cam.project(window3d)[0], glass, {"alpha": 0.8, "gloss": 0.9}),
            ]
            items.append((float(depth.mean()) - 0.2, calls))
    # Mirrors: small boxes sticking out at the front of the cabin.
    belt = lower[3, 1]
    for side in (-1, 1):
        mirror_centre = np.array([cabin[0, 0] - 0.15, side * (half_w + 0.1), belt + 0.12])
        for face in _box(*mirror_centre, 0.06, 0.1, 0.06):
            face_item(face, colour * 0.9, mirror_centre)
    if p["spoiler"]:
        sp_centre = np.array([cabin[3, 0] + 0.05, 0.0, p["height"] + 0.02])
        for face in _box(*sp_centre, 0.12, cabin_w * 0.95, 0.025):
            face_item(face, colour * 0.8, sp_centre)
    # Wheels: tyre (hull of the outer and inner discs), then rim and hub on the outer disc.
    r, wb = p["wheel_r"], p["wheelbase"] * length / 2
    t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    for wx in (-wb, wb):
        for side in (-1, 1):
            y_out, y_in = side * (half_w - 0.02), side * (half_w - 0.26)

            def disc(y: float, rad: float, wx: float = wx) -> np.ndarray:
                return np.column_stack([wx + rad * np.cos(t), np.full(t.size, y), r + rad * np.sin(t)])

            outer, inner = cam.project(disc(y_out, r))[0], cam.project(disc(y_in, r))[0]
            hull = cv2.convexHull(np.vstack([outer, inner]).astype(np.float32))[:, 0, :]
            calls = [(hull, np.array([28.0, 28.0, 30.0]), {})]
            if cam.facing(disc(y_out, r)[:3], np.array([wx, 0.0, r])):
                calls.append((cam.project(disc(y_out, r * 0.62))[0], np.full(3, p["rim"]), {"gloss": 0.4}))
                calls.append((cam.project(disc(y_out, r * 0.18))[0], np.full(3, p["rim"] * 0.6), {}))
            depth = float(cam.project(np.array([[wx, side * half_w, r]]))[1][0])
            items.append((depth, calls))

    for _, calls in sorted(items, key=lambda item: item[0]):
        for xy, fill, kw in calls:
            canvas.paint(xy, fill, **kw)

    noise = rng.normal(0, 1.5, canvas.rgb.shape).astype(np.float32)
    image = cv2.resize(np.clip(canvas.rgb + noise, 0, 255), size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(canvas.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
    return np.round(image).astype(np.uint8), mask.astype(np.uint8)


def car_ids(spec: SynthSpec) -> list[tuple[str, dict]]:
    """The cars of `spec`: (12-hex id, parameters); car i is the same whatever `num_cars` is."""
    cars = []
    for i in range(spec.num_cars):
        rng = np.random.default_rng([spec.seed, i])
        car_id = rng.bytes(6).hex()
        params = _car_params(rng)
        params["backdrop_seed"] = [spec.seed, i, 1]
        cars.append((car_id, params))
    return cars


def is_complete(out_dir: str | os.PathLike, spec: SynthSpec) -> bool:
    """Whether `out_dir` already holds exactly this synthetic set."""
    meta = Path(out_dir) / "synth.json"
    return meta.is_file() and json.loads(meta.read_text()) == asdict(spec)


def _write_car(tmp: Path, car_id: str, params: dict, spec: SynthSpec) -> tuple[list[list[str]], list]:
    """Render and write one car's 16 views into `tmp`; its train_masks.csv rows and its metadata row."""
    rng = np.random.default_rng(params["backdrop_seed"] + [2])
    rows = []
    for k in range(NUM_ANGLES):
        image, mask = render_view(params, k, (spec.width, spec.height), rng)
        name = f"{car_id}_{k + 1:02d}"
        Image.fromarray(image).save(tmp / "train" / f"{name}.jpg", quality=spec.jpeg_quality)
        gif = Image.frombytes("P", (spec.width, spec.height), mask.tobytes())
        gif.putpalette([0, 0, 0, 255, 255, 255])
        gif.save(tmp / "train_masks" / f"{name}_mask.gif")
        rows.append([f"{name}.jpg", rle_encode(mask)])
    return rows, [car_id, params["year"], params["make"], params["body"], params["colour_name"], ""]


def write_synthetic(out_dir: str | os.PathLike, spec: SynthSpec = SynthSpec(), progress: bool = True) -> Path:
    """Write the synthetic set to `out_dir` in Carvana layout; atomic (a half-written set never shows)."""
    out = Path(out_dir)
    if is_complete(out, spec):
        return out
    if out.exists() and any(out.iterdir()):
        raise CarsegError(
            f"{out} exists but does not hold the synthetic set asked for ({asdict(spec)}); "
            "remove it or point datamodule.data_dir elsewhere"
        )
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "train").mkdir(parents=True)
    (tmp / "train_masks").mkdir()
    cars = car_ids(spec)
    results: list[tuple[list[list[str]], list]] = []
    workers = min(os.cpu_count() or 1, 8, max(1, len(cars) // 4))
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(Progress(transient=True, disable=not progress))
        task = bar.add_task(f"synthesising {spec.num_cars} cars", total=len(cars))
        if workers > 1:  # cars are independent and seeded by id: each worker writes whole cars
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            jobs = [pool.submit(_write_car, tmp, car_id, params, spec) for car_id, params in cars]
        else:
            jobs = None
        for i, (car_id, params) in enumerate(cars):
            results.append(jobs[i].result() if jobs is not None else _write_car(tmp, car_id, params, spec))
            bar.advance(task)
    rows = [row for car_rows, _ in results for row in car_rows]
    meta_rows = [meta for _, meta in results]
    with open(tmp / "train_masks.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["img", "rle_mask"], *rows])
    with open(tmp / "metadata.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "year", "make", "model", "trim1", "trim2"], *meta_rows])
    (tmp / "synth.json").write_text(json.dumps(asdict(spec)))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_complete(out, spec):
            raise
    return out
