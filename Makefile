# dermlens: `make demo` sets up .venv and runs the main job; `make test` runs the test suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Tests run under jemalloc with purging off when it is installed, as the `dermlens` command does (src/dermlens/runtime.py).
comma := ,
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
FAST_MALLOC := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=dirty_decay_ms:-1$(comma)muzzy_decay_ms:-1$(comma)oversize_threshold:0 ,)
.PHONY: demo test setup clean

$(BIN)/dermlens: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 is the pair that imports together on this platform (see README).
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/dermlens

demo: setup
	$(BIN)/dermlens study --out runs/demo

test: setup
	$(FAST_MALLOC)$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
