# Thin aliases for the README's commands. Each target creates its own virtual
# environment (.venv) and installs what it needs, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SIZE ?= 256

.PHONY: demo stylize test bench bench-service bench-broker run-engine fetch-presets clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# One stamp per extra, rebuilt when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[$*]"
	touch $@

## The whole flow without Discord: the Discord double, the engine and the bot; a simulated user
## posts !stylize with a sample photo and a generated painting; the bot's reply lands in out/demo-reply.png
demo: $(VENV)/.installed-demo
	$(PY) -m devtools.demo --size $(SIZE) -o out/demo-reply.png

## The engine alone through its CLI: writes out/stylized.png
stylize: $(VENV)/.installed-demo
	$(PY) -m nst_engine samples out
	$(PY) -m nst_engine stylize out/content.png out/style.png -o out/stylized.png --size $(SIZE)

## Run the test suite
test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/bench_engine.py

bench-service: $(VENV)/.installed-test
	$(PY) benchmarks/bench_service.py

## The broker path against HTTP: per-job overhead, throughput with 1/2/4 workers, failover time (~1 minute)
bench-broker: $(VENV)/.installed-test
	$(PY) benchmarks/bench_broker.py

## The engine HTTP service on 127.0.0.1:8765 (set ENGINE_TOKEN to listen elsewhere)
run-engine: $(VENV)/.installed-test
	$(PY) -m nst_engine serve

## Download and verify the default style presets into ./presets (needs internet; the Docker build does it itself)
fetch-presets: $(VENV)/.installed-test
	$(PY) -m nst_engine fetch-presets

clean:
	rm -rf $(VENV) out .pytest_cache
