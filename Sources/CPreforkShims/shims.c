#define _GNU_SOURCE
#include "CPreforkShims.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int pf_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int pf_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

static void fill_set(sigset_t *set, const int *signals, int count) {
    sigemptyset(set);
    for (int i = 0; i < count; i++) sigaddset(set, signals[i]);
}

int pf_signalfd(const int *signals, int count) {
    sigset_t set;
    fill_set(&set, signals, count);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int pf_signalfd_read(int fd, int32_t *sender_pid, int32_t *status) {
    struct signalfd_siginfo info;
    ssize_t n;
    do {
        n = read(fd, &info, sizeof info);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (n != (ssize_t)sizeof info) { errno = EIO; return -1; }
    if (sender_pid) *sender_pid = (int32_t)info.ssi_pid;
    if (status) *status = info.ssi_status;
    return (int)info.ssi_signo;
}

int pf_sigmask(int how, const int *signals, int count) {
    sigset_t set;
    fill_set(&set, signals, count);
    return sigprocmask(how, &set, NULL);
}

int pf_default_signal_dispositions(const int *signals, int count) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int i = 0; i < count; i++) {
        if (sigaction(signals[i], &dfl, NULL) < 0) return -1;
    }
    return 0;
}

int pf_ensure_standard_fds(void) {
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
        int opened = open("/dev/null", O_RDWR);
        if (opened < 0) return -1;
        if (opened != fd) {  // a lower one was closed too and took it: fix up both
            if (dup2(opened, fd) < 0) return -1;
            close(opened);
        }
    }
    return 0;
}

void pf_ignore_sigpipe(void) {
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, NULL);
}

int pf_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0); }

int pf_set_process_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

int pf_thread_count(void) {
    // Field 20 of /proc/self/stat; field 2 (comm) may hold spaces, so parse after its ')'.
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    int field = 2;
    for (p++; *p && field < 20; p++) {
        if (*p == ' ') field++;
    }
    if (field != 20) return -1;
    int threads = 0;
    if (sscanf(p, "%d", &threads) != 1) return -1;
    return threads;
}

uint64_t pf_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t pf_monotonic_coarse_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const void *pf_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    return memmem(haystack, haystack_len, needle, needle_len);
}

int pf_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int pf_epoll_add(int epfd, int fd, uint32_t tag, int exclusive) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0);
    event.data.u32 = tag;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int pf_epoll_wait_one(int epfd, int timeout_ms, uint32_t *tag) {
    struct epoll_event event;
    int n = epoll_wait(epfd, &event, 1, timeout_ms);
    if (n == 1) *tag = event.data.u32;
    return n;
}

int pf_send_datagram(int fd, const void *addr, socklen_t addr_len, const void *bytes, size_t length,
                     const int *fds, int nfds, int dont_wait) {
    struct iovec iov = {.iov_base = (void *)bytes, .iov_len = length};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = (void *)addr;
    msg.msg_namelen = addr_len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int) * 16)];
    if (nfds > 0) {
        if (nfds > 16) { errno = EINVAL; return -1; }
        memset(control, 0, sizeof control);
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t sent = sendmsg(fd, &msg, (dont_wait ? MSG_DONTWAIT : 0) | MSG_NOSIGNAL);
    return sent < 0 ? -1 : 0;
}

// MARK: worker stop handling

static volatile sig_atomic_t stop_requested = 0;
static int *stop_listener_fds = NULL;
static int stop_listener_count = 0;
static int stop_dead_fd = -1;
static int stop_wake_fd = -1;

static void on_stop_signal(int sig) {
    int saved = errno;
    int level = (sig == SIGQUIT) ? 2 : 1;
    if (level > stop_requested) stop_requested = level;
    for (int i = 0; i < stop_listener_count; i++) {
        if (stop_dead_fd >= 0) dup2(stop_dead_fd, stop_listener_fds[i]);
    }
    if (stop_wake_fd >= 0) {
        char byte = 1;
        ssize_t ignored = write(stop_wake_fd, &byte, 1);
        (void)ignored;
    }
    errno = saved;
}

int pf_worker_install_stop_handler(const int *listener_fds, int count, int dead_fd, int wake_fd) {
    // As many listeners as the configuration has: the handler only reads this array, which is
    // filled in before the handler is installed and never freed.
    int *fds = malloc(sizeof(int) * (size_t)(count > 0 ? count : 1));
    if (!fds) return -1;
    for (int i = 0; i < count; i++) fds[i] = listener_fds[i];
    stop_listener_fds = fds;
    stop_listener_count = count;
    stop_dead_fd = dead_fd;
    stop_wake_fd = wake_fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
    if (sigaction(SIGTERM, &sa, NULL) < 0) return -1;
    if (sigaction(SIGINT, &sa, NULL) < 0) return -1;
    if (sigaction(SIGQUIT, &sa, NULL) < 0) return -1;
    // Reload and pool-size signals are the supervisor's business. A worker that gets one (a
    // `pkill -HUP preforkd`, a signal to the whole process group) must neither die (HUP's default)
    // nor stop (TTIN's and TTOU's default).
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    const int ignored[] = {SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        if (sigaction(ignored[i], &ignore, NULL) < 0) return -1;
    }
    return 0;
}

int pf_worker_stop_requested(void) { return stop_requested; }

// MARK: scoreboard

void pf_slot_store_stage(pf_slot *slot, uint32_t stage, uint64_t now_ns) {
    __atomic_store_n(&slot->stage_since_ns, now_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&slot->stage, stage, __ATOMIC_RELEASE);
}
void pf_slot_enter_stage(pf_slot *slot, uint32_t stage) {
    pf_slot_store_stage(slot, stage, pf_monotonic_coarse_ns());
}
void pf_slot_enter_handling(pf_slot *slot) {
    pf_slot_store_stage(slot, PF_STAGE_HANDLING, pf_monotonic_coarse_ns());
    __atomic_fetch_add(&slot->connections, 1, __ATOMIC_RELAXED);
}
uint32_t pf_slot_load_stage(const pf_slot *slot) { return __atomic_load_n(&slot->stage, __ATOMIC_ACQUIRE); }
uint64_t pf_slot_load_stage_since(const pf_slot *slot) {
    return __atomic_load_n(&slot->stage_since_ns, __ATOMIC_RELAXED);
}
void pf_slot_store_pid(pf_slot *slot, int32_t pid) { __atomic_store_n(&slot->pid, pid, __ATOMIC_RELEASE); }
int32_t pf_slot_load_pid(const pf_slot *slot) { return __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE); }
void pf_slot_store_generation(pf_slot *slot, uint64_t generation) {
    __atomic_store_n(&slot->generation, generation, __ATOMIC_RELAXED);
}
uint64_t pf_slot_load_generation(const pf_slot *slot) {
    return __atomic_load_n(&slot->generation, __ATOMIC_RELAXED);
}
void pf_slot_add_connection(pf_slot *slot) { __atomic_fetch_add(&slot->connections, 1, __ATOMIC_RELAXED); }
uint64_t pf_slot_load_connections(const pf_slot *slot) {
    return __atomic_load_n(&slot->connections, __ATOMIC_RELAXED);
}
void pf_slot_count_outcome(pf_slot *slot, uint32_t outcome) {
    if (outcome < 4) __atomic_fetch_add(&slot->outcomes[outcome], 1, __ATOMIC_RELAXED);
}
uint64_t pf_slot_load_outcome(const pf_slot *slot, uint32_t outcome) {
    return outcome < 4 ? __atomic_load_n(&slot->outcomes[outcome], __ATOMIC_RELAXED) : 0;
}
void pf_slot_store_boot_errno(pf_slot *slot, int32_t value) {
    __atomic_store_n(&slot->boot_errno, value, __ATOMIC_RELAXED);
}
int32_t pf_slot_load_boot_errno(const pf_slot *slot) { return __atomic_load_n(&slot->boot_errno, __ATOMIC_RELAXED); }

pf_connection_state pf_connection = {.detached = 0, .proxied_listener = -1};

void pf_route_tally_name(pf_route_tally *tally, const char *name) {
    strncpy(tally->name, name, sizeof tally->name - 1);
    tally->name[sizeof tally->name - 1] = 0;
    __atomic_store_n(&tally->named, 1, __ATOMIC_RELEASE);
}
int pf_route_tally_is_named(const pf_route_tally *tally) { return __atomic_load_n(&tally->named, __ATOMIC_ACQUIRE); }
void pf_route_tally_open(pf_route_tally *tally) {
    __atomic_fetch_add(&tally->total, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&tally->open, 1, __ATOMIC_RELAXED);
}
void pf_route_tally_close(pf_route_tally *tally) { __atomic_fetch_sub(&tally->open, 1, __ATOMIC_RELAXED); }
uint64_t pf_route_tally_total(const pf_route_tally *tally) { return __atomic_load_n(&tally->total, __ATOMIC_RELAXED); }
int64_t pf_route_tally_open_count(const pf_route_tally *tally) {
    return __atomic_load_n(&tally->open, __ATOMIC_RELAXED);
}

int pf_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int pf_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    int wanted = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return wanted == flags ? 0 : fcntl(fd, F_SETFD, wanted);
}

int pf_spawn_probe(const char *path, char *const argv[], char *const envp[], int stdout_fd, pid_t *pid) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) return result;
    result = posix_spawnattr_init(&attributes);
    if (result != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return result;
    }
    // `systemctl kill -s USR2` (and `kill` of the service's cgroup) signals every process of the
    // service, the probe too, and a probe forked a moment after the supervisor got its USR2 is
    // in that set: the signals a service is sent to steer it (HUP, USR1, USR2, TTIN, TTOU) stay
    // blocked in the probe, which answers and exits without ever reading them.
    sigset_t steering, all;
    sigemptyset(&steering);
    const int steered[] = {SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof steered / sizeof steered[0]; i++) sigaddset(&steering, steered[i]);
    sigfillset(&all);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
    posix_spawnattr_setsigmask(&attributes, &steering);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    result = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return result;
}

int pf_execve(const char *path, char *const argv[], char *const envp[]) { return execve(path, argv, envp); }
// MARK: privileges

#include <grp.h>
#include <linux/capability.h>
#include <sys/syscall.h>

const int pf_cap_net_bind_service = CAP_NET_BIND_SERVICE;
const int pf_cap_setuid = CAP_SETUID;

int pf_clear_supplementary_groups(void) { return setgroups(0, NULL); }

int pf_setresuid(uid_t uid) { return setresuid(uid, uid, uid); }
int pf_setresgid(gid_t gid) { return setresgid(gid, gid, gid); }
int pf_getresuid(uid_t *real, uid_t *effective, uid_t *saved) { return getresuid(real, effective, saved); }
int pf_getresgid(gid_t *real, gid_t *effective, gid_t *saved) { return getresgid(real, effective, saved); }

int pf_set_keep_capabilities(int keep) { return prctl(PR_SET_KEEPCAPS, (unsigned long)(keep != 0), 0, 0, 0); }

int pf_set_no_new_privileges(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0, 0, 0); }

int pf_no_new_privileges(void) { return prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); }

/// capget(2) of this process's sets (version 3: two 32-bit words per set).
static int get_capabilities(struct __user_cap_data_struct data[2]) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    return (int)syscall(SYS_capget, &header, data);
}

static int set_capabilities(struct __user_cap_data_struct data[2]) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    return (int)syscall(SYS_capset, &header, data);
}

int pf_has_effective_capability(int capability) {
    struct __user_cap_data_struct data[2];
    if (get_capabilities(data) != 0) return -1;
    return (data[CAP_TO_INDEX(capability)].effective & CAP_TO_MASK(capability)) != 0;
}

int pf_keep_only_capability(int capability) {
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    uint32_t mask = CAP_TO_MASK(capability);
    int index = CAP_TO_INDEX(capability);
    data[index].effective = mask;
    data[index].permitted = mask;
    data[index].inheritable = mask;
    if (set_capabilities(data) != 0) return -1;
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (unsigned long)capability, 0, 0);
}

int pf_drop_all_capabilities(void) {
    struct __user_cap_data_struct data[2];
    if (get_capabilities(data) != 0) return -1;
    if ((data[0].permitted | data[1].permitted | data[0].inheritable | data[1].inheritable) == 0) return 0;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return -1;
    memset(data, 0, sizeof data);
    return set_capabilities(data);
}
