#!/bin/sh
# splice against copy for the forward handler's relay loop: one pair over loopback TCP, with the
# same transfer and no relay beside it, each the best of three runs; prints GB/s and CPU seconds
# (the process's, and the relay thread's own). Release build with testing enabled, so the opt-in
# test reaches the loop's internals; nothing is asserted.
#
#   Benchmarks/scripts/relay-throughput.sh [MiB]      (default 1024)
set -eu
cd "$(dirname "$0")/../.."
MIB=${1:-1024}
swift build -c release --build-tests -Xswiftc -enable-testing
PREFORKD_RELAY_BENCH=$MIB swift test -c release --skip-build -Xswiftc -enable-testing \
    --filter RelayThroughputTests 2>&1 | grep -E 'relay (throughput|memory)'
