# emo — run `make help` for the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# The virtual environment; CI points this at a cached one (see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
# Reinstall whenever pyproject.toml's content changes (the hash is in the name, so a fresh
# clone's newer file dates do not force a reinstall).
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# The runtime as users install it (`pip install .`: no torch), for `make test-runtime`.
RT_VENV ?= .venv-runtime
RT_STAMP := $(RT_VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# Weights to evaluate with `make evaluate`.
CKPT ?= emo/weights/vgg_s.ckpt

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  (the research tools' targets: make help-research; research/README.md)"

help-research: # the research tools' targets (research/README.md: not part of the product)
	@awk 'BEGIN {FS = ":.*#research: "} /^[a-zA-Z_-]+:.*#research: / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP):
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

# onnxruntime-web for the on-device page (emo/inference/web/vendor/, git-ignored): npm ci at the
# version web/package-lock.json pins, then its WebAssembly build and licence copied into the package.
WEB_VENDOR := emo/inference/web/vendor
$(WEB_VENDOR)/.installed-$(shell sha1sum web/package-lock.json | cut -c1-12): web/package-lock.json web/LICENSE-onnxruntime-web.txt web/vendor.py
	python3 web/vendor.py

web: $(WEB_VENDOR)/.installed-$(shell sha1sum web/package-lock.json | cut -c1-12) ## onnxruntime-web for the on-device page (npm ci in web/, copied into emo/inference/web/vendor/)

demo: $(STAMP) ## the pretrained model on sample images and a sample video (writes outputs/demo)
	$(PY) -m emo.inference.demo --out outputs/demo

serve: $(STAMP) web ## the webcam page and JSON API on http://127.0.0.1:8000 (emo-serve; ARGS="--port 8080 ...")
	$(VENV)/bin/emo-serve $(ARGS)

install: $(STAMP) web ## create or refresh the virtual environment (.venv, or VENV=dir) with emo and its dev tools

test: $(STAMP) web ## run the fast test suite (synthetic data, in-process, one worker per core up to 4: under a minute on 2)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal

$(RT_STAMP):
	@rm -rf $(RT_VENV) && python3 -m venv $(RT_VENV)
	$(RT_VENV)/bin/pip install -q --upgrade pip
	$(RT_VENV)/bin/pip install -q . pytest
	@touch $@

dist: $(STAMP) web ## build the wheel and the sdist into dist/ (python -m build); fails on any setuptools warning
	@rm -rf dist && mkdir -p dist
	@$(PY) -m build --outdir dist . > dist/build.log 2>&1 || { tail -30 dist/build.log; exit 1; }
	@# byte-compiling is skipped where PYTHONDONTWRITEBYTECODE is set: a note about this machine, not the package.
	@if grep -i "warning" dist/build.log | grep -v "byte-compiling is disabled"; then echo "python -m build warned (dist/build.log)"; exit 1; fi
	@ls -l dist/*.whl dist/*.tar.gz

test-runtime: $(RT_STAMP) dist ## the tests marked runtime against the built wheel alone (numpy, OpenCV, onnxruntime; no torch) in RT_VENV, then the sdist in a fresh venv
	$(RT_VENV)/bin/pip install -q --no-deps --force-reinstall dist/emo-*.whl
	@$(RT_VENV)/bin/python -c "import importlib.util as u, sys; heavy = [m for m in ('torch', 'lightning', 'hydra', 'matplotlib', 'scipy') if u.find_spec(m)]; sys.exit(f'the runtime install pulled in {heavy}' if heavy else 0)"
	@# importlib mode, no pythonpath: the tests import the installed emo, not this checkout's.
	$(RT_VENV)/bin/pytest -q -p no:cacheprovider --import-mode=importlib -o pythonpath= -m runtime $$(grep -l "pytest.mark.runtime" tests/test_*.py)
	@# The sdist, built and installed from scratch as pip does for users without a wheel.
	@rm -rf dist/venv-sdist && python3 -m venv dist/venv-sdist
	dist/venv-sdist/bin/pip install -q dist/emo-*.tar.gz pytest
	dist/venv-sdist/bin/pytest -q -p no:cacheprovider --import-mode=importlib -o pythonpath= -m runtime tests/test_runtime.py
	@rm -rf dist/venv-sdist

test-slow: $(STAMP) web ## run only the slow tests (launches, notebooks, ONNX, every experiment, real FER-2013 when present)
	$(PY) -m pytest -q -m slow

test-full: $(STAMP) web ## run every test
	$(PY) -m pytest -q -m "slow or not slow"

train: $(STAMP) ## train the bundled cnn3 on FER-2013 (in data/fer2013 or EMO_DATA_DIR): the command people type
	$(PY) -m emo.train model=cnn3 data.augment=strong hydra.run.dir=outputs/baseline/cnn3

train-cnn3-v1: $(STAMP) ## the earlier cnn3 baseline (62.27%), both stages
	$(PY) -m emo.train experiment=cnn3_fer2013 hydra.run.dir=outputs/baseline/cnn3_v1
	$(PY) -m emo.train experiment=cnn3_fer2013_finetune hydra.run.dir=outputs/baseline/cnn3_v1_ft \
		init_from=$$(ls outputs/baseline/cnn3_v1/checkpoints/best-*.ckpt)

train-small: $(STAMP) ## train the bundled vgg_s on FER-2013 (~1 h on 2 CPU cores in bf16)
	$(PY) -m emo.train experiment=vgg_s_fer2013 hydra.run.dir=outputs/small/vgg_s

queue: $(STAMP) #research: start the CPU training queue (runs/queue.yaml) in the background; resumes, skips finished runs
	$(PY) research/train_queue.py start

queue-status: $(STAMP) #research: each queued run: done (PublicTest), epoch saved, or pending
	$(PY) research/train_queue.py status

queue-stop: $(STAMP) #research: stop the queue (the last finished epoch is kept for resuming)
	$(PY) research/train_queue.py stop

queue-save: $(STAMP) #research: copy unfinished runs' last.ckpt to runs/NAME/resume.ckpt (outside git) for another machine
	$(PY) research/train_queue.py save

evaluate: $(STAMP) ## evaluate CKPT (default: bundled vgg_s) on PrivateTest with flip TTA
	$(PY) -m emo.evaluate ckpt_path=$(CKPT) tta=flip

gpu-bundle: $(STAMP) #research: prepare .gpu/ (git-ignored) for research/gpu_queue.sh: FER-2013 train+val, compact, with their FER+ votes; wheels the GPU image lacks
	$(PY) -m emo.data.compact .gpu/data --splits train val
	$(PY) -m pip wheel -q --no-deps -w .gpu/wheels hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
	@du -sh .gpu

notebooks: $(STAMP) ## execute notebooks/ headless (FER-2013 if found, else a synthetic set)
	$(PY) -m pytest -q tests/test_notebooks.py

tensorboard: $(STAMP) ## browse every run's curves and confusion matrices
	$(VENV)/bin/tensorboard --logdir outputs

format: $(STAMP) ## format and lint-fix the code with ruff
	$(VENV)/bin/ruff format emo tests benchmarks scripts research notebooks
	$(VENV)/bin/ruff check --fix emo tests benchmarks scripts research notebooks

docs: $(STAMP) ## build the documentation site into site/ (mkdocs build --strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "site/index.html"

docs-serve: $(STAMP) web ## the documentation site, live-reloading, on http://127.0.0.1:8001
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

docs-images: $(STAMP) ## the documentation's pictures in docs/images/ (Xvfb, chromium; confusion.png needs FER-2013: DATA=dir or EMO_DATA_DIR)
	$(PY) scripts/docs_images.py $(if $(DATA),--data-dir $(DATA))

docs-tables: $(STAMP) ## rewrite the models tables of README.md and MODEL_CARD.md from emo/weights/index.json
	$(PY) scripts/doc_tables.py

lint: $(STAMP) ## check formatting, lint and the import layers without changing files
	$(VENV)/bin/ruff format --check emo tests benchmarks scripts research notebooks docs/hooks.py web/vendor.py web/build_backend.py
	$(VENV)/bin/ruff check emo tests benchmarks scripts research notebooks docs/hooks.py web/vendor.py web/build_backend.py
	$(VENV)/bin/lint-imports

clean: ## delete caches (not outputs/ or the venv)
	rm -rf .pytest_cache .ruff_cache build dist site *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help help-research web demo serve install test test-runtime dist docs docs-serve docs-images docs-tables test-slow test-full train train-cnn3-v1 train-small queue queue-status queue-stop queue-save evaluate gpu-bundle notebooks tensorboard format lint clean
