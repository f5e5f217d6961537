/* The escape attempts of integration/sandbox_payload.py, natively, for a runc container.
 *
 * Usage: escape PORT TARGET
 * Prints the same `attempt: outcome` lines as the payload, in the same order, so a pywasm
 * container and a runc container with the same config can be compared line by line. Every
 * attempt is harmless when it succeeds (see the payload's docstring for why).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
    static char buf[32];
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ENXIO: return "ENXIO";
    case ESRCH: return "ESRCH";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case ENOEXEC: return "ENOEXEC";
    case ENOKEY: return "ENOKEY";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    }
    snprintf(buf, sizeof buf, "errno%d", e);
    return buf;
}

static void create(const char *what, const char *path) {
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd < 0) {
        printf("%s: %s\n", what, ename(errno));
        return;
    }
    close(fd);
    printf("%s: created %s\n", what, path);
}

static void make_dir(const char *path) {
    if (mkdir(path, 0700) != 0) {
        printf("mkdir: %s\n", ename(errno));
        return;
    }
    rmdir(path);
    printf("mkdir: ok\n");
}

static void device(const char *path) {
    if (mknod(path, S_IFBLK | 0600, makedev(7, 0)) != 0) {
        printf("device: mknod %s\n", ename(errno));
        return;
    }
    int fd = open(path, O_RDONLY);
    int e = errno;
    unlink(path);
    if (fd < 0) {
        printf("device: open %s\n", ename(e));
        return;
    }
    close(fd);
    printf("device: opened\n");
}

static void shadow(void) {
    static char data[1 << 20];
    int fd = open("/etc/shadow", O_RDONLY);
    if (fd < 0) {
        printf("shadow: %s\n", ename(errno));
        return;
    }
    ssize_t n = 0, r;
    while (n < (ssize_t)sizeof data && (r = read(fd, data + n, sizeof data - n)) > 0) n += r;
    close(fd);
    char *colon = memchr(data, ':', n);
    int first = colon ? (int)(colon - data) : (int)n;
    printf("shadow: read %zd %.*s\n", n, first, data);
}

static void tcp(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {3, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno == EINPROGRESS || errno == EAGAIN ? ETIMEDOUT : errno;
        printf("tcp: %s\n", ename(e));
    } else {
        printf("tcp: connected\n");
    }
    close(s);
}

static void syscall_outcome(const char *what, long r) {
    if (r == -1) printf("%s: %s\n", what, ename(errno));
    else printf("%s: ok\n", what);
}

static void trace(const char *target) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int pid = 0;
    while (d && !pid && (e = readdir(d))) {
        int p = atoi(e->d_name);
        if (p <= 0 || p == getpid()) continue;
        char path[64], cmd[256];
        snprintf(path, sizeof path, "/proc/%d/cmdline", p);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, cmd, sizeof cmd);
        close(fd);
        if (n <= 0) continue;
        cmd[n == (ssize_t)sizeof cmd ? n - 1 : n] = 0; /* argv[0] ends at its NUL */
        if (strstr(cmd, target)) pid = p;
    }
    if (d) closedir(d);
    if (!pid) {
        printf("ptrace: no-target\n");
        return;
    }
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == -1) printf("ptrace: %s\n", ename(errno));
    else printf("ptrace: seized\n");
}

static void raise_nofile(void) {
    struct rlimit old, want;
    if (getrlimit(RLIMIT_NOFILE, &old) != 0) {
        printf("rlimit: getrlimit %s\n", ename(errno));
        return;
    }
    want.rlim_cur = old.rlim_cur;
    want.rlim_max = old.rlim_max + 1;
    if (setrlimit(RLIMIT_NOFILE, &want) != 0)
        printf("rlimit: hard=%llu %s\n", (unsigned long long)old.rlim_max, ename(errno));
    else
        printf("rlimit: hard=%llu raised\n", (unsigned long long)old.rlim_max);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT TARGET\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsigned char raw[6];
    char token[13], tmp[64], root[64], dir[64], dev[64];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, raw, sizeof raw) != sizeof raw) {
        /* no /dev/urandom: the pid and time are unique enough for a marker name */
        long v = (long)getpid() ^ (long)time(NULL);
        memcpy(raw, &v, sizeof raw);
    }
    if (fd >= 0) close(fd);
    for (int i = 0; i < 6; i++) snprintf(token + 2 * i, 3, "%02x", raw[i]);
    snprintf(tmp, sizeof tmp, "/tmp/pw-escape-%s", token);
    snprintf(root, sizeof root, "/pw-escape-%s", token);
    snprintf(dir, sizeof dir, "/pw-mkdir-%s", token);
    snprintf(dev, sizeof dev, "/pw-dev-%s", token);

    shadow();
    create("tmp", tmp);
    create("root", root);
    tcp(atoi(argv[1]));
    syscall_outcome("mount", mount("pw-escape", "/", "pw-no-such-fs", 0, NULL));
    syscall_outcome("init_module", syscall(SYS_init_module, NULL, 0L, ""));
    syscall_outcome("finit_module", syscall(SYS_finit_module, -1, "", 0));
    trace(argv[2]);
    raise_nofile();
    syscall_outcome("keyctl", syscall(SYS_keyctl, 0L, -3L, 0L));
    syscall_outcome("add_key", syscall(SYS_add_key, "user", "pw-escape", "x", 1L, -2L));
    make_dir(dir);
    device(dev);
    return 0;
}
