# carseg: `make train` and `make test` do all set-up themselves (venv, install, data).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install train evaluate test test-fast lint format data bench bench-data bench-train bench-infer bench-predict bench-serve bench-ceiling bench-carvana device-bundle device-check clean
CARVANA ?= ../shared/carvana
CARVANA_SAMPLE ?= $(CARVANA)/sample_full

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); if [ "$$free" -lt 8 ]; then \
		echo "warning: $${free} GB free on this disk; installing into $(VENV) (torch and its CUDA libraries) needs about 7 GB" >&2; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install carseg with dev tools (again only when pyproject.toml changes)

train: install  ## train the default model on the embedded synthetic data (ARGS="key=value ..." to override)
	$(PY) train.py $(ARGS)

evaluate: install  ## validation metrics of the newest run's best checkpoint (ARGS="ckpt_path=..." to choose)
	$(PY) evaluate.py $(ARGS)

test: install  ## the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## tests that neither train nor spawn processes (the rest are marked slow)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install  ## ruff lint and format check, and the package's layers (import-linter contract in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install  ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

data: install  ## write the embedded synthetic data set to data/ (train does this by itself)
	$(VENV)/bin/carseg data synth data/synthetic_48cars_240x160_seed0

bench-data: install  ## input pipeline speed (decode, reduced decode, cache; 0/1/2 workers) -> bench/data.json
	$(VENV)/bin/carseg bench data $(CARVANA_SAMPLE) --out bench/data.json

bench-train: install  ## training img/s, carseg vs a bare PyTorch loop (fp32, channels_last, bf16) -> bench/train.json
	$(VENV)/bin/carseg bench train --data $(CARVANA_SAMPLE) --out bench/train.json

bench-infer: install  ## full-resolution inference paths (eager, channels_last, bf16, compile, ONNX) -> bench/infer.json
	$(VENV)/bin/carseg bench infer $(CARVANA_SAMPLE) --out bench/infer.json $(ARGS)

bench-predict: install  ## carseg predict at full size, 1 and 2 processes; hours for Kaggle's 100,064 photos -> bench/predict.json
	$(VENV)/bin/carseg bench predict $(CARVANA_SAMPLE) --out bench/predict.json $(ARGS)

bench-serve: install  ## `carseg serve` on 127.0.0.1 under 32 requests at concurrency 1, 4, 16 -> bench/serve.json
	$(VENV)/bin/carseg bench serve $(CARVANA_SAMPLE) --out bench/serve.json $(ARGS)

bench-ceiling: install  ## the full-size IoU a perfect model reaches at 160x240 and 320x480 -> bench/ceiling.json
	$(VENV)/bin/carseg bench ceiling $(CARVANA_SAMPLE) --out bench/ceiling.json $(ARGS)

bench-carvana: install  ## the real-data recipe: train experiment=carvana_cpu, fit the quality score on its unseen train_full_32 cars, score at 1918x1280 -> bench/carvana_cpu.json
	$(VENV)/bin/carseg bench recipe --experiment carvana_cpu --eval-dir $(CARVANA_SAMPLE) \
		--calibrate-dir $(CARVANA)/train_full_32 --out bench/carvana_cpu.json --figures docs/results $(ARGS)

bench: bench-data bench-train bench-infer bench-predict bench-serve  ## the speed benchmarks (bench-carvana, an hour of training, runs on its own)

device-bundle: install  ## wheels and real photos for `make device-check` on an offline GPU machine -> .device/ (<= 55 MiB)
	$(PY) device/bundle.py --out .device --carvana $(CARVANA)

device-check:  ## on a GPU machine, with .device/ in the tree: install from it, GPU tests, benchmarks, short run -> the folder OUT
	python3 device/check.py --bundle .device $(ARGS)

clean:  ## remove logs and generated data (keeps .venv)
	rm -rf logs data .pytest_cache .ruff_cache
