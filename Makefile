# One command runs the service, one runs the tests; both build the virtual
# environment first if it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install system-deps test-deps run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --silent
	touch $@

install: $(BIN)/.installed

system-deps:
	scripts/system-deps.sh

# Left to right: nginx, Chromium and Node first, then the npm clients.
test-deps: install system-deps tests/js/node_modules/.installed

run: install
	$(BIN)/cortex-realtime run

test: test-deps
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench.webhook_to_stream

clean:
	rm -rf $(VENV) var
