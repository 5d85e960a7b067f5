# Two entry points (README.md): `make lab` runs the explorer, `make test` runs every test.
# Both create .venv from constraints.txt (tested versions) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: lab voila test browser-deps bench lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

lab: $(STAMP)
	$(BIN)/jupyter-lab $(ROOT_FLAG) notebooks/explorer.ipynb

# Notebook 7's JupyterLab extension (a dev dependency) cannot load in Voila's page: Voila is told to leave it out.
# Served on this machine only, behind a token Voila makes and prints in the URL; to share it deliberately, see
# README.md (VOILA_IP=0.0.0.0 listens on every interface, still behind the token).
VOILA_IP ?= 127.0.0.1
voila: $(STAMP)
	$(BIN)/voila notebooks/explorer.ipynb --Voila.ip=$(VOILA_IP) --token \
	  '--VoilaConfiguration.extension_denylist=["@jupyter-notebook/lab-extension"]'

browser-deps:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# every docstring example in the package runs as a test (root conftest.py gives them the default model's maps)
DOCTESTED = explorer

# the browser tests run on their own: Playwright's event loop would stay running under the panel tests
test: $(STAMP) browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests notebooks --ignore=tests/browser --nbval --nbval-sanitize-with notebooks/sanitize.cfg
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest --doctest-modules $(DOCTESTED)

lint: $(STAMP)
	$(BIN)/ruff check explorer tests notebooks benchmarks
	$(BIN)/ruff format --check explorer tests benchmarks

bench: $(STAMP) browser-deps
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks
