/*
 * launch: exec → READY=1 start-up time of pre-fork servers, with no interpreter in the timed path.
 *
 * For each round and each server (the order alternates between rounds: A B, B A, …) it
 * posix_spawn()s `CMD --listen 127.0.0.1:0 --workers N` in a new process group with
 * NOTIFY_SOCKET set to its own AF_UNIX datagram socket, and times CLOCK_MONOTONIC from just
 * before posix_spawn() to the datagram carrying READY=1. Then it SIGKILLs the process group and
 * reaps all of it (it is the child subreaper, so orphaned workers come back to it) before the
 * next start. Prints median, p10, p90 per server and each one's ratio to the reference (the
 * last server unless -r), as the median of the per-round ratios. Beside it, the CPU time
 * (user + system) the server's processes used from spawn to the kill after READY=1, from
 * getrusage(RUSAGE_CHILDREN): on a busy machine that one is barely moved by the others' load;
 * and their page faults, which do not move at all.
 *
 * usage: launch [-n ROUNDS] [-w WORKERS] [-t TIMEOUT_MS] [-r REFNAME] [-j JSONFILE] [-e STDERRFILE]
 *               NAME=PATH[ ARG…] …
 * e.g.   launch -n 21 preforkd=.build-release/release/preforkd floor=build/startup-floor
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAXSERVERS 8
#define MAXARGS 32

struct server {
    const char *name;
    char *argv[MAXARGS];
    double *ms;  /* one per round; < 0 when READY=1 did not come */
    double *cpu; /* CPU ms of all its processes, one per round */
    double *faults; /* page faults of all its processes, one per round */
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time (user + system) of every reaped child so far, in ms; and their page faults. */
static double children_cpu_ms(double *faults) {
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    *faults = (double)(ru.ru_minflt + ru.ru_majflt);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted array */
static double pct(const double *sorted, int n, double p) {
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    return sorted[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

static double median_of(const double *xs, int n) {
    double *s = malloc(sizeof(double) * (size_t)(n ? n : 1));
    memcpy(s, xs, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

static double min_of(const double *xs, int n) {
    double m = xs[0];
    for (int i = 1; i < n; i++) m = xs[i] < m ? xs[i] : m;
    return m;
}

/* The 1-minute load average: anything else running skews the absolute times. */
static const char *load_average(void) {
    static char text[64];
    snprintf(text, sizeof text, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%63s", text) != 1) snprintf(text, sizeof text, "?");
        fclose(f);
    }
    return text;
}

/* The environment of every server: ours without systemd's per-service variables, plus NOTIFY_SOCKET. */
static char **server_environment(const char *notify_path) {
    size_t count = 0;
    while (environ[count]) count++;
    char **env = calloc(count + 2, sizeof(char *));
    size_t k = 0;
    static const char *dropped[] = {"NOTIFY_SOCKET=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=",
                                    "WATCHDOG_USEC=", "WATCHDOG_PID=", "JOURNAL_STREAM=", NULL};
    for (size_t i = 0; i < count; i++) {
        int keep = 1;
        for (const char **d = dropped; *d; d++)
            if (!strncmp(environ[i], *d, strlen(*d))) keep = 0;
        if (keep) env[k++] = environ[i];
    }
    char *notify = malloc(strlen(notify_path) + sizeof "NOTIFY_SOCKET=");
    sprintf(notify, "NOTIFY_SOCKET=%s", notify_path);
    env[k++] = notify;
    env[k] = NULL;
    return env;
}

/* Kills the process group led by pid and reaps every process that comes back to us. */
static void kill_and_reap(pid_t pid) {
    kill(-pid, SIGKILL);
    double deadline = now_ms() + 5000;
    for (;;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0 && errno == ECHILD) return;
        if (r > 0) continue;
        if (now_ms() > deadline) {
            fprintf(stderr, "launch: processes of %d still alive after 5 s\n", (int)pid);
            return;
        }
        kill(-pid, SIGKILL);
        usleep(200);
    }
}

static int has_ready(const char *msg, ssize_t n) {
    const char *p = msg, *end = msg + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (len == 7 && !memcmp(p, "READY=1", 7)) return 1;
        p += len + 1;
    }
    return 0;
}

/* One start: exec → READY=1 in ms, or -1 (no READY=1 before the deadline, or the server exited). */
static double start_once(struct server *s, int sock, char **env, int timeout_ms, const char *stderr_path) {
    char drain[4096];
    while (recv(sock, drain, sizeof drain, MSG_DONTWAIT) > 0) {}

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

    pid_t pid;
    double t0 = now_ms();
    int rc = posix_spawn(&pid, s->argv[0], &fa, &attr, s->argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        fprintf(stderr, "launch: posix_spawn %s: %s\n", s->argv[0], strerror(rc));
        return -1;
    }
    double elapsed = -1, deadline = t0 + timeout_ms;
    for (;;) {
        double left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "launch: %s: no READY=1 within %d ms\n", s->name, timeout_ms);
            break;
        }
        struct pollfd p = {.fd = sock, .events = POLLIN};
        int n = poll(&p, 1, left < 10 ? (int)left + 1 : 10);
        if (n > 0) {
            char msg[4096];
            ssize_t r = recv(sock, msg, sizeof msg, MSG_DONTWAIT);
            double t1 = now_ms();
            if (r > 0 && has_ready(msg, r)) {
                elapsed = t1 - t0;
                break;
            }
        } else if (waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "launch: %s exited before READY=1 (see %s)\n", s->name, stderr_path);
            return -1;
        }
    }
    kill_and_reap(pid);
    return elapsed;
}

static void usage(const char *me) {
    fprintf(stderr,
            "usage: %s [-n ROUNDS] [-w WORKERS] [-t TIMEOUT_MS] [-r REFNAME] [-j JSONFILE] [-e STDERRFILE]\n"
            "          NAME=PATH[ ARG...] ...\n",
            me);
    exit(64);
}

int main(int argc, char **argv) {
    int rounds = 21, timeout_ms = 2000, opt;
    const char *workers = "4", *ref_name = NULL, *json_path = NULL, *stderr_path = "/dev/null";
    while ((opt = getopt(argc, argv, "n:w:t:r:j:e:")) != -1) {
        switch (opt) {
        case 'n': rounds = atoi(optarg); break;
        case 'w': workers = optarg; break;
        case 't': timeout_ms = atoi(optarg); break;
        case 'r': ref_name = optarg; break;
        case 'j': json_path = optarg; break;
        case 'e': stderr_path = optarg; break;
        default: usage(argv[0]);
        }
    }
    int nservers = argc - optind;
    if (nservers < 1 || nservers > MAXSERVERS || rounds < 1) usage(argv[0]);
    struct server servers[MAXSERVERS];
    int ref = nservers - 1;
    for (int i = 0; i < nservers; i++) {
        char *spec = strdup(argv[optind + i]), *eq = strchr(spec, '=');
        if (!eq || eq == spec || !eq[1]) usage(argv[0]);
        *eq = 0;
        servers[i].name = spec;
        int k = 0;
        for (char *tok = strtok(eq + 1, " "); tok && k < MAXARGS - 5; tok = strtok(NULL, " ")) servers[i].argv[k++] = tok;
        servers[i].argv[k++] = "--listen";
        servers[i].argv[k++] = "127.0.0.1:0";
        servers[i].argv[k++] = "--workers";
        servers[i].argv[k++] = (char *)workers;
        servers[i].argv[k] = NULL;
        if (access(servers[i].argv[0], X_OK) != 0) {
            fprintf(stderr, "launch: %s: %s\n", servers[i].argv[0], strerror(errno));
            return 66;
        }
        servers[i].ms = calloc((size_t)rounds, sizeof(double));
        servers[i].cpu = calloc((size_t)rounds, sizeof(double));
        servers[i].faults = calloc((size_t)rounds, sizeof(double));
        if (ref_name && !strcmp(ref_name, spec)) ref = i;
    }

    /* Orphaned workers of a killed server are reparented to us, so we can reap them all. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/launch-XXXXXX";
    if (!mkdtemp(dir)) { perror("launch: mkdtemp"); return 1; }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", dir);
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || bind(sock, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("launch: notify socket"); return 1; }
    char **env = server_environment(sa.sun_path);

    char load_before[64];
    snprintf(load_before, sizeof load_before, "%s", load_average());
    /* One unmeasured start each: page cache and dynamic loader caches warm. */
    for (int i = 0; i < nservers; i++) start_once(&servers[i], sock, env, timeout_ms, stderr_path);
    int failed = 0;
    for (int r = 0; r < rounds && !failed; r++) {
        for (int j = 0; j < nservers; j++) {
            int i = r % 2 ? nservers - 1 - j : j;
            double faults_before, faults_after;
            double cpu_before = children_cpu_ms(&faults_before);
            servers[i].ms[r] = start_once(&servers[i], sock, env, timeout_ms, stderr_path);
            servers[i].cpu[r] = children_cpu_ms(&faults_after) - cpu_before;
            servers[i].faults[r] = faults_after - faults_before;
            if (servers[i].ms[r] < 0) failed = 1;
        }
    }
    close(sock);
    unlink(sa.sun_path);
    rmdir(dir);
    if (failed) return 1;

    FILE *json = json_path ? fopen(json_path, "w") : NULL;
    if (json) fprintf(json, "{\"rounds\": %d, \"workers\": %s, \"reference\": \"%s\", \"servers\": [", rounds, workers,
                      servers[ref].name);
    printf("exec → READY=1, %s workers, %d interleaved rounds (ms); load average before: %s, after: %s\n", workers,
           rounds, load_before, load_average());
    printf("%-16s %8s %8s %8s %8s %8s   %-24s %s\n", "server", "median", "p10", "p90", "min", "max", "× ", "CPU ms (×)    faults");
    for (int i = 0; i < nservers; i++) {
        double *s = malloc(sizeof(double) * (size_t)rounds), *ratios = malloc(sizeof(double) * (size_t)rounds);
        memcpy(s, servers[i].ms, sizeof(double) * (size_t)rounds);
        qsort(s, (size_t)rounds, sizeof(double), cmp_double);
        for (int r = 0; r < rounds; r++) ratios[r] = servers[i].ms[r] / servers[ref].ms[r];
        double med = median_of(s, rounds), ratio = median_of(ratios, rounds);
        double cpu = median_of(servers[i].cpu, rounds), ref_cpu = median_of(servers[ref].cpu, rounds);
        char against[40];
        snprintf(against, sizeof against, "%.2f× %s", ratio, i == ref ? "(reference)" : servers[ref].name);
        printf("%-16s %8.2f %8.2f %8.2f %8.2f %8.2f   %-24s %5.2f (%.2f×) %6.0f\n", servers[i].name, med,
               pct(s, rounds, 10), pct(s, rounds, 90), s[0], s[rounds - 1], against, cpu,
               ref_cpu > 0 ? cpu / ref_cpu : 0, median_of(servers[i].faults, rounds));
        if (json) {
            fprintf(json, "%s\n {\"name\": \"%s\", \"median_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, "
                          "\"min_ms\": %.3f, \"max_ms\": %.3f, \"ratio_to_reference\": %.3f, \"cpu_ms\": %.3f, \"page_faults\": %.0f, \"ms\": [",
                    i ? "," : "", servers[i].name, med, pct(s, rounds, 10), pct(s, rounds, 90), s[0], s[rounds - 1],
                    ratio, cpu, median_of(servers[i].faults, rounds));
            for (int r = 0; r < rounds; r++) fprintf(json, "%s%.3f", r ? ", " : "", servers[i].ms[r]);
            fprintf(json, "]}");
        }
        free(s);
        free(ratios);
    }
    printf("(ratio: median over rounds of this server's time / %s's time in the same round; on a busy\n"
           " machine the ratio of the minima, %.2f× for %s, shows the cost without the others' noise)\n",
           servers[ref].name, min_of(servers[0].ms, rounds) / min_of(servers[ref].ms, rounds), servers[0].name);
    if (json) {
        fprintf(json, "\n]}\n");
        fclose(json);
    }
    return 0;
}
