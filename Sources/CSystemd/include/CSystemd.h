// libsystemd, loaded on first use: dlopen("libsystemd.so.0") the first time one of these functions
// is called, not at exec. Linking it would make the dynamic loader map it and its six
// dependencies (libcap, libgcrypt, liblzma, libzstd, liblz4, libgpg-error) at every start, in
// every process, whether or not systemd passed sockets, a watchdog or a journal stream.
//
// Each pf_sd_X has the signature of libsystemd's sd_X and returns what it returns; when the
// library cannot be loaded it returns -ELIBACC, and -ENOSYS when one of the functions below is
// missing from it (then none is used). pf_sd_load_error() has the loader's text. Not API: only
// the Systemd module uses it.
#ifndef PREFORKD_CSYSTEMD_H
#define PREFORKD_CSYSTEMD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/// The library loaded, by its soname.
#define PF_SD_LIBRARY "libsystemd.so.0"
/// The first descriptor passed by socket activation (SD_LISTEN_FDS_START).
#define PF_SD_LISTEN_FDS_START 3

/// Loads libsystemd and resolves every function below, once per process (a forked child inherits
/// the outcome). 0 when loaded, else -ELIBACC or -ENOSYS. Thread-safe.
int pf_sd_load(void);
/// dlerror(3)'s text for the failed load, or NULL when the library is loaded.
const char *pf_sd_load_error(void);
/// Loads `soname` the way pf_sd_load loads libsystemd and resolves the same functions, then
/// unloads it: 0, -ELIBACC or -ENOSYS, with dlerror's text in `error` (of `size` bytes) on failure.
int pf_sd_check_library(const char *soname, char *error, size_t size);

/// sd_listen_fds_with_names(3).
int pf_sd_listen_fds_with_names(int unset_environment, char ***names);
/// sd_is_socket(3).
int pf_sd_is_socket(int fd, int family, int type, int listening);
/// sd_watchdog_enabled(3).
int pf_sd_watchdog_enabled(int unset_environment, uint64_t *usec);
/// sd_pid_notify(3).
int pf_sd_pid_notify(pid_t pid, int unset_environment, const char *state);
/// sd_pid_notify_with_fds(3).
int pf_sd_pid_notify_with_fds(pid_t pid, int unset_environment, const char *state, const int *fds,
                              unsigned n_fds);
/// sd_journal_sendv(3).
int pf_sd_journal_sendv(const struct iovec *iov, int n);

#endif
