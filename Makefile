# dermlens: `make demo` sets up .venv and runs the main job; `make test` runs the test suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# jemalloc keeps large-batch CPU inference and training from drowning in page faults (see README "Performance").
JEMALLOC := $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2)
RUN := $(if $(JEMALLOC),LD_PRELOAD=$(firstword $(JEMALLOC)) ,)

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
	$(RUN)$(BIN)/dermlens demo --out runs/demo

test: setup
	$(RUN)$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
