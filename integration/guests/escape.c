/* A hostile guest: tries every way out of its grants it knows and reports each.
 *   escape SECRET_PATH RW_DIR
 * SECRET_PATH is a host file outside every grant (content starts with "SECRET");
 * RW_DIR is a writable grant, where the host put symlinks pointing at the secret.
 * Prints "ESCAPED: <how>" for each attempt that reached the secret, "held: <how>" otherwise;
 * exits 0 only when every attempt held. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int escaped = 0;

static void try_read(const char *how, const char *path) {
    char buf[64] = {0};
    int fd = open(path, O_RDONLY);
    if (fd >= 0 && read(fd, buf, sizeof buf - 1) > 0 && strncmp(buf, "SECRET", 6) == 0) {
        printf("ESCAPED: %s (%s)\n", how, path);
        escaped = 1;
    } else {
        printf("held: %s (%s): %s\n", how, path, fd < 0 ? strerror(errno) : "not the secret");
    }
    if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: escape SECRET_PATH RW_DIR\n");
        return 2;
    }
    const char *secret = argv[1];
    const char *rw = argv[2];
    char path[512];

    try_read("absolute path", secret);
    snprintf(path, sizeof path, "../../../../../../..%s", secret);
    try_read("dot-dot from cwd", path);
    snprintf(path, sizeof path, "%s/../../../../../..%s", rw, secret);
    try_read("dot-dot from a grant", path);
    snprintf(path, sizeof path, "/proc/self/root%s", secret);
    try_read("/proc/self/root", path);
    snprintf(path, sizeof path, "%s/abs-link", rw);
    try_read("host symlink, absolute target", path);
    snprintf(path, sizeof path, "%s/rel-link", rw);
    try_read("host symlink, relative target", path);

    snprintf(path, sizeof path, "%s/guest-link", rw);
    unlink(path);
    if (symlink(secret, path) == 0) {
        try_read("guest-made symlink, absolute target", path);
    } else {
        printf("held: guest-made symlink, absolute target: %s\n", strerror(errno));
    }
    snprintf(path, sizeof path, "%s/guest-rel-link", rw);
    unlink(path);
    char target[512];
    snprintf(target, sizeof target, "../../../../../../..%s", secret);
    if (symlink(target, path) == 0) {
        try_read("guest-made symlink, relative target", path);
    } else {
        printf("held: guest-made symlink, relative target: %s\n", strerror(errno));
    }
    snprintf(path, sizeof path, "%s/hard-link", rw);
    if (link(secret, path) == 0) {
        try_read("hard link", path);
    } else {
        printf("held: hard link: %s\n", strerror(errno));
    }
    return escaped;
}
