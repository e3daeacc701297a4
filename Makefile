# beanwatch: `sudo make demo` and `sudo make test` set up a fresh Debian/Ubuntu host and run.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit integration check clean

setup:
	@bash scripts/setup-host.sh

demo: setup
	$(VENV)/bin/beanwatch demo

check: setup
	$(VENV)/bin/beanwatch check

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider

unit: setup
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

integration: setup
	$(PY) -m pytest tests/integration -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
