/*
 * cprefork: minimal C pre-fork server speaking the "echo <EOF>" protocol.
 * The practical upper bound of preforkd's design: N children block in accept4()
 * on one shared listener, read until the message ends with "<EOF>", write it
 * back, then shutdown+close (server closes first). With --keep-alive a child
 * instead waits for the next message on the same connection until the client
 * closes. Receive timeout: SO_RCVTIMEO on the listener, inherited by accepted sockets.
 *
 * usage: cprefork --listen 127.0.0.1:PORT --workers N [--keep-alive]
 * If NOTIFY_SOCKET is set, sends READY=1 once the children are forked.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXMSG (64 * 1024)
#define MAXW 256

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

static char buf[MAXMSG];

/* The tag's first byte with memchr, then the rest: what preforkd's echo handler does (glibc's
 * memmem builds search tables first, some 300 instructions for a 64-byte message). */
static int has_tag(const char *p, size_t n) {
    while (n >= 5) {
        const char *lt = memchr(p, '<', n - 4);
        if (!lt) return 0;
        if (memcmp(lt + 1, "EOF>", 4) == 0) return 1;
        n -= (size_t)(lt + 1 - p);
        p = lt + 1;
    }
    return 0;
}

static void serve(int cfd, int keep_alive) {
    for (;;) {
        size_t total = 0;
        for (;;) {
            ssize_t r = read(cfd, buf + total, sizeof buf - total);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return;                       /* EOF, timeout or error */
            size_t from = total >= 4 ? total - 4 : 0; /* the tag may straddle two reads */
            total += (size_t)r;
            if (has_tag(buf + from, total - from)) break;
            if (total == sizeof buf) return;          /* too large: drop */
        }
        if (write_all(cfd, buf, total) < 0) return;
        if (!keep_alive) return;
    }
}

static void worker(int lfd, int keep_alive) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) { if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue; _exit(1); }
        serve(cfd, keep_alive);
        shutdown(cfd, SHUT_RDWR);
        close(cfd);
    }
}

static void notify_ready(void) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p || !*p) return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(p);
    if (n >= sizeof sa.sun_path) return;
    memcpy(sa.sun_path, p, n);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    sendto(s, "READY=1", 7, 0, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(s);
}

int main(int argc, char **argv) {
    const char *listen_s = "127.0.0.1:11000";
    int workers = 4, keep_alive = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) listen_s = argv[++i];
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc) workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep-alive")) keep_alive = 1;
        else { fprintf(stderr, "usage: %s --listen HOST:PORT --workers N [--keep-alive]\n", argv[0]); return 2; }
    }
    if (workers < 1 || workers > MAXW) { fprintf(stderr, "cprefork: bad --workers\n"); return 2; }
    char host[64]; const char *colon = strrchr(listen_s, ':');
    if (!colon || (size_t)(colon - listen_s) >= sizeof host) { fprintf(stderr, "cprefork: bad --listen %s\n", listen_s); return 2; }
    memcpy(host, listen_s, (size_t)(colon - listen_s)); host[colon - listen_s] = 0;
    int port = atoi(colon + 1);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "cprefork: bad host %s\n", host); return 2; }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, SOMAXCONN) < 0) {
        fprintf(stderr, "cprefork: bind/listen %s: %s\n", listen_s, strerror(errno)); return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction act = {.sa_handler = on_term};
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);

    pid_t kids[MAXW];
    for (int i = 0; i < workers; i++) {
        pid_t p = fork();
        if (p == 0) worker(lfd, keep_alive);
        if (p < 0) { perror("fork"); return 1; }
        kids[i] = p;
    }
    notify_ready();
    while (!stopping) {
        int st; pid_t d = waitpid(-1, &st, 0);
        if (d < 0) { if (errno == EINTR) continue; break; }
        for (int i = 0; i < workers; i++) if (kids[i] == d && !stopping) {   /* respawn */
            pid_t p = fork();
            if (p == 0) worker(lfd, keep_alive);
            kids[i] = p;
        }
    }
    for (int i = 0; i < workers; i++) if (kids[i] > 0) kill(kids[i], SIGTERM);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
    return 0;
}
