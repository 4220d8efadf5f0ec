"""The GPU check: run on an offline GPU machine with the bundle of `make device-bundle` beside the project.

`make device-check` (python3 device/check.py) installs carseg's missing requirements from the bundle's wheels
(no index) and carseg itself, editable and without dependencies, then runs each step in its own process under
its own time limit, so that one failure or hang loses none of the others:

- bench_infer:   full-size U-Net ResNet-34 inference per path (eager, bf16, torch.compile modes), batch 1/4/8/16,
                 edge refiner on and off, with mask agreement and peak memory
- bench_predict: `carseg predict --accelerator gpu` end to end on the bundle's photos beside the model alone
- bench_train:   carseg vs a bare loop on CUDA, 320x480 and full size, fp32 / channels-last / bf16
- train:         a short `experiment=carvana_gpu` run at full size on the bundle's cars (`--train-minutes`)
- pytest:        `pytest -m gpu tests/test_gpu.py` (the run's best checkpoint feeds the CUDA-vs-CPU test)
- evaluate:      evaluate.py at full 1918x1280 on the 8 validation cars

Results go to OUT (default $OUT, else device-out/): check.json (written after every step), check.log, and the
steps' JSON. Standard library only: it runs before carseg's requirements are installed. Without a visible CUDA
device it stops at once with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA_EXIT = 3
NO_BUNDLE_EXIT = 2
# in the order they run: the figures first, so that a check cut short still brings them back
STEPS = ("install", "bench_infer", "bench_predict", "bench_train", "train", "pytest", "evaluate")
# each step's own limit in seconds (the check's overall --budget may cut it shorter): at most 7.5 minutes in
# all, so that the check runs twice within 15 minutes of GPU time
LIMITS = {
    "install": 60,
    "bench_infer": 120,
    "bench_predict": 60,
    "bench_train": 60,
    "train": 60,
    "pytest": 60,
    "evaluate": 30,
}
INFER_BUDGET_S = 90  # bench infer's own budget: the rows beyond it are listed as skipped
CUDA_PROBE = (
    "import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
    "'cuda': torch.version.cuda, 'available': ok, 'count': torch.cuda.device_count(), "
    "'name': torch.cuda.get_device_name() if ok else None}))"
)


class Check:
    """Runs the steps, keeping check.json and check.log in `out` up to date."""

    def __init__(self, bundle: Path, out: Path, work: Path, budget: float):
        self.bundle, self.out, self.work = bundle, out, work
        self.deadline = time.monotonic() + budget
        self.result: dict = {"status": "running", "steps": {}}
        self.log = out / "check.log"

    def save(self) -> None:
        (self.out / "check.json").write_text(json.dumps(self.result, indent=2) + "\n")

    def run(self, name: str, commands: list[list[str]], env: dict[str, str] | None = None) -> bool:
        """Run `commands` one after the other as step `name` under its limit; record and return success."""
        limit = min(LIMITS[name], self.deadline - time.monotonic())
        record: dict = {"limit_s": round(limit), "commands": [" ".join(c) for c in commands]}
        self.result["steps"][name] = record
        if limit < 10:
            record.update(status="skipped", why="the check's time budget is spent")
            self.save()
            return False
        start, status = time.monotonic(), "passed"
        with open(self.log, "a") as log:
            for command in commands:
                log.write(f"\n===== {name}: {' '.join(command)}\n")
                log.flush()
                left = start + limit - time.monotonic()
                proc = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                    start_new_session=True,
                )
                try:
                    rc = proc.wait(timeout=max(left, 1))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    status, rc = "timed_out", None
                    break
                if rc != 0:
                    status = "failed"
                    break
        record.update(status=status, rc=rc, seconds=round(time.monotonic() - start, 1))
        print(f"device check: {name}: {status} in {record['seconds']} s", flush=True)
        self.save()
        return status == "passed"


def _probe_cuda() -> dict:
    try:
        done = subprocess.run([sys.executable, "-c", CUDA_PROBE], capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return {"available": False, "torch": None}


def _junit(path: Path) -> dict:
    """Outcome of each test in pytest's JUnit XML."""
    tests = {}
    if path.is_file():
        for case in ET.parse(path).getroot().iter("testcase"):
            outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            tests[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return tests


def _best_checkpoint(run_dir: Path) -> Path | None:
    summary = run_dir / "summary.json"
    if summary.is_file():
        path = json.loads(summary.read_text()).get("best_checkpoint")
        if path and Path(path).is_file():
            return Path(path)
    found = sorted((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
    return next((c for c in found if c.name != "last.ckpt"), found[0] if found else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=".device", help="the folder `make device-bundle` wrote")
    parser.add_argument("--out", default=os.environ.get("OUT") or "device-out", help="where the results go")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"a comma list of {', '.join(STEPS)}")
    parser.add_argument("--budget", type=float, default=420, help="seconds for the whole check")
    parser.add_argument("--train-minutes", type=float, default=0.6, help="length of the short training run")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 2), help="loader workers")
    args = parser.parse_args()
    bundle, out = Path(args.bundle).resolve(), Path(args.out).resolve()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"device check: --steps {','.join(unknown)}: unknown; choose from {', '.join(STEPS)}")
        return NO_BUNDLE_EXIT
    out.mkdir(parents=True, exist_ok=True)
    if not (bundle / "manifest.json").is_file():
        print(f"device check: no bundle at {bundle} (manifest.json missing); run `make device-bundle` first")
        return NO_BUNDLE_EXIT
    cuda = _probe_cuda()
    check = Check(bundle, out, Path(os.environ.get("TMPDIR", "/tmp")) / "carseg-device-check", args.budget)
    check.result.update(cuda=cuda, bundle=json.loads((bundle / "manifest.json").read_text()))
    if not cuda.get("available"):
        check.result["status"] = "no-cuda"
        check.save()
        print(
            f"device check: no CUDA device is visible (torch {cuda.get('torch')}: torch.cuda.is_available() is "
            "False); run it on a GPU machine"
        )
        return NO_CUDA_EXIT
    print(f"device check: {cuda['name']}, torch {cuda['torch']} (CUDA {cuda['cuda']}); steps: {', '.join(steps)}")
    work = check.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    py, data = sys.executable, bundle / "carvana"
    run_dir, eval_dir = work / "run", work / "eval"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "CARSEG_SAMPLE_FULL": str(data)}
    wheels = sorted(
        str(w) for w in (bundle / "wheels").glob("*.whl") if not w.name.startswith(("setuptools-", "wheel-"))
    )
    pip = [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--disable-pip-version-check"]
    if "install" in steps:
        check.run("install", [[*pip, *wheels], [*pip, "--find-links", str(bundle / "wheels"), "-e", str(ROOT)]])
    if "bench_infer" in steps:
        bench = out / "bench_infer.json"
        check.run(
            "bench_infer", [[py, "-m", "carseg.cli", "bench", "infer", str(data), "--device", "cuda", "--images", "16",
                             "--budget", str(INFER_BUDGET_S), "--out", str(bench)]], env
        )  # fmt: skip
    if "bench_predict" in steps:
        bench = out / "bench_predict.json"
        check.run(
            "bench_predict", [[py, "-m", "carseg.cli", "bench", "predict", str(data), "--accelerator", "gpu",
                               "--processes", "1", "--images", "96", "--model", "unet_resnet34", "--out", str(bench)]],
            env,
        )  # fmt: skip
    if "bench_train" in steps:
        bench = out / "bench_train.json"
        check.run(
            "bench_train", [[py, "-m", "carseg.cli", "bench", "train", "--device", "cuda", "--data", str(data),
                             "--out", str(bench)]], env
        )  # fmt: skip
    if "train" in steps:
        seconds = int(args.train_minutes * 60)
        check.run(
            "train",
            [
                [
                    py, "-m", "carseg.entrypoints.train", "experiment=carvana_gpu", f"datamodule.data_dir={data}",
                    "trainer.gpus=1", "model.net.encoder_weights=null", "trainer.max_epochs=1000",
                    f"trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}", "logger=csv",
                    f"datamodule.num_workers={args.workers}", f"hydra.run.dir={run_dir}", "print_config=false",
                    "refiner.max_steps=50", "refiner.data.train_photos=64",
                ]
            ],
            env,
        )  # fmt: skip
        summary = run_dir / "summary.json"
        if summary.is_file():
            check.result["train"] = json.loads(summary.read_text())
            check.save()
    best = _best_checkpoint(run_dir)
    if "pytest" in steps:
        xml = work / "pytest.xml"
        check.run(
            "pytest",
            [[py, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider", "-q", "-rA",
              f"--junitxml={xml}"]],
            {**env, **({"CARSEG_TRAINED_CKPT": str(best)} if best else {})},
        )  # fmt: skip
        check.result["pytest"] = _junit(xml)
        check.save()
    if "evaluate" in steps:
        if best is None:
            check.result["steps"]["evaluate"] = {"status": "skipped", "why": f"no checkpoint under {run_dir}"}
        else:
            check.run(
                "evaluate",
                [[py, "-m", "carseg.entrypoints.evaluate", f"ckpt_path={best}", f"hydra.run.dir={eval_dir}",
                  "print_config=false", "batch_size=4"]],
                env,
            )  # fmt: skip
            if (eval_dir / "metrics.json").is_file():
                check.result["evaluate"] = json.loads((eval_dir / "metrics.json").read_text())
                if (eval_dir / "panels.png").is_file():
                    shutil.copy2(eval_dir / "panels.png", out / "eval_panels.png")
        check.save()
    statuses = [s.get("status") for s in check.result["steps"].values()]
    check.result["status"] = "passed" if statuses and all(s == "passed" for s in statuses) else "failed"
    check.save()
    print(
        f"device check: {check.result['status']}: "
        + ", ".join(f"{k} {v['status']}" for k, v in check.result["steps"].items())
    )
    return 0 if check.result["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
