/*
 * loadgen: single-threaded epoll load generator for the "echo <EOF>" protocol.
 *
 * Scenarios
 *   conn       connect, send one message ending in "<EOF>", read the full echo, wait for
 *              the server's close (read returns 0), close.  With --client-closes the client
 *              closes as soon as the full echo is in (for servers that echo but never close).
 *   keepalive  --per-conn exchanges (default 100) on one connection, then the client closes.
 *
 * Every reply is verified byte for byte.  Errors are counted by kind.  Latency of each
 * exchange (conn: connect() -> server close seen, or full echo with --client-closes;
 * keepalive: send -> full echo) goes into a log-linear histogram.
 * Optionally samples the CPU time of a server's whole process tree (--server-pid) at the
 * start and end of the measured window.  Prints one JSON line on stdout.
 *
 * Every wait is bounded: per-exchange timeout, total duration, and a hard cap on exchanges.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_READING, ST_WAITCLOSE, ST_BACKOFF };
enum { E_REFUSED, E_RESET, E_TIMEOUT, E_MISMATCH, E_PORTS, E_EARLYCLOSE, E_OTHER, E_COUNT };
static const char *err_names[E_COUNT] = {"connect_refused", "reset", "timeout", "mismatch",
                                         "ephemeral_ports", "early_close", "other"};

#define MAXMSG 4096

typedef struct {
    int fd;
    int state;
    int seq_in_conn;      /* exchanges done on this connection */
    uint32_t events;      /* current epoll interest */
    uint64_t counter;     /* unique id baked into each message */
    size_t sent, got;
    uint64_t t_start;     /* ns: exchange start */
    uint64_t deadline;    /* ns */
    char msg[MAXMSG];
    char rx[MAXMSG + 1];
} slot_t;

/* ---- options ---- */
static const char *opt_host = "127.0.0.1";
static int opt_port = 11000;
static int opt_keepalive = 0;
static int opt_conc = 32;
static double opt_duration = 5.0;
static double opt_warmup = 1.0;
static long long opt_max_exchanges = 2000000;
static int opt_msg_size = 64;
static int opt_per_conn = 100;
static int opt_client_closes = 0;
static int opt_timeout_ms = 5000;
static int opt_server_pid = 0;
static int opt_max_errors = 100000;
static const char *opt_label = "";

/* ---- time ---- */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- histogram: log-linear over nanoseconds, 32 sub-buckets per octave (~3 % resolution) ---- */
#define SUB_BITS 6
#define SUB (1 << SUB_BITS)
#define NBUCKETS (64 * SUB)
static uint64_t hist[NBUCKETS];
static uint64_t hist_count, hist_max;

static int bucket_of(uint64_t v) {
    if (v < SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - SUB_BITS + 1;            /* >= 1; v >> shift lies in [SUB/2, SUB) */
    return shift * SUB + (int)(v >> shift);
}
static uint64_t bucket_hi(int b) {             /* largest value that maps to bucket b */
    if (b < SUB) return (uint64_t)b;
    int shift = b / SUB;
    uint64_t low = (uint64_t)(b % SUB);
    return (low << shift) + ((1ull << shift) - 1);
}
static void hist_add(uint64_t ns) {
    int b = bucket_of(ns);
    if (b >= NBUCKETS) b = NBUCKETS - 1;
    hist[b]++;
    hist_count++;
    if (ns > hist_max) hist_max = ns;
}
static double hist_pct(double p) {            /* microseconds */
    if (hist_count == 0) return 0;
    uint64_t target = (uint64_t)(p * (double)hist_count);
    if (target >= hist_count) target = hist_count - 1;
    uint64_t acc = 0;
    for (int b = 0; b < NBUCKETS; b++) {
        acc += hist[b];
        if (acc > target) {
            uint64_t hi = bucket_hi(b);
            if (hi > hist_max) hi = hist_max;
            return (double)hi / 1000.0;
        }
    }
    return (double)hist_max / 1000.0;
}

/* ---- server process-tree CPU from /proc ---- */
static double tree_cpu_seconds(int root, int *nprocs) {
    static int pids[65536], ppids[65536];
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) && n < 65536) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = 0;
        char *cp = strrchr(buf, ')');
        if (!cp) continue;
        int ppid = 0;
        if (sscanf(cp + 2, "%*c %d", &ppid) != 1) continue;
        pids[n] = atoi(e->d_name);
        ppids[n] = ppid;
        n++;
    }
    closedir(d);
    /* mark descendants of root (iterate to a fixed point) */
    static char in_tree[65536];
    memset(in_tree, 0, (size_t)n);
    int changed = 1, count = 0;
    for (int i = 0; i < n; i++) if (pids[i] == root) { in_tree[i] = 1; count++; }
    while (changed) {
        changed = 0;
        for (int i = 0; i < n; i++) {
            if (in_tree[i]) continue;
            for (int j = 0; j < n; j++)
                if (in_tree[j] && pids[j] == ppids[i]) { in_tree[i] = 1; count++; changed = 1; break; }
        }
    }
    long hz = sysconf(_SC_CLK_TCK);
    unsigned long long ticks = 0;
    for (int i = 0; i < n; i++) {
        if (!in_tree[i]) continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = 0;
        char *cp = strrchr(buf, ')');
        if (!cp) continue;
        unsigned long long ut, st;
        long long cut, cst;
        /* fields after ')': 3 state ... 14 utime 15 stime 16 cutime 17 cstime */
        if (sscanf(cp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
                   &ut, &st, &cut, &cst) == 4)
            ticks += ut + st + (unsigned long long)cut + (unsigned long long)cst;
    }
    if (nprocs) *nprocs = count;
    return (double)ticks / (double)hz;
}

/* ---- state ---- */
static int epfd;
static slot_t *slots;
static struct sockaddr_in target;
static uint64_t errors[E_COUNT];
static uint64_t exchanges, connections;
static int measuring;
static int draining;   /* after the window: finish in-flight exchanges, start none */
static long long total_exchanges_all; /* including warm-up, for the hard cap */

static void build_msg(slot_t *s) {
    /* "<label-free id>-" then filler, then "<EOF>"; unique per exchange */
    int n = opt_msg_size;
    char head[64];
    int hl = snprintf(head, sizeof head, "%016llx:", (unsigned long long)s->counter++);
    for (int i = 0; i < n - 5; i++) s->msg[i] = (i < hl) ? head[i] : (char)('a' + (i % 26));
    memcpy(s->msg + n - 5, "<EOF>", 5);
}

static void count_error(int kind) { if (measuring) errors[kind]++; }

static void slot_close(slot_t *s) {
    if (s->fd >= 0) { close(s->fd); s->fd = -1; }
    s->state = ST_IDLE;
}

static void slot_start_connect(slot_t *s, uint64_t t) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { count_error(E_OTHER); s->state = ST_BACKOFF; s->deadline = t + 1000000; return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->fd = fd;
    s->seq_in_conn = 0;
    s->t_start = t;
    s->deadline = t + (uint64_t)opt_timeout_ms * 1000000ull;
    int r = connect(fd, (struct sockaddr *)&target, sizeof target);
    if (r < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd); s->fd = -1;
        count_error(e == ECONNREFUSED ? E_REFUSED : (e == EADDRNOTAVAIL || e == EADDRINUSE) ? E_PORTS : E_OTHER);
        s->state = ST_BACKOFF; s->deadline = t + 1000000; /* 1 ms back-off, never spin */
        return;
    }
    build_msg(s);
    s->sent = s->got = 0;
    s->state = ST_CONNECTING;
    s->events = EPOLLOUT | EPOLLIN;
    struct epoll_event ev = {.events = s->events | EPOLLRDHUP, .data.ptr = s};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void slot_fail(slot_t *s, int kind, uint64_t t) {
    count_error(kind);
    slot_close(s);
    s->state = ST_BACKOFF;
    s->deadline = t + 1000000;
}

static void finish_exchange(slot_t *s, uint64_t t) {
    if (measuring) { exchanges++; hist_add(t - s->t_start); }
    total_exchanges_all++;
}

static void set_events(slot_t *s, uint32_t ev_mask) {
    if (s->events == ev_mask) return;
    s->events = ev_mask;
    struct epoll_event ev = {.events = ev_mask | EPOLLRDHUP, .data.ptr = s};
    epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static void do_send(slot_t *s, uint64_t t) {
    while (s->sent < (size_t)opt_msg_size) {
        ssize_t w = send(s->fd, s->msg + s->sent, (size_t)opt_msg_size - s->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { set_events(s, EPOLLOUT); return; }
            if (errno == EINTR) continue;
            slot_fail(s, (errno == ECONNRESET || errno == EPIPE) ? E_RESET : E_OTHER, t);
            return;
        }
        s->sent += (size_t)w;
    }
    s->state = ST_READING;
    set_events(s, EPOLLIN);
}

static void do_read(slot_t *s, uint64_t t) {
    for (;;) {
        if (s->state == ST_READING) {
            ssize_t r = recv(s->fd, s->rx + s->got, (size_t)opt_msg_size + 1 - s->got, 0);
            if (r < 0) {
                if (errno == EAGAIN) return;
                if (errno == EINTR) continue;
                slot_fail(s, errno == ECONNRESET ? E_RESET : E_OTHER, t);
                return;
            }
            if (r == 0) { slot_fail(s, E_EARLYCLOSE, t); return; }
            s->got += (size_t)r;
            if (s->got > (size_t)opt_msg_size ||
                memcmp(s->rx, s->msg, s->got) != 0) { slot_fail(s, E_MISMATCH, t); return; }
            if (s->got < (size_t)opt_msg_size) continue;
            /* full echo in */
            if (opt_keepalive) {
                finish_exchange(s, t);
                s->seq_in_conn++;
                if (s->seq_in_conn >= opt_per_conn || draining) { if (measuring) connections++; slot_close(s); return; }
                build_msg(s);
                s->sent = s->got = 0;
                s->t_start = t;
                s->deadline = t + (uint64_t)opt_timeout_ms * 1000000ull;
                s->state = ST_SENDING;
                do_send(s, t);
                return;
            }
            if (opt_client_closes) { finish_exchange(s, t); if (measuring) connections++; slot_close(s); return; }
            s->state = ST_WAITCLOSE;
        } else if (s->state == ST_WAITCLOSE) {
            char extra[64];
            ssize_t r = recv(s->fd, extra, sizeof extra, 0);
            if (r < 0) {
                if (errno == EAGAIN) return;
                if (errno == EINTR) continue;
                slot_fail(s, errno == ECONNRESET ? E_RESET : E_OTHER, t);
                return;
            }
            if (r > 0) { slot_fail(s, E_MISMATCH, t); return; }
            finish_exchange(s, t);
            if (measuring) connections++;
            slot_close(s);
            return;
        } else {
            return;
        }
    }
}

static void handle(slot_t *s, uint32_t ev, uint64_t t) {
    if (s->state == ST_CONNECTING) {
        int err = 0; socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            slot_fail(s, err == ECONNREFUSED ? E_REFUSED : err == ECONNRESET ? E_RESET
                         : (err == EADDRNOTAVAIL || err == EADDRINUSE) ? E_PORTS : E_OTHER, t);
            return;
        }
        if (!(ev & EPOLLOUT)) { if (ev & (EPOLLERR | EPOLLHUP)) slot_fail(s, E_RESET, t); return; }
        s->state = ST_SENDING;
        do_send(s, t);
        return;
    }
    if (s->state == ST_SENDING) {
        if (ev & EPOLLOUT) do_send(s, t);
        else if (ev & (EPOLLERR | EPOLLHUP)) slot_fail(s, E_RESET, t);
        return;
    }
    if (s->state == ST_READING || s->state == ST_WAITCLOSE) do_read(s, t);
}

static void usage(const char *p) {
    fprintf(stderr,
            "usage: %s --port P [--host 127.0.0.1] [--scenario conn|keepalive] [--concurrency N]\n"
            "          [--duration S] [--warmup S] [--max-exchanges N] [--msg-size B] [--per-conn N]\n"
            "          [--client-closes] [--timeout-ms MS] [--server-pid PID] [--label TEXT]\n", p);
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("--host")) opt_host = v;
        else if (ARG("--port")) opt_port = atoi(v);
        else if (ARG("--scenario")) {
            if (!strcmp(v, "keepalive")) opt_keepalive = 1;
            else if (!strcmp(v, "conn")) opt_keepalive = 0;
            else usage(argv[0]);
        } else if (ARG("--concurrency")) opt_conc = atoi(v);
        else if (ARG("--duration")) opt_duration = atof(v);
        else if (ARG("--warmup")) opt_warmup = atof(v);
        else if (ARG("--max-exchanges")) opt_max_exchanges = atoll(v);
        else if (ARG("--msg-size")) opt_msg_size = atoi(v);
        else if (ARG("--per-conn")) opt_per_conn = atoi(v);
        else if (ARG("--timeout-ms")) opt_timeout_ms = atoi(v);
        else if (ARG("--server-pid")) opt_server_pid = atoi(v);
        else if (ARG("--max-errors")) opt_max_errors = atoi(v);
        else if (ARG("--label")) opt_label = v;
        else if (!strcmp(a, "--client-closes")) opt_client_closes = 1;
        else usage(argv[0]);
    }
    if (opt_conc < 1 || opt_conc > 10000 || opt_msg_size < 6 || opt_msg_size > MAXMSG ||
        opt_duration <= 0 || opt_duration > 600 || opt_warmup < 0 || opt_warmup > 60 ||
        opt_per_conn < 1 || opt_timeout_ms < 1 || opt_max_exchanges < 1)
        usage(argv[0]);
    if (opt_timeout_ms > 5000) opt_timeout_ms = 5000;
    /* loopback targets only */
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &target.sin_addr) != 1 ||
        (ntohl(target.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: only 127.0.0.0/8 targets are allowed (got %s)\n", opt_host);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    slots = calloc((size_t)opt_conc, sizeof(slot_t));
    if (!slots) return 1;
    uint64_t t0 = now_ns();
    for (int i = 0; i < opt_conc; i++) {
        slots[i].fd = -1;
        slots[i].counter = ((uint64_t)i << 40);
        slots[i].state = ST_IDLE;
    }
    uint64_t warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
    uint64_t end = warm_end + (uint64_t)(opt_duration * 1e9);
    measuring = opt_warmup <= 0;
    double cpu0 = -1, cpu1 = -1;
    int nprocs0 = 0, nprocs1 = 0;
    uint64_t tm0 = t0, tm1 = 0;
    if (measuring && opt_server_pid) cpu0 = tree_cpu_seconds(opt_server_pid, &nprocs0);
    struct epoll_event evs[256];
    uint64_t last_scan = t0;
    int stopped_by_cap = 0, stopped_by_errors = 0;

    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= warm_end) {
            measuring = 1;
            if (opt_server_pid) cpu0 = tree_cpu_seconds(opt_server_pid, &nprocs0);
            tm0 = now_ns();
        }
        if (t >= end) break;
        if (measuring && (long long)exchanges >= opt_max_exchanges) { stopped_by_cap = 1; break; }
        uint64_t errsum = 0;
        for (int k = 0; k < E_COUNT; k++) errsum += errors[k];
        if (errsum >= (uint64_t)opt_max_errors) { stopped_by_errors = 1; break; }

        /* (re)start idle slots, expire back-offs */
        for (int i = 0; i < opt_conc; i++) {
            slot_t *s = &slots[i];
            if (s->state == ST_IDLE) slot_start_connect(s, t);
            else if (s->state == ST_BACKOFF && t >= s->deadline) { s->state = ST_IDLE; slot_start_connect(s, t); }
        }
        int n = epoll_wait(epfd, evs, 256, 5);
        t = now_ns();
        for (int i = 0; i < n; i++) handle((slot_t *)evs[i].data.ptr, evs[i].events, t);
        if (t - last_scan > 50000000ull) { /* every 50 ms: per-exchange timeouts */
            last_scan = t;
            for (int i = 0; i < opt_conc; i++) {
                slot_t *s = &slots[i];
                if (s->state != ST_IDLE && s->state != ST_BACKOFF && t > s->deadline) slot_fail(s, E_TIMEOUT, t);
            }
        }
    }
    tm1 = now_ns();
    if (opt_server_pid) cpu1 = tree_cpu_seconds(opt_server_pid, &nprocs1);
    /* drain (not measured, at most 2 s): let in-flight exchanges end the normal way so that
       servers see an orderly close rather than a reset */
    measuring = 0;
    draining = 1;
    uint64_t drain_end = now_ns() + 2000000000ull;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < opt_conc; i++)
            if (slots[i].state != ST_IDLE && slots[i].state != ST_BACKOFF) busy = 1;
        uint64_t t = now_ns();
        if (!busy || t >= drain_end) break;
        int n = epoll_wait(epfd, evs, 256, 5);
        t = now_ns();
        for (int i = 0; i < n; i++) handle((slot_t *)evs[i].data.ptr, evs[i].events, t);
        for (int i = 0; i < opt_conc; i++) {
            slot_t *s = &slots[i];
            if (s->state == ST_BACKOFF) s->state = ST_IDLE;
            else if (s->state != ST_IDLE && t > s->deadline) slot_close(s);
        }
    }
    for (int i = 0; i < opt_conc; i++) if (slots[i].fd >= 0) close(slots[i].fd);

    double window = (double)(tm1 - tm0) / 1e9;
    uint64_t errsum = 0;
    for (int k = 0; k < E_COUNT; k++) errsum += errors[k];
    printf("{\"label\":\"%s\",\"scenario\":\"%s\",\"concurrency\":%d,\"client_closes\":%s,"
           "\"msg_size\":%d,\"window_s\":%.3f,\"exchanges\":%llu,\"connections\":%llu,"
           "\"exchanges_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
           "\"errors_total\":%llu,\"errors\":{",
           opt_label, opt_keepalive ? "keepalive" : "conn", opt_conc, opt_client_closes ? "true" : "false",
           opt_msg_size, window, (unsigned long long)exchanges, (unsigned long long)connections,
           window > 0 ? (double)exchanges / window : 0.0, hist_pct(0.50), hist_pct(0.99), hist_pct(0.999),
           (double)hist_max / 1000.0, (unsigned long long)errsum);
    for (int k = 0; k < E_COUNT; k++)
        printf("%s\"%s\":%llu", k ? "," : "", err_names[k], (unsigned long long)errors[k]);
    printf("}");
    if (opt_server_pid && cpu0 >= 0 && cpu1 >= 0) {
        double d = cpu1 - cpu0;
        printf(",\"server_cpu_s\":%.3f,\"server_procs\":%d,\"server_cpu_us_per_exchange\":%.2f", d, nprocs1,
               exchanges ? d * 1e6 / (double)exchanges : 0.0);
    } else {
        printf(",\"server_cpu_s\":null,\"server_cpu_us_per_exchange\":null");
    }
    printf(",\"stopped_by_cap\":%s,\"stopped_by_errors\":%s}\n", stopped_by_cap ? "true" : "false",
           stopped_by_errors ? "true" : "false");
    return 0;
}
