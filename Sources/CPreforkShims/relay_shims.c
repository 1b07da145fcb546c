#define _GNU_SOURCE
#include "relay_shims.h"

#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

_Static_assert(PF_EPOLL_IN == EPOLLIN, "EPOLLIN");
_Static_assert(PF_EPOLL_OUT == EPOLLOUT, "EPOLLOUT");
_Static_assert(PF_EPOLL_ERR == EPOLLERR, "EPOLLERR");
_Static_assert(PF_EPOLL_HUP == EPOLLHUP, "EPOLLHUP");
_Static_assert(PF_EPOLL_RDHUP == EPOLLRDHUP, "EPOLLRDHUP");
_Static_assert(PF_EPOLL_ET == (uint32_t)EPOLLET, "EPOLLET");

int pf_epoll_add_tagged(int epfd, int fd, uint32_t events, uint64_t tag) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = events;
    event.data.u64 = tag;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int pf_epoll_wait_tagged(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event ready[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, ready, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        tags[i] = ready[i].data.u64;
        events[i] = ready[i].events;
    }
    return n;
}

ssize_t pf_splice(int in, int out, size_t length) {
    return splice(in, NULL, out, NULL, length, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

int pf_set_pipe_size(int fd, int bytes) { return fcntl(fd, F_SETPIPE_SZ, bytes); }

int pf_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int pf_set_linger_reset(int fd) {
    struct linger linger = {.l_onoff = 1, .l_linger = 0};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
}

int pf_set_nonblocking(int fd) {
    int on = 1;
    return ioctl(fd, FIONBIO, &on);
}
