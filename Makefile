# dermlens: `make demo` sets up .venv (every extra) and runs the main job; `make test` runs the test suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Tests run under jemalloc with purging off when it is installed, as the `dermlens` command does (src/dermlens/runtime.py).
comma := ,
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
FAST_MALLOC := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=dirty_decay_ms:-1$(comma)muzzy_decay_ms:-1$(comma)oversize_threshold:0 ,)
.PHONY: demo test setup clean model-card

# Every optional feature (the extras of pyproject.toml) and the test tools. torch and torchvision come pinned from
# pyproject.toml (the pair that imports together on this platform), so the pins are stated in one place.
$(BIN)/dermlens: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all,test]"
	touch $@

setup: $(BIN)/dermlens

demo: setup
	$(BIN)/dermlens study --out runs/demo --overwrite

test: setup
	$(FAST_MALLOC)$(BIN)/python -m pytest -q

# MODEL_CARD.md is written once, at the repository's root; the bundled model's copy (what `dermlens model-card` and
# the web page show from an installed package) is generated from it. tests/predict/test_bundled_model.py checks.
model-card: src/dermlens/weights/MODEL_CARD.md
src/dermlens/weights/MODEL_CARD.md: MODEL_CARD.md
	cp $< $@

clean:
	rm -rf $(VENV) runs
