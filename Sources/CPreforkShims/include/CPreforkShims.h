// Thin C wrappers for Linux calls that Glibc's Swift module does not export (they need
// _GNU_SOURCE), plus the few pieces that must be plain C: an async-signal-safe stop handler
// and atomic access to the shared-memory scoreboard. Not API: only the Prefork modules use it.
#ifndef PREFORKD_CPREFORKSHIMS_H
#define PREFORKD_CPREFORKSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/socket.h>

#include "relay_shims.h"

/// accept4(2).
int pf_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
/// pipe2(2).
int pf_pipe2(int fds[2], int flags);
/// signalfd(2) for `signals` (NULL-free list of `count` signal numbers), with SFD_CLOEXEC|SFD_NONBLOCK.
int pf_signalfd(const int *signals, int count);
/// Reads one signal from a signalfd; returns the signal number, 0 when none is pending, -1 on error.
int pf_signalfd_read(int fd, int32_t *sender_pid, int32_t *status);
/// Blocks (how = SIG_BLOCK) or unblocks (SIG_UNBLOCK) the listed signals in this thread; SIG_SETMASK
/// with count 0 clears the mask.
int pf_sigmask(int how, const int *signals, int count);
/// Restores the default disposition of the listed signals: a signal a parent left ignored would
/// otherwise be discarded before a signalfd could see it (SIGCHLD ignored means no zombies to reap).
int pf_default_signal_dispositions(const int *signals, int count);
/// Opens /dev/null on any of fds 0, 1 and 2 that is closed, so that a socket opened later never
/// becomes "stderr" and receives log lines. Returns -1 when /dev/null cannot be opened.
int pf_ensure_standard_fds(void);
/// Ignores SIGPIPE so a write to a closed connection returns EPIPE instead of killing the process.
void pf_ignore_sigpipe(void);
/// prctl(PR_SET_PDEATHSIG).
int pf_set_parent_death_signal(int sig);
/// prctl(PR_SET_NAME): the process name `ps -o comm` and `top` show (at most 15 bytes).
int pf_set_process_name(const char *name);
/// Number of threads in this process (from /proc/self/stat), or -1.
int pf_thread_count(void);
/// memfd_create(2) with MFD_CLOEXEC: anonymous shared memory that has a descriptor, so that an
/// in-place upgrade can map it again after exec.
int pf_memfd_create(const char *name);
/// Sets (on != 0) or clears FD_CLOEXEC on `fd`. Returns -1 on error.
int pf_set_cloexec(int fd, int on);
/// posix_spawn of `path` with `argv` and `envp`, its stdout on `stdout_fd`, stdin on /dev/null,
/// every signal unblocked and at its default disposition (the supervisor's mask is not the
/// child's business). Returns 0 and the child's pid in `*pid`, or an errno value.
int pf_spawn_probe(const char *path, char *const argv[], char *const envp[], int stdout_fd, pid_t *pid);
/// execve(2); returns only on failure (-1, errno set).
int pf_execve(const char *path, char *const argv[], char *const envp[]);
/// CLOCK_MONOTONIC in nanoseconds.
uint64_t pf_monotonic_ns(void);
/// CLOCK_MONOTONIC_COARSE in nanoseconds: the time of the last clock tick (1–4 ms resolution).
/// A few times cheaper than pf_monotonic_ns, never ahead of it, so `pf_monotonic_ns() - coarse`
/// never underflows.
uint64_t pf_monotonic_coarse_ns(void);
/// memmem(3).
const void *pf_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);

/// epoll_create1(EPOLL_CLOEXEC).
int pf_epoll_create(void);
/// Adds `fd` for EPOLLIN (with EPOLLEXCLUSIVE when `exclusive`: one waiter woken per connection),
/// tagged with `tag`.
int pf_epoll_add(int epfd, int fd, uint32_t tag, int exclusive);
/// Waits for one event: 1 with its tag in `*tag`, 0 when the timeout passed, -1 with errno
/// (EINTR included). Any 32-bit tag is possible, so none can be mistaken for the error return.
int pf_epoll_wait_one(int epfd, int timeout_ms, uint32_t *tag);

/// Sends one datagram of `length` bytes to the address `addr`, passing `fds` (SCM_RIGHTS, at
/// most 16) when `nfds` > 0; with `dont_wait`, fails with EAGAIN instead of blocking when the
/// receiver's queue is full. Never raises SIGPIPE. Returns 0, or -1 with errno (EINTR included).
int pf_send_datagram(int fd, const void *addr, socklen_t addr_len, const void *bytes, size_t length,
                     const int *fds, int nfds, int dont_wait);

// MARK: worker stop handling

/// Installs the worker's handler for SIGTERM/SIGINT (graceful) and SIGQUIT (immediate), without
/// SA_RESTART so a blocking accept(2) or read(2) returns EINTR. The handler records the request
/// and dup2()s `dead_fd` (a socket that is not listening) over each listener fd, so that an accept
/// that had not started yet when the signal came fails at once instead of blocking: no race
/// between checking the flag and entering accept. With several listeners the worker waits in
/// epoll instead: the handler then also writes a byte to `wake_fd` (a pipe in that epoll set; -1
/// for none) — the self-pipe trick. SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1 and SIGUSR2, the
/// supervisor's signals, are ignored in a worker.
int pf_worker_install_stop_handler(const int *listener_fds, int count, int dead_fd, int wake_fd);
/// 0: keep going; 1: graceful stop requested; 2: immediate stop requested.
int pf_worker_stop_requested(void);

// MARK: the worker's current connection

/// What a worker keeps about its current connection besides the socket: one per process (a
/// worker serves one connection at a time), a global so that the connection's value carries no
/// pointer to it and the accept loop reaches it with one load.
typedef struct pf_connection_state {
    /// The handler took the socket over: the worker must not close it.
    int32_t detached;
    /// The listening socket whose connections `proxied_local` speaks for (-1: none).
    int32_t proxied_listener;
    /// The length of `proxied_local`; 0 when no PROXY header named a destination.
    uint32_t proxied_local_length;
    /// The destination the last PROXY header on `proxied_listener` named.
    struct sockaddr_storage proxied_local;
    /// `write-deadline` in nanoseconds (0: off), and the send timeout each connection inherits
    /// from its listener (SO_SNDTIMEO), to put back after a write that lowered it: set once per
    /// worker.
    uint64_t write_deadline_ns;
    uint64_t send_timeout_ns;
} pf_connection_state;

/// This process's current connection.
extern pf_connection_state pf_connection;

/// This process's current connection, for Swift (which may not touch a C global itself).
static inline pf_connection_state *pf_connection_current(void) { return &pf_connection; }

/// Marks the current connection as taken over by its handler.
static inline void pf_connection_detach(void) { pf_connection.detached = 1; }

/// Whether the handler took the connection over; clears the mark for the next one.
static inline int pf_connection_take_detached(void) {
    if (!pf_connection.detached) return 0;
    pf_connection.detached = 0;
    return 1;
}

// MARK: scoreboard

/// What a worker is doing, as the supervisor sees it in shared memory.
enum pf_stage {
    PF_STAGE_FREE = 0,
    PF_STAGE_STARTING = 1,
    PF_STAGE_ACCEPTING = 2,
    PF_STAGE_READING = 3,
    PF_STAGE_HANDLING = 4,
    PF_STAGE_EXITING = 5,
    PF_STAGE_PAUSED = 6,
    /// The accept loop has ended; the handler's finish() winds down what outlives a connection.
    PF_STAGE_DRAINING = 7,
};

/// One worker's slot. Written by its worker, read by the supervisor; every field is accessed
/// with the atomic helpers below, never directly.
typedef struct pf_slot {
    int32_t pid;
    uint32_t stage;
    uint64_t stage_since_ns;
    uint64_t generation;
    uint64_t connections;
    /// The errno a worker that gave up booting recorded (0: none), for the supervisor's ERRNO=.
    int32_t boot_errno;
    /// The length accept4 returned with `peer`.
    uint32_t peer_length;
    /// Connections that ended without reaching the handler, or with its error, by outcome
    /// (PF_OUTCOME_…): counted off the hot path, where those connections end.
    uint64_t outcomes[4];
    /// The client of the worker's current connection: accept4 writes it here itself, so the
    /// supervisor can name the peer of a worker it kills without the worker copying anything.
    struct sockaddr_storage peer;
} pf_slot;

void pf_slot_store_stage(pf_slot *slot, uint32_t stage, uint64_t now_ns);
/// A worker's stage change on its hot path: stores `stage`, stamped with pf_monotonic_coarse_ns().
void pf_slot_enter_stage(pf_slot *slot, uint32_t stage);
/// Enters PF_STAGE_HANDLING and counts one connection, in one call.
void pf_slot_enter_handling(pf_slot *slot);
uint32_t pf_slot_load_stage(const pf_slot *slot);
uint64_t pf_slot_load_stage_since(const pf_slot *slot);
void pf_slot_store_pid(pf_slot *slot, int32_t pid);
int32_t pf_slot_load_pid(const pf_slot *slot);
void pf_slot_store_generation(pf_slot *slot, uint64_t generation);
uint64_t pf_slot_load_generation(const pf_slot *slot);
void pf_slot_add_connection(pf_slot *slot);
uint64_t pf_slot_load_connections(const pf_slot *slot);
/// Outcomes counted in pf_slot.outcomes.
enum pf_outcome {
    PF_OUTCOME_INITIAL_READ_TIMEOUT = 0,
    PF_OUTCOME_CLOSED_BEFORE_SENDING = 1,
    PF_OUTCOME_RESET = 2,
    PF_OUTCOME_HANDLER_ERROR = 3,
};
void pf_slot_count_outcome(pf_slot *slot, uint32_t outcome);
uint64_t pf_slot_load_outcome(const pf_slot *slot, uint32_t outcome);
void pf_slot_store_boot_errno(pf_slot *slot, int32_t value);
int32_t pf_slot_load_boot_errno(const pf_slot *slot);

/// One route's count in the status file, after the slots: connections a handler routed there
/// in total, and those still open (relayed). The supervisor writes the name once (then `named`
/// = 1); workers — any of their threads — only add, with atomics, as the slots are written.
typedef struct pf_route_tally {
    uint32_t named;
    char name[44];
    uint64_t total;
    int64_t open;
} pf_route_tally;

/// Names an unused tally (the supervisor, before a generation that routes there is forked).
void pf_route_tally_name(pf_route_tally *tally, const char *name);
/// Whether the tally is named (readers skip the others).
int pf_route_tally_is_named(const pf_route_tally *tally);
/// One more connection routed there, open.
void pf_route_tally_open(pf_route_tally *tally);
/// One of its connections closed.
void pf_route_tally_close(pf_route_tally *tally);
uint64_t pf_route_tally_total(const pf_route_tally *tally);
int64_t pf_route_tally_open_count(const pf_route_tally *tally);

// MARK: privileges

/// setgroups(2) with no groups: clears the supplementary groups.
int pf_clear_supplementary_groups(void);
/// setresuid(2) and setresgid(2): all three ids at once.
int pf_setresuid(uid_t uid);
int pf_setresgid(gid_t gid);
/// getresuid(2) and getresgid(2).
int pf_getresuid(uid_t *real, uid_t *effective, uid_t *saved);
int pf_getresgid(gid_t *real, gid_t *effective, gid_t *saved);
/// prctl(PR_SET_KEEPCAPS): whether permitted capabilities survive a change from uid 0 to another.
int pf_set_keep_capabilities(int keep);
/// prctl(PR_SET_NO_NEW_PRIVS, 1): no exec from here on can gain privileges (setuid bits, file
/// capabilities). Inherited across fork and exec, never undone.
int pf_set_no_new_privileges(void);
/// prctl(PR_GET_NO_NEW_PRIVS): 1 when set, 0 when not, -1 on error.
int pf_no_new_privileges(void);
/// Whether `capability` (CAP_…) is in this process's effective set: 1, 0, or -1 on error.
int pf_has_effective_capability(int capability);
/// Sets the effective, permitted and inheritable sets to `capability` alone (a raw capset(2):
/// no libcap), and raises it in the ambient set too, so that it survives an exec of this
/// program (as non-root, an exec otherwise clears the permitted set).
int pf_keep_only_capability(int capability);
/// Clears the ambient, effective, permitted and inheritable sets; a no-op (no capset at all, which
/// a seccomp filter may forbid) when the permitted set is already empty.
int pf_drop_all_capabilities(void);
/// CAP_NET_BIND_SERVICE: what binding a port below 1024 takes.
extern const int pf_cap_net_bind_service;
/// CAP_SETUID: what switching to another user takes.
extern const int pf_cap_setuid;

#endif
