// The forward handler's relay loop needs epoll with 64-bit tags and many events per wait,
// splice(2), F_SETPIPE_SZ and eventfd(2): Glibc's Swift module exports none of them (they need
// _GNU_SOURCE, and on x86_64 `struct epoll_event` is packed, which Swift cannot lay out).
#ifndef PREFORKD_RELAY_SHIMS_H
#define PREFORKD_RELAY_SHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

// The kernel's epoll flags, checked against <sys/epoll.h> in relay_shims.c.
#define PF_EPOLL_IN 0x001u
#define PF_EPOLL_OUT 0x004u
#define PF_EPOLL_ERR 0x008u
#define PF_EPOLL_HUP 0x010u
#define PF_EPOLL_RDHUP 0x2000u
#define PF_EPOLL_ET 0x80000000u

/// epoll_ctl(2) with EPOLL_CTL_ADD: `fd` for `events`, tagged with `tag`.
int pf_epoll_add_tagged(int epfd, int fd, uint32_t events, uint64_t tag);
/// epoll_wait(2) for up to `max` events: each one's tag and flags go to `tags[i]` and `events[i]`.
/// Returns how many, 0 on timeout, -1 with errno.
int pf_epoll_wait_tagged(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout_ms);
/// splice(2) of up to `length` bytes from `in` to `out` (one of them a pipe), never blocking
/// (SPLICE_F_NONBLOCK) and moving pages where it can (SPLICE_F_MOVE).
ssize_t pf_splice(int in, int out, size_t length);
/// fcntl(F_SETPIPE_SZ): the capacity of the pipe `fd`; returns the capacity granted, or -1.
int pf_set_pipe_size(int fd, int bytes);
/// eventfd(2) with EFD_CLOEXEC | EFD_NONBLOCK.
int pf_eventfd(void);
/// Sets SO_LINGER {1, 0} on `fd`, so that closing it resets the connection (RST) at once.
int pf_set_linger_reset(int fd);
/// Makes `fd` non-blocking with one ioctl(FIONBIO) rather than two fcntl calls.
int pf_set_nonblocking(int fd);

#endif
