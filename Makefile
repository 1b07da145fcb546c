# preforkd — `make run` starts the daemon on 127.0.0.1:11000 with the echo handler;
# `make test` runs every test. Both install what is missing first.
SWIFT ?= swift
BUILD_FLAGS ?=
RELEASE_DIR := .build-release
ADDRESS ?= 127.0.0.1:11000

.PHONY: all deps build release run test unit-tests integration-tests bench clean

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

release: deps
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(RELEASE_DIR) --product preforkd

run: build
	$(SWIFT) run $(BUILD_FLAGS) preforkd --listen $(ADDRESS) --handler echo

test: deps
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)

bench: deps
	$(MAKE) -C Benchmarks bench

clean:
	rm -rf .build $(RELEASE_DIR)
