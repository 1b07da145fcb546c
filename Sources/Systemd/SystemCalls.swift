// The syscall layer this module shares with Prefork. Re-exported because this module's public API
// throws `SystemCallError` and takes swift-system's `FileDescriptor`: an importer of Systemd can
// catch and inspect the error without knowing where it is defined.
@_exported import SystemCalls
