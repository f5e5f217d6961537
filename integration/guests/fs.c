/* Small file-system tool for preopen/permission tests.
 *   fs read PATH           prints the file's content
 *   fs write PATH TEXT     creates/truncates PATH with TEXT
 *   fs ls DIR              prints the entry names of DIR, sorted by the guest, one per line
 * Prints "error: <op> <path>: <reason>" on stderr and exits 1 when the operation fails. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *op, const char *path) {
    fprintf(stderr, "error: %s %s: %s\n", op, path, strerror(errno));
    return 1;
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: fs read PATH | fs write PATH TEXT | fs ls DIR\n");
        return 2;
    }
    const char *op = argv[1], *path = argv[2];
    if (strcmp(op, "read") == 0) {
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            return fail(op, path);
        }
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
            fwrite(buf, 1, n, stdout);
        }
        fclose(f);
        return 0;
    }
    if (strcmp(op, "write") == 0 && argc > 3) {
        FILE *f = fopen(path, "w");
        if (f == NULL) {
            return fail(op, path);
        }
        if (fputs(argv[3], f) < 0 || fclose(f) != 0) {
            return fail(op, path);
        }
        printf("ok\n");
        return 0;
    }
    if (strcmp(op, "ls") == 0) {
        DIR *d = opendir(path);
        if (d == NULL) {
            return fail(op, path);
        }
        char *names[1024];
        int count = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL && count < 1024) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                names[count++] = strdup(e->d_name);
            }
        }
        closedir(d);
        qsort(names, (size_t)count, sizeof names[0], cmp);
        for (int i = 0; i < count; i++) {
            printf("%s\n", names[i]);
        }
        return 0;
    }
    fprintf(stderr, "unknown operation %s\n", op);
    return 2;
}
