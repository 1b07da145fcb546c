/*
 * floor: the least a pre-fork server can do between exec and READY=1, in C.
 *
 * Same readiness contract as preforkd: bind and listen, fork N children; each child reports on
 * a boot pipe just before it blocks in accept4(); once all N have reported, the parent sends
 * READY=1 to $NOTIFY_SOCKET. No configuration, no logging: the start-up time of preforkd is
 * measured against this (Benchmarks/startup/launch.c runs both).
 *
 * usage: floor --listen 127.0.0.1:PORT --workers N      (PORT 0: an ephemeral port)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void notify_ready(void) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path) return;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    sendto(s, "READY=1", 7, 0, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(s);
}

int main(int argc, char **argv) {
    const char *listen_at = "127.0.0.1:0";
    int workers = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) listen_at = argv[++i];
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc) workers = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s --listen HOST:PORT --workers N\n", argv[0]); return 64; }
    }
    char host[64];
    const char *colon = strrchr(listen_at, ':');
    if (!colon || (size_t)(colon - listen_at) >= sizeof host || workers < 1) {
        fprintf(stderr, "floor: bad arguments\n");
        return 64;
    }
    memcpy(host, listen_at, (size_t)(colon - listen_at));
    host[colon - listen_at] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "floor: bad host %s\n", host); return 64; }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        fprintf(stderr, "floor: bind %s: %s\n", listen_at, strerror(errno));
        return 69;
    }
    int boot[2];
    if (pipe2(boot, O_CLOEXEC) < 0) { perror("floor: pipe2"); return 1; }
    pid_t parent = getpid();
    for (int i = 0; i < workers; i++) {
        pid_t pid = fork();
        if (pid < 0) { perror("floor: fork"); return 1; }
        if (pid == 0) {
            close(boot[0]);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(0);
            char c = 1;
            if (write(boot[1], &c, 1) != 1) _exit(3);
            close(boot[1]);
            for (;;) {
                int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (cfd >= 0) close(cfd);
                else if (errno != EINTR && errno != ECONNABORTED) _exit(4);
            }
        }
    }
    close(boot[1]);
    for (int booted = 0; booted < workers;) {
        char c[64];
        ssize_t r = read(boot[0], c, sizeof c);
        if (r > 0) booted += (int)r;
        else if (r < 0 && errno == EINTR) continue;
        else { fprintf(stderr, "floor: a worker failed to boot\n"); return 1; }
    }
    notify_ready();
    for (;;) {
        if (wait(NULL) < 0 && errno == ECHILD) return 0;
    }
}
