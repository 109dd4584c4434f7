# The README's two commands are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FOLDNET_DATA ?= $(abspath ../shared/data)

.PHONY: install test demo bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/activate
	$(BIN)/pip install -q -e ".[test]"

test: install
	$(BIN)/python -m pytest -n 2 -q tests

demo: install
	$(BIN)/foldnet demo

clean:
	rm -rf $(VENV) outputs runs
