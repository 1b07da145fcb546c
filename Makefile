# preforkd — `make run` starts the daemon on 127.0.0.1:11000 with the echo handler;
# `make test` runs every test, `make faults` the fault suite in full. All install what is
# missing first.
SWIFT ?= swift
BUILD_FLAGS ?=
RELEASE_DIR := .build-release
# The binary that ships, linked as the package's is (`make run`, `make bench`, `make install`):
# the Swift runtime linked in statically, so no toolchain library is loaded at start, and with it
# the C++ runtime it needs (scripts/static-cxx-runtime); no $$ORIGIN run path, so the loader looks
# for libraries in the system's directories only; BIND_NOW, which the package's hardening
# requires. Start-up is measured on it: `make -C Benchmarks startup`.
RELEASE_FLAGS := -c release --static-swift-stdlib --disable-local-rpath -Xlinker -z -Xlinker now \
	--scratch-path $(RELEASE_DIR)
ADDRESS ?= 127.0.0.1:11000

.PHONY: all deps build release run test lint format bench clean deb test-package install uninstall faults

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# The release build (a shell command: the C++ runtime's flags come from a script that can fail).
RELEASE_BUILD = cxx=$$(scripts/static-cxx-runtime $(RELEASE_DIR)/static-cxx) && $(SWIFT) build $(RELEASE_FLAGS) $$cxx
RELEASE_BIN = $$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/preforkd

release: deps
	$(RELEASE_BUILD) --product preforkd

# Runs the release binary: the one that ships, and the one whose start-up is measured. As root
# it serves as nobody (preforkd refuses to serve as root unless told allow-root).
RUN_AS = $(if $(filter 0,$(shell id -u)),--user nobody)
run: release
	$(RELEASE_DIR)/release/preforkd --listen $(ADDRESS) --handler echo $(RUN_AS)

# Unit and integration tests (Swift Testing), then the unit files: static checks, and a real
# systemd as PID 1 in a container running them with the binary just built; then the forward
# handler between real clients and servers (ssh/sshd, curl/nginx, openssl, haproxy); then the
# fault suite's short form, which also reports the container run's reload and restart loads.
FAULTS_OUT := Tests/faults/out
test: deps lint
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)
	Tests/e2e/check-units.sh $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))/preforkd
	packaging/check-config-keys $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))/preforkd systemd/preforkd.toml
	mkdir -p $(FAULTS_OUT) && rm -f $(FAULTS_OUT)/e2e-loads.jsonl
	PREFORKD_E2E_LOADS=$(CURDIR)/$(FAULTS_OUT)/e2e-loads.jsonl Tests/e2e/nspawn-e2e.sh $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))
	Tests/forward/real-peers.sh $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))/preforkd
	python3 Tests/faults/faults.py $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))/preforkd --short \
	    --e2e-results $(FAULTS_OUT)/e2e-loads.jsonl
	$(MAKE) fuzz-short

# The fault suite, full form (about 3 minutes), on the release binary: HUP, USR2, systemctl
# reload/restart in the container, killed workers, silent clients, bad payloads, a slow reader,
# 64 open files, fork failures, leaks. Prints and writes $(FAULTS_OUT)/faults.md; one scenario:
# python3 Tests/faults/faults.py $(RELEASE_DIR)/release/preforkd --only NAME.
faults: release
	python3 Tests/faults/faults.py $(RELEASE_DIR)/release/preforkd

# The formatter ships with the toolchain; .swift-format holds the project's settings.
lint:
	$(SWIFT) format lint --strict --recursive Package.swift Sources Tests Examples

format:
	$(SWIFT) format --in-place --recursive Package.swift Sources Tests Examples

bench: deps
	$(MAKE) -C Benchmarks bench

clean:
	rm -rf .build $(RELEASE_DIR)

# --- The Debian package and `make install` (packaging/) -----------------------------------------
# `make deb`: .build-deb/preforkd_VERSION_ARCH.deb (+ -dbgsym) with debhelper, offline, checked by
# lintian; the version is the top entry of packaging/debian/changelog. `make test-package`: that
# package installed, upgraded under load, removed and purged in a clean Debian root booted with
# systemd (Tests/package/). `make install`: the same files under PREFIX (default /usr/local) and
# SYSCONFDIR (/etc), staged under DESTDIR if set; `make uninstall` removes them.
DEB_DIR := .build-deb
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=

deb: deps
	@scripts/install-package-deps
	packaging/build-deb $(DEB_DIR)

test-package: deb
	Tests/package/test-package.sh $(DEB_DIR)

# The release build, linked as the package's is.
install: deps
	$(RELEASE_BUILD) --product preforkd
	packaging/build-manpage $(RELEASE_BIN) $(RELEASE_DIR) $(RELEASE_DIR)/preforkd.8
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" \
	    packaging/install-files $(RELEASE_BIN) $(RELEASE_DIR)/preforkd.8

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" packaging/install-files --uninstall

# libFuzzer runs of the forward handler's parsers (TLS ClientHello, HTTP, SSH banner, PROXY v1/v2;
# see Fuzz/Makefile): FUZZ_RUNS executions per parser (default 10 million), or FUZZ_SECONDS each
# when set. fuzz-short runs each parser for FUZZ_SHORT_SECONDS (default 8) from the seed corpus
# (about 35 s, plus some 20 s the first time to build the four targets).
.PHONY: fuzz fuzz-short
fuzz:
	$(MAKE) -C Fuzz run

fuzz-short:
	$(MAKE) -C Fuzz short
