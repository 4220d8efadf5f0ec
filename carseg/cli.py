"""The `carseg` console script: data sets (synth, check, cache, download), predict, serve, export and benchmarks.

Training and evaluation have their own Hydra entry points (`carseg-train`, `carseg-evaluate`). Each command
below imports what it needs when it runs, so that `carseg --help` and the data commands start without
loading torch.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from carseg import console
from carseg.errors import CarsegError, exit_on_user_error

InputSize = str | list[int] | None


def _synth(args: argparse.Namespace) -> None:
    from carseg.data.synthetic import SynthSpec, write_synthetic

    spec = SynthSpec(num_cars=args.num_cars, width=args.width, height=args.height, seed=args.seed)
    out = write_synthetic(args.dir, spec)
    console.info(f"synthetic Carvana-layout set ({spec.num_cars} cars x 16 views, {spec.width}x{spec.height}) in {out}")


def _records(data_dir: str, mask_source: str = "gif"):
    from carseg.data.carvana import extract_kaggle_zips, scan

    extract_kaggle_zips(data_dir)
    return scan(data_dir, mask_source)


def _check(args: argparse.Namespace) -> None:
    from carseg.data.checks import check_dataset

    records = _records(args.dir)
    compared, problems = check_dataset(Path(args.dir), records, progress=not args.quiet)
    cars = len({r.car_id for r in records})
    console.info(f"{len(records)} pairs of {cars} cars checked; GIF and train_masks.csv compared on {compared}")
    for problem in problems:
        print(f"  {problem}")
    if problems:
        raise CarsegError(f"{len(problems)} problem(s) in {args.dir} (listed above)")
    console.info("all good")


def _cache(args: argparse.Namespace) -> None:
    from carseg.data.cache import build_cache
    from carseg.data.checks import check_records

    records = _records(args.dir, args.mask_source)
    problems = check_records(records)
    if problems:
        raise CarsegError(f"{len(problems)} bad input file(s), e.g. {problems[0]}; run `carseg data check {args.dir}`")
    out = build_cache(args.dir, args.size, records)
    console.info(f"{len(records)} pairs cached at {args.size[0]}x{args.size[1]} in {out}")


def _download(args: argparse.Namespace) -> None:
    from carseg.data.download import download

    out = download(args.dir, include_test=args.test)
    console.info(f"Carvana files in {out}")


def _bench_data(args: argparse.Namespace) -> None:
    from carseg.bench.data import run

    run(args.dir, tuple(args.size), args.images, tuple(args.workers), tuple(args.models), args.out)


def parse_input_size(values: Sequence[str]) -> InputSize:
    """`--input-size`: `train` (the checkpoint's training size), `native` (None: each image's own size) or
    `H W` (positive integers)."""
    if len(values) == 1 and values[0] in ("train", "native"):
        return "train" if values[0] == "train" else None
    if len(values) == 2 and all(v.isdigit() and int(v) > 0 for v in values):
        return [int(v) for v in values]
    raise CarsegError(f"--input-size {' '.join(values)}: use train, native, or H W (two positive integers)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model options `carseg predict` and `carseg serve` share: which model, and how it predicts."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--ckpt",
        nargs="+",
        action="extend",
        help="checkpoint(s) written by train.py, a run folder (its best), or a cross-validation folder (its "
        "folds); several (--ckpt A B or --ckpt A --ckpt B) predict as an ensemble",
    )
    source.add_argument("--onnx", help="a model written by `carseg export` (with its edge refiner beside it)")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped photo")
    parser.add_argument("--precision", default="auto", help="auto, 32, bf16 or 16 (checkpoints only)")
    parser.add_argument(
        "--refine-radius", type=int, default=0, help="guided-filter edge refinement at full size (pixels; 0: off)"
    )
    parser.add_argument("--no-refiner", action="store_true", help="leave out the model's edge refiner")
    parser.add_argument(
        "--no-edge-tta",
        action="store_true",
        help="with --tta, refine each edge tile once rather than also its mirror image (faster)",
    )
    parser.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "off", "default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead"],
        help="torch.compile mode (checkpoints only); auto: default mode on a GPU, off on a CPU",
    )


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Predictor's keyword arguments from `add_model_options`' options."""
    from carseg.runs import checkpoints_in

    return {
        "ckpt": [str(p) for p in checkpoints_in(args.ckpt)] if args.ckpt else None,
        "onnx": args.onnx,
        "tta": bool(args.tta),
        "precision": str(args.precision),
        "refine_radius": int(args.refine_radius),
        "edge_refiner": not args.no_refiner,
        "edge_tta": False if args.no_edge_tta else None,
        "compile": str(args.compile),
    }


def _predict(args: argparse.Namespace) -> None:
    from carseg.inference.outputs import check_outputs
    from carseg.inference.predictor import Predictor
    from carseg.inference.run import predict
    from carseg.processes import end_with_launcher

    end_with_launcher()  # a DDP rank started by Lightning's launcher ends with it, even while loading the model
    check_outputs(args.out, args.submission, args.review)  # before the model loads or a photo is read
    predictor = Predictor(**predictor_options(args), input_size=parse_input_size(args.input_size))
    summary = predict(
        args.inputs,
        predictor,
        args.out,
        args.background,
        args.feather,
        args.submission,
        args.batch_size,
        not args.quiet,
        on_error=args.on_error,
        devices=args.devices,
        num_nodes=args.num_nodes,
        accelerator=args.accelerator,
        workers=args.workers,
        shadow=args.shadow,
        write_threads=args.write_threads,
        decode=args.decode,
        review=args.review,
        review_below=args.review_below,
        max_megapixels=args.max_megapixels,
    )
    if summary is None:  # the other processes of a multi-process run: the first one reports
        return
    where = " and ".join(str(p) for p in (args.out, args.submission) if p)
    done = summary.photos - summary.failed
    console.info(
        f"{done} of {summary.photos} photos have their outputs in {where}"
        + (f" ({summary.already_done} from an earlier run)" if summary.already_done else "")
    )
    if summary.failed:
        listed = _first_failures(summary.failures)
        raise CarsegError(
            f"{summary.failed} photo(s) could not be read:\n{listed}\nEach is listed with the reason in "
            f"{summary.failures}. Every other photo was written; fix or remove those files and run the same "
            "command again"
        )


def _first_failures(failures: Path | None, shown: int = 5) -> str:
    """The first `shown` rows of failures.csv as indented lines (path: reason), with a count of the rest."""
    if failures is None or not failures.is_file():
        return "  (no failures.csv)"
    with open(failures, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        rows = list(csv.DictReader(fh))
    lines = ["  " + row["reason"].encode("utf-8", "surrogateescape").decode("utf-8", "replace") for row in rows[:shown]]
    if len(rows) > shown:
        lines.append(f"  ... and {len(rows) - shown} more")
    return "\n".join(lines)


def _refine(args: argparse.Namespace) -> None:
    from carseg.training.run import refine_run

    summary = refine_run(args.run_dir, args.overrides)
    console.info(f"edge refiner written into {len(summary['refiner']['checkpoints'])} checkpoint(s) of {args.run_dir}")


def _export(args: argparse.Namespace) -> None:
    from carseg.extras import require

    require("onnx", "onnx", "carseg export")
    from carseg.inference.export import export_onnx, refiner_path

    out = export_onnx(args.ckpt, args.out, args.opset)
    second = refiner_path(out)
    console.info(f"exported {args.ckpt} to {out}" + (f" and its edge refiner to {second}" if second.is_file() else ""))
    if second.is_file():
        console.info("keep the two files side by side; `--onnx` reads both")


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def allowed_hosts(bound: str, extra: Sequence[str] | None) -> list[str] | None:
    """The Host names `carseg serve` answers: the localhost names and the address it is bound to, plus
    `extra` (--allowed-hosts); bound to every interface without `extra`, any (None)."""
    if bound in ("0.0.0.0", "::") and not extra:
        return None
    return list(dict.fromkeys([*LOCAL_NAMES, bound, *(extra or [])]))


def _audit(args: argparse.Namespace) -> None:
    from carseg.evaluation.audit import audit
    from carseg.runs import checkpoints_in

    audit(args.dir, checkpoints_in(args.ckpt), args.out, args.top, not args.no_tta, args.images)


def _calibrate(args: argparse.Namespace) -> None:
    import json

    from carseg.evaluation.calibrate import calibrate
    from carseg.runs import checkpoints_in

    ckpt = checkpoints_in([args.ckpt])[0]
    report = calibrate(
        ckpt, args.dir, args.target, not args.no_tta, args.images, write=not args.dry_run, photos_csv=args.photos
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        console.info(f"report written to {args.out}")


def _serve(args: argparse.Namespace) -> None:
    import os

    from carseg.extras import require

    for module in ("fastapi", "uvicorn", "multipart", "prometheus_client"):
        require(module, "serve", "carseg serve")
    from carseg.serving.app import ServeConfig, create_app
    from carseg.serving.server import ConnectionLimits, run

    if args.port < 0 or args.port > 65535:
        raise CarsegError(f"--port {args.port}: give 0..65535")
    limits = ConnectionLimits(args.header_timeout, args.body_timeout, args.max_connections)
    for name, value, fix in limits.problems()[:1]:  # the limits' own checks, named as this command's flags
        raise CarsegError(f"--{name.replace('_', '-')} {value}: give {fix}")
    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-megapixels", args.max_megapixels)):
        if not value > 0:
            raise CarsegError(f"{flag} {value}: give a positive number")
    from carseg.serving.app import check_api_key

    if args.api_key is not None:
        check_api_key(args.api_key, "--api-key")
    elif os.environ.get("CARSEG_API_KEY") is not None:
        check_api_key(os.environ["CARSEG_API_KEY"], "CARSEG_API_KEY")
    options = predictor_options(args)
    config = ServeConfig(
        ckpt=options.pop("ckpt"),
        onnx=options.pop("onnx"),
        workers=args.workers,
        queue=args.queue,
        max_upload_mb=args.max_upload_mb,
        max_megapixels=args.max_megapixels,
        api_key=args.api_key if args.api_key is not None else os.environ.get("CARSEG_API_KEY"),
        allowed_hosts=allowed_hosts(args.host, args.allowed_hosts),
        predictor=options,
    )
    if args.workers < 1 or args.queue < 0:
        raise CarsegError(f"--workers {args.workers} --queue {args.queue}: need at least 1 worker and 0 waiting places")
    app = create_app(config)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    console.info(f"serving on http://{shown}:{args.port}/ (API docs: /docs, metrics: /metrics)")
    if args.host != "127.0.0.1" and not config.api_key:
        console.warning(f"listening on {args.host} without --api-key: anyone who reaches it can use it")
    run(app, args.host, args.port, limits, log_level="warning" if args.quiet else "info")


def _bench_train(args: argparse.Namespace) -> None:
    from carseg.bench.train import SMOKE, run

    if args.smoke:
        run(**SMOKE, out=args.out)
    else:
        cuda = args.device == "cuda"
        run(
            steps=args.steps or (10 if cuda else 4),
            warmup=3 if cuda else 2,
            rss=not cuda,
            out=args.out,
            data_dir=args.data,
            device=args.device,
            e2e=args.e2e,
        )


def _bench_infer(args: argparse.Namespace) -> None:
    from carseg.extras import require

    require("onnxruntime", "onnx", "carseg bench infer")
    from carseg.bench.infer import run

    rss = not args.smoke and args.device == "cpu"
    run(
        args.dir,
        args.ckpt,
        args.images,
        compile_=not args.no_compile,
        rss=rss,
        out=args.out,
        device=args.device,
        batches=tuple(args.batch) if args.batch else None,
        refiner=not args.no_refiner,
        budget_s=args.budget,
    )


def _bench_predict(args: argparse.Namespace) -> None:
    from carseg.bench.predict import run

    run(args.dir, args.ckpt, args.images, tuple(args.processes), args.accelerator, args.out, model=args.model)


def _bench_serve(args: argparse.Namespace) -> None:
    from carseg.extras import require

    for module in ("fastapi", "uvicorn", "httpx"):
        require(module, "serve", "carseg bench serve")
    from carseg.bench.serve import run

    run(
        args.dir,
        args.ckpt,
        args.requests,
        tuple(args.concurrency),
        args.workers,
        args.queue,
        out=args.out,
        max_megapixels=args.max_megapixels,
    )


def _bench_ceiling(args: argparse.Namespace) -> None:
    from carseg.bench.ceiling import run

    sizes = [tuple(s) for s in args.size] if args.size else [(160, 240), (320, 480)]
    run(args.dir, sizes, args.images, args.refine_radius, args.out, args.ckpt)


def _bench_recipe(args: argparse.Namespace) -> None:
    from carseg.bench.recipe import run

    run(
        args.experiment,
        args.eval_dir,
        args.out,
        args.refine_radius,
        args.figures,
        args.train_args,
        args.run_dir,
        calibrate_dir=args.calibrate_dir,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carseg", description="carseg: car segmentation on Carvana-style photos")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write the synthetic Carvana-layout data set to DIR")
    synth.add_argument("dir")
    synth.add_argument("--num-cars", type=int, default=48)
    synth.add_argument("--width", type=int, default=480, help="image width (1918 for Carvana's full size)")
    synth.add_argument("--height", type=int, default=320, help="image height (1280 for Carvana's full size)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_synth)
    check = data.add_parser("check", help="check every pair in a Carvana-layout DIR (sizes, decoding, GIF vs RLE)")
    check.add_argument("dir")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_check)
    cache = data.add_parser("cache", help="pre-resize every pair of DIR to --size H W for fast epochs")
    cache.add_argument("dir")
    cache.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), required=True)
    cache.add_argument("--mask-source", choices=["auto", "gif", "rle"], default="auto")
    cache.set_defaults(func=_cache)
    aud = data.add_parser(
        "audit", help="rank DIR's pairs by how much the model's sure prediction disagrees with the given mask"
    )
    aud.add_argument("dir", help="a Carvana-layout folder with masks")
    aud.add_argument(
        "--ckpt",
        nargs="+",
        action="extend",
        required=True,
        help="a cross-validation folder (each pair judged by the fold that held its car out), or checkpoints",
    )
    aud.add_argument("--out", default="audit", help="folder for audit.csv and audit_suspects.png")
    aud.add_argument("--top", type=int, default=12, help="suspects in the panel")
    aud.add_argument("--no-tta", action="store_true")
    aud.add_argument("--images", type=int, help="only the first N pairs")
    aud.set_defaults(func=_audit)
    download = data.add_parser("download", help="download the Carvana competition files with the kaggle package")
    download.add_argument("dir")
    download.add_argument("--test", action="store_true", help="also the 100,064 test images (about 14 GB)")
    download.set_defaults(func=_download)
    pred = commands.add_parser(
        "predict",
        help="masks, cut-outs and composites (or a Kaggle submission) for photos",
        description="Masks, cut-outs and composites (or a Kaggle submission) for photos. Outputs are named "
        "<stem>_mask.png, <stem>_cutout.png (<stem>_composite.jpg); where inputs share a stem (letter case "
        "aside), or the name is taken by an input or a file carseg did not write, <name.ext>_..., then "
        "<folder>__<name.ext>_... . No input and no file carseg did not write is ever written over; outputs of "
        "earlier runs are marked and never read as photos, and a rerun skips finished photos. Cut-outs keep the "
        "photo's colour profile and its transparency.",
    )
    pred.add_argument("inputs", nargs="+", help="JPEG/PNG/WebP files or folders of them (not searched below)")
    add_model_options(pred)
    pred.add_argument(
        "--out", help="folder for <name>_mask.png, <name>_cutout.png (and _composite.jpg); see the naming rule above"
    )
    pred.add_argument(
        "--max-megapixels",
        type=float,
        default=100.0,
        help="photos whose header claims more pixels are listed in failures.csv, never decoded",
    )
    pred.add_argument("--background", help="composite over this colour (white, #1e90ff) or image file")
    pred.add_argument("--feather", type=float, default=0.0, help="soften the cut-out edge (Gaussian sigma, pixels)")
    pred.add_argument(
        "--shadow",
        type=float,
        nargs="?",
        const=0.5,
        default=0.0,
        help="a soft contact shadow under the car on the --background (strength 0..1; 0.5 alone)",
    )
    pred.add_argument("--submission", help="write Kaggle's img,rle_mask CSV here")
    pred.add_argument("--batch-size", type=int, default=4)
    pred.add_argument(
        "--on-error",
        choices=["skip", "stop"],
        default="skip",
        help="a photo that cannot be read: skip (default: list it in failures.csv, write every other photo, "
        "exit non-zero) or stop (the run stops at it)",
    )
    pred.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs per node; more than 1: DDP")
    pred.add_argument("--num-nodes", type=int, default=1, help="machines (under a cluster launcher such as SLURM)")
    pred.add_argument("--accelerator", choices=["cpu", "gpu", "auto"], default="auto")
    pred.add_argument("--workers", type=int, default=2, help="photo-decoding worker processes per device")
    pred.add_argument(
        "--review",
        metavar="CSV",
        help="write every photo's quality score (predicted boundary F1 where the checkpoint has a calibration, "
        "else the raw score), worst first; the Kaggle submission is unchanged",
    )
    pred.add_argument(
        "--review-below",
        type=float,
        metavar="X",
        help="also copy the photos scoring under X, with their cut-outs, into review/ beside the CSV, with a "
        "contact sheet",
    )
    pred.add_argument(
        "--decode",
        choices=["auto", "cpu", "device"],
        default="auto",
        help="where JPEGs are decoded: cpu (the loader workers), device (on the model's device: nvJPEG on a GPU, "
        "with a CPU fallback per photo) or auto (device on a GPU, else cpu); the same truncation checks either way",
    )
    pred.add_argument(
        "--write-threads",
        type=int,
        help="threads per device that encode and write the outputs beside the model (default: 4 on a GPU, 0 on "
        "CPUs: written in the predict loop)",
    )
    pred.add_argument("--input-size", nargs="+", default=["train"], help="train (default), native, or H W")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_predict)
    serve = commands.add_parser("serve", help="background removal as a web service and page (FastAPI + uvicorn)")
    add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    serve.add_argument("--port", type=int, default=7000)
    serve.add_argument("--workers", type=int, default=1, help="inference threads sharing the one loaded model")
    serve.add_argument("--queue", type=int, default=8, help="requests that may wait; beyond them: 503 + Retry-After")
    serve.add_argument("--max-upload-mb", type=float, default=25.0)
    serve.add_argument("--max-megapixels", type=float, default=50.0, help="larger photos are refused (413)")
    serve.add_argument(
        "--allowed-hosts",
        nargs="+",
        metavar="NAME",
        help="Host names it answers besides localhost and the bound address (behind a proxy or a DNS name; "
        "*.example.com for subdomains); others get 400",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a request's headers must arrive within S seconds of its first byte (or of the connection); "
        "else 408 and the connection is closed (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="its body (the upload) within S seconds of the headers; else the connection is closed (default 60)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=128,
        metavar="N",
        help="open connections at once; one more gets 503 and is closed (default 128). Idle keep-alive "
        "connections close after 5 s",
    )
    serve.add_argument("--api-key", help="require it in X-Api-Key on every endpoint but /health (or CARSEG_API_KEY)")
    serve.add_argument("--quiet", action="store_true", help="no access log")
    serve.set_defaults(func=_serve)

    refine = commands.add_parser(
        "refine", help="train (again) the edge refiner of a finished training run, into its checkpoints"
    )
    refine.add_argument("run_dir", help="the run's folder (logs/train/runs/<time>)")
    refine.add_argument("overrides", nargs="*", help="config overrides (refiner=edge refiner.max_steps=2000 ...)")
    refine.set_defaults(func=_refine)

    cal = commands.add_parser(
        "calibrate",
        help="fit the quality score's calibration on cars the model did not train on, into the checkpoint",
    )
    cal.add_argument("dir", help="a Carvana-layout folder with masks, of cars the model never trained on")
    cal.add_argument("--ckpt", required=True, help="the checkpoint (or run folder: its best) to calibrate")
    cal.add_argument("--target", choices=["boundary_f1", "iou"], default="boundary_f1", help="what the score predicts")
    cal.add_argument("--no-tta", action="store_true", help="calibrate for prediction without flip TTA")
    cal.add_argument("--images", type=int, help="only the first N photos")
    cal.add_argument("--dry-run", action="store_true", help="report only; leave the checkpoint as it is")
    cal.add_argument("--out", help="also write the report as JSON")
    cal.add_argument("--photos", help="also write every photo's signals and true scores as CSV")
    cal.set_defaults(func=_calibrate)

    export = commands.add_parser("export", help="export a checkpoint to ONNX (dynamic batch and size)")
    export.add_argument("--ckpt", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--opset", type=int, default=17)
    export.set_defaults(func=_export)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    bench_data = bench.add_parser("data", help="input pipeline speed next to the training step")
    bench_data.add_argument("dir", help="a Carvana-layout folder of real photos (`make bench-data` passes one)")
    bench_data.add_argument("--size", type=int, nargs=2, default=[320, 480], metavar=("H", "W"))
    bench_data.add_argument("--images", type=int, default=64)
    bench_data.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    bench_data.add_argument("--models", nargs="+", default=["unet_resnet18_light", "unet_resnet34"])
    bench_data.add_argument("--out", default="bench/data.json")
    bench_data.set_defaults(func=_bench_data)
    ceiling = bench.add_parser("ceiling", help="the best full-size IoU reachable at smaller model sizes")
    ceiling.add_argument("dir", help="a Carvana-layout folder (full-size photos and masks)")
    ceiling.add_argument(
        "--size", type=int, nargs=2, action="append", metavar=("H", "W"), help="repeatable (160 240 and 320 480)"
    )
    ceiling.add_argument("--images", type=int, help="only the first N pairs")
    ceiling.add_argument("--refine-radius", type=int, default=8)
    ceiling.add_argument("--ckpt", help="also the edge refiner's ceiling on this model: the truth pasted into its band")
    ceiling.add_argument("--out", default="bench/ceiling.json")
    ceiling.set_defaults(func=_bench_ceiling)
    recipe = bench.add_parser("recipe", help="train an experiment, then score it at full resolution (JSON)")
    recipe.add_argument("--experiment", default="carvana_cpu")
    recipe.add_argument("--eval-dir", required=True, help="a Carvana-layout folder to score at full size")
    recipe.add_argument(
        "--refine-radius", type=int, default=0, help="also score with guided-filter refinement of this radius (0: not)"
    )
    recipe.add_argument("--figures", help="copy the curves and panels here as small PNGs")
    recipe.add_argument("--run-dir", help="score this finished training run instead of training")
    recipe.add_argument(
        "--calibrate-dir",
        help="fit the quality score on this folder of cars the model never saw (default: --eval-dir, car by car)",
    )
    recipe.add_argument("--out", default="bench/recipe.json")
    recipe.add_argument("train_args", nargs="*", help="more train.py overrides (key=value)")
    recipe.set_defaults(func=_bench_recipe)
    bench_train = bench.add_parser("train", help="training images/s: carseg's Trainer path vs a bare PyTorch loop")
    bench_train.add_argument("--steps", type=int, help="timed steps per measurement (default: 4 on cpu, 10 on cuda)")
    bench_train.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench_train.add_argument("--e2e", metavar="EXPERIMENT", help="also one real epoch of this recipe (carvana_cpu)")
    bench_train.add_argument("--data", help="a Carvana-layout folder of real files: also measure loader rates")
    bench_train.add_argument("--smoke", action="store_true", help="a tiny run that checks the benchmark works")
    bench_train.add_argument("--out", default="bench/train.json")
    bench_train.set_defaults(func=_bench_train)
    bench_infer = bench.add_parser("infer", help="full-resolution inference paths, speed and agreement")
    bench_infer.add_argument("dir", help="a Carvana-layout folder (or folder of photos) at full size")
    bench_infer.add_argument("--ckpt", help="a trained checkpoint (default: an untrained U-Net ResNet-34)")
    bench_infer.add_argument("--images", type=int, default=3)
    bench_infer.add_argument("--no-compile", action="store_true")
    bench_infer.add_argument(
        "--batch", type=int, nargs="+", help="batch sizes (default: 1 on a CPU, 1 4 8 16 on a GPU)"
    )
    bench_infer.add_argument("--no-refiner", action="store_true", help="only without the edge refiner")
    bench_infer.add_argument("--budget", type=float, help="seconds; the rows beyond it are listed as skipped")
    bench_infer.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench_infer.add_argument("--smoke", action="store_true", help="no memory measurement")
    bench_infer.add_argument("--out", default="bench/infer.json")
    bench_infer.set_defaults(func=_bench_infer)
    bench_predict = bench.add_parser("predict", help="full-size photos/s of `carseg predict` with 1, 2, ... processes")
    bench_predict.add_argument("dir", help="a Carvana-layout folder (or folder of photos) at full size")
    bench_predict.add_argument("--ckpt", help="a trained checkpoint (default: the light U-Net untrained, at 320x480)")
    bench_predict.add_argument("--images", type=int, default=64)
    bench_predict.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    bench_predict.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    bench_predict.add_argument(
        "--model",
        help="without --ckpt: an untrained conf/model at native size (unet_resnet34: full-size inference as on a "
        "GPU); default the light U-Net at 320x480",
    )
    bench_predict.add_argument("--out", default="bench/predict.json")
    bench_predict.set_defaults(func=_bench_predict)
    bench_serve = bench.add_parser("serve", help="`carseg serve` under load on 127.0.0.1: req/s, latency, memory")
    bench_serve.add_argument("dir", help="a Carvana-layout folder (or folder of photos) to upload")
    bench_serve.add_argument("--ckpt", help="a trained checkpoint (default: the light U-Net untrained, at 320x480)")
    bench_serve.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    bench_serve.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    bench_serve.add_argument("--workers", type=int, default=1)
    bench_serve.add_argument("--queue", type=int, default=8)
    bench_serve.add_argument(
        "--max-megapixels", type=float, default=50.0, help="the server's pixel limit; one photo at it measures memory"
    )
    bench_serve.add_argument("--out", default="bench/serve.json")
    bench_serve.set_defaults(func=_bench_serve)
    return parser


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
