/* spanwrap: a timestamping stand-in for a containerd shim binary (benchmarks only).
 *
 * The benchmark puts a directory first on containerd's PATH in which
 * containerd-shim-<name> is a symlink either to the real shim (timing off: no cost at all) or
 * to this program (timing on). Here it runs the real shim, $PYWASM_BENCH_REAL_DIR/<basename of
 * argv[0]>, as a child with the same arguments and fds, waits for it, and appends one line to
 * $PYWASM_BENCH_SPAN_LOG with a single write():
 *
 *     <action> <container id> <shim name> <exec ns> <exit ns> <exit status>
 *
 * (CLOCK_REALTIME, so the figures line up with containerd's log and the benchmark's clock).
 * Its own cost is one fork and one exec of a small static binary per shim invocation, the same
 * for every runtime. It does nothing for the long-running shim server: runc's shim re-executes
 * /proc/self/exe and pywasm's server comes from a fork, so neither passes through here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long stamp(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long long t0 = stamp();
    const char *real_dir = getenv("PYWASM_BENCH_REAL_DIR");
    const char *log_path = getenv("PYWASM_BENCH_SPAN_LOG");
    const char *slash = strrchr(argv[0], '/');
    const char *name = slash ? slash + 1 : argv[0];
    char real[4096];
    if (real_dir == NULL || snprintf(real, sizeof real, "%s/%s", real_dir, name) >= (int)sizeof real) {
        fprintf(stderr, "spanwrap: PYWASM_BENCH_REAL_DIR is not set\n");
        return 127;
    }
    const char *action = "other";
    const char *id = "-";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "start") == 0 || strcmp(argv[i], "delete") == 0) {
            action = argv[i];
        } else if ((strcmp(argv[i], "-id") == 0 || strcmp(argv[i], "--id") == 0) && i + 1 < argc) {
            id = argv[++i];
        }
    }
    pid_t pid = fork();
    if (pid < 0) {
        execv(real, argv);
        return 127;
    }
    if (pid == 0) {
        execv(real, argv);
        fprintf(stderr, "spanwrap: exec %s: %s\n", real, strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    long long t1 = stamp();
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (log_path != NULL) {
        char line[1024];
        int n = snprintf(line, sizeof line, "%s %s %s %lld %lld %d\n", action, id, name, t0, t1,
                         code);
        int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0 && n > 0 && n < (int)sizeof line) {
            (void)!write(fd, line, (size_t)n);
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    return code;
}
