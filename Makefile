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

.PHONY: bench bench-quick

# Benchmarks (root, this kernel): ratios against baselines measured in the same run, written
# to bench/results/latest.{json,md}. bpftrace is one of the compared tracers.
BPFTRACE := command -v bpftrace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace

bench: setup
	@$(BPFTRACE)
	$(PY) bench/run.py

bench-quick: setup
	@$(BPFTRACE)
	$(PY) bench/run.py --quick

.PHONY: install
# The service: /opt/beanwatch/venv, /usr/local/bin/beanwatch, the systemd unit, /etc/beanwatch.
# Idempotent; keeps an existing config. DESTDIR=/path installs under another root.
install: setup
	@DESTDIR="$(DESTDIR)" bash scripts/install.sh

.PHONY: test-kernels
# kernel-sensitive integration tests (pytest -m kernel), `beanwatch check` and `demo` in QEMU
# guests booted from Debian's kernel packages (scripts/vm.sh; root; TCG, ~1-several min each).
# KERNELS may also name `host` (this kernel, under /tmp/bw-host.lock) and `sid`.
KERNELS ?= 5.10 6.1 6.12

test-kernels: setup
	$(PY) scripts/kernel_matrix.py --kernels "$(KERNELS)"
