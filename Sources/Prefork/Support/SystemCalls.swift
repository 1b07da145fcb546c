// The syscall layer this module shares with Systemd: `SystemCallError`, `SocketAddress`, the errno
// helpers and the monotonic clock. Re-exported rather than aliased, so that `SystemCallError` —
// thrown by this module's public API — is one type under one name for every importer of
// Prefork, Systemd or both, as it was when it lived here.
@_exported import SystemCalls
