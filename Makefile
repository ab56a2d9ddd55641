# One command runs the service, one runs the tests; both build the virtual
# environment first if it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/cortex-realtime run

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench.webhook_to_stream

clean:
	rm -rf $(VENV) var
