#define _GNU_SOURCE
#include "CSystemd.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

// libsystemd-dev's declarations: the function pointers below get the library's own types, so a
// signature above that disagrees with it does not compile.
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

_Static_assert(PF_SD_LISTEN_FDS_START == SD_LISTEN_FDS_START, "SD_LISTEN_FDS_START");

// What packaging tools read instead of DT_NEEDED (systemd.io/ELF_DLOPEN_METADATA): an ELF note in
// section .note.dlopen, owner "FDO", type 0x407c0c0a, whose descriptor is a zero-terminated JSON
// array naming the library. A section named .note* is SHT_NOTE, which the linker keeps.
#define PF_DLOPEN_NOTE_JSON                                                                        \
    "[{\"soname\":[\"" PF_SD_LIBRARY "\"],\"feature\":\"systemd\","                                \
    "\"description\":\"socket activation, service notifications, the watchdog and journal "       \
    "logging\",\"priority\":\"required\"}]"

__attribute__((used, section(".note.dlopen"), aligned(4))) static const struct {
    uint32_t name_size;
    uint32_t descriptor_size;
    uint32_t type;
    char name[4];
    char descriptor[(sizeof(PF_DLOPEN_NOTE_JSON) + 3) & ~(size_t)3];
} dlopen_note = {
    .name_size = 4,
    .descriptor_size = sizeof(PF_DLOPEN_NOTE_JSON),
    .type = 0x407c0c0a,
    .name = "FDO",
    .descriptor = PF_DLOPEN_NOTE_JSON,
};

/// The functions used, with libsystemd's types.
struct functions {
    __typeof__(sd_listen_fds_with_names) *listen_fds_with_names;
    __typeof__(sd_is_socket) *is_socket;
    __typeof__(sd_watchdog_enabled) *watchdog_enabled;
    __typeof__(sd_pid_notify) *pid_notify;
    __typeof__(sd_pid_notify_with_fds) *pid_notify_with_fds;
    __typeof__(sd_journal_sendv) *journal_sendv;
};

static void copy_error(char *error, size_t size, const char *text) {
    if (size == 0) return;
    strncpy(error, text ? text : "unknown error", size - 1);
    error[size - 1] = '\0';
}

/// dlopen, then dlsym of each function; on success `*handle` is the library's handle.
static int open_library(const char *soname, struct functions *functions, void **handle, char *error,
                        size_t size) {
    void *library = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        copy_error(error, size, dlerror());
        return -ELIBACC;
    }
    // A function pointer from dlsym's void *, as POSIX has it.
#define RESOLVE(field, symbol)                                                                     \
    do {                                                                                           \
        void *address = dlsym(library, #symbol);                                                   \
        if (address == NULL) {                                                                     \
            copy_error(error, size, dlerror());                                                    \
            dlclose(library);                                                                      \
            return -ENOSYS;                                                                        \
        }                                                                                          \
        *(void **)&functions->field = address;                                                     \
    } while (0)
    RESOLVE(listen_fds_with_names, sd_listen_fds_with_names);
    RESOLVE(is_socket, sd_is_socket);
    RESOLVE(watchdog_enabled, sd_watchdog_enabled);
    RESOLVE(pid_notify, sd_pid_notify);
    RESOLVE(pid_notify_with_fds, sd_pid_notify_with_fds);
    RESOLVE(journal_sendv, sd_journal_sendv);
#undef RESOLVE
    *handle = library;
    return 0;
}

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
// Written once, inside pthread_once; read only after it.
static struct functions loaded;
static int load_result = -ELIBACC;
static char load_error[512];

static void load_library(void) {
    void *handle = NULL;  // kept open for the life of the process
    load_result = open_library(PF_SD_LIBRARY, &loaded, &handle, load_error, sizeof(load_error));
}

int pf_sd_load(void) {
    pthread_once(&load_once, load_library);
    return load_result;
}

const char *pf_sd_load_error(void) { return pf_sd_load() < 0 ? load_error : NULL; }

int pf_sd_check_library(const char *soname, char *error, size_t size) {
    struct functions functions;
    void *handle = NULL;
    int result = open_library(soname, &functions, &handle, error, size);
    if (result == 0) dlclose(handle);
    return result;
}

int pf_sd_listen_fds_with_names(int unset_environment, char ***names) {
    int result = pf_sd_load();
    return result < 0 ? result : loaded.listen_fds_with_names(unset_environment, names);
}

int pf_sd_is_socket(int fd, int family, int type, int listening) {
    int result = pf_sd_load();
    return result < 0 ? result : loaded.is_socket(fd, family, type, listening);
}

int pf_sd_watchdog_enabled(int unset_environment, uint64_t *usec) {
    int result = pf_sd_load();
    return result < 0 ? result : loaded.watchdog_enabled(unset_environment, usec);
}

int pf_sd_pid_notify(pid_t pid, int unset_environment, const char *state) {
    int result = pf_sd_load();
    return result < 0 ? result : loaded.pid_notify(pid, unset_environment, state);
}

int pf_sd_pid_notify_with_fds(pid_t pid, int unset_environment, const char *state, const int *fds,
                              unsigned n_fds) {
    int result = pf_sd_load();
    return result < 0 ? result : loaded.pid_notify_with_fds(pid, unset_environment, state, fds, n_fds);
}

int pf_sd_journal_sendv(const struct iovec *iov, int n) {
    int result = pf_sd_load();
    return result < 0 ? result : loaded.journal_sendv(iov, n);
}
