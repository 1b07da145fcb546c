# preforkd — `make run` starts the daemon on 127.0.0.1:11000 with the echo handler;
# `make test` runs every test. Both install what is missing first.
SWIFT ?= swift
BUILD_FLAGS ?=
RELEASE_DIR := .build-release
ADDRESS ?= 127.0.0.1:11000

.PHONY: all deps build release run test lint format bench clean

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

release: deps
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(RELEASE_DIR) --product preforkd

run: build
	$(SWIFT) run $(BUILD_FLAGS) preforkd --listen $(ADDRESS) --handler echo

# Unit and integration tests (Swift Testing), then the unit files: static checks, and a real
# systemd as PID 1 in a container running them with the binary just built.
test: deps lint
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)
	Tests/e2e/check-units.sh $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))/preforkd
	Tests/e2e/nspawn-e2e.sh $$($(SWIFT) build --show-bin-path $(BUILD_FLAGS))

# The formatter ships with the toolchain; .swift-format holds the project's settings.
lint:
	$(SWIFT) format lint --strict --recursive Package.swift Sources Tests Examples

format:
	$(SWIFT) format --in-place --recursive Package.swift Sources Tests Examples

bench: deps
	$(MAKE) -C Benchmarks bench

clean:
	rm -rf .build $(RELEASE_DIR)

# libFuzzer runs of the forward handler's parsers (TLS ClientHello, HTTP, SSH banner, PROXY v1/v2;
# see Fuzz/Makefile): FUZZ_RUNS executions per parser (default 10 million), or FUZZ_SECONDS each
# when set. fuzz-short runs each parser for FUZZ_SHORT_SECONDS (default 8) from the seed corpus
# (about 35 s, plus some 20 s the first time to build the four targets).
.PHONY: fuzz fuzz-short
fuzz:
	$(MAKE) -C Fuzz run

fuzz-short:
	$(MAKE) -C Fuzz short
