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
# Only what the service needs (setup-host.sh --runtime): no test tools on a production host.
install:
	@if [ -z "$(DESTDIR)" ]; then bash scripts/setup-host.sh --runtime; fi
	@DESTDIR="$(DESTDIR)" bash scripts/install.sh

.PHONY: deb
# The Debian package, dist/beanwatch_VERSION_all.deb, from a clean copy of this checkout;
# build dependencies come from the Debian archive (as root). scripts/build-deb.sh says how.
deb:
	@bash scripts/build-deb.sh

# The package's unit is packaging/beanwatch.service with ExecStart=/usr/bin/beanwatch
# (tests/unit/test_debian.py checks that they agree).
debian/beanwatch.service: packaging/beanwatch.service
	sed 's|^ExecStart=/usr/local/bin/beanwatch |ExecStart=/usr/bin/beanwatch |' $< > $@

.PHONY: test-systemd
# A real systemd host: Debian 12 booted under QEMU (scripts/vm-systemd.sh, image cached under
# /var/lib/beanwatch-vm/systemd), `make install` inside, then the unit's whole lifecycle
# (scripts/vm-systemd-test.sh). One guest at a time on the machine: /tmp/bw-vm.lock.
test-systemd:
	flock /tmp/bw-vm.lock bash scripts/vm-systemd.sh scripts/vm-systemd-test.sh

.PHONY: test-kernels
# kernel-sensitive integration tests (pytest -m kernel), `beanwatch check` and `demo` in QEMU
# guests booted from Debian's kernel packages (scripts/vm.sh; root; TCG, ~1-several min each).
# KERNELS may also name `host` (this kernel, under /tmp/bw-host.lock) and `sid`.
KERNELS ?= 5.10 6.1 6.12

test-kernels: setup
	$(PY) scripts/kernel_matrix.py --kernels "$(KERNELS)"

.PHONY: test-deb
# The Debian package's install / upgrade / purge cycle in the Debian 12 systemd guest (root):
# builds VERSION and VERSION+rebuild1, a local apt repository of their dependencies (cached
# under /var/lib/beanwatch-vm/deb), then scripts/vm-systemd-deb-test.sh in the guest, which
# has no network: apt resolves from that repository only. The boot takes /tmp/bw-vm.lock.
test-deb:
	bash scripts/vm-systemd-deb.sh
