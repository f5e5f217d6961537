/* A CGI function (RFC 3875) for the HTTP tests: the path picks what it does.
 *
 *   /notfound    Status: 404 with a body
 *   /redirect    Status: 302 and a Location
 *   /loop        never answers (the server's wall-time limit must stop it)
 *   /trap        an unreachable instruction
 *   /malformed   output without a header section
 *   /env...      every environment variable, one per line
 *   /exit3       exits 3 without output
 *   anything else: echoes method, path, query, the X-Test header, the length and the body
 *
 * The same source builds natively (busybox httpd serves it for the benchmark).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static const char *var(const char *name) {
    const char *value = getenv(name);
    return value ? value : "-";
}

static void echo(void) {
    static char buf[65536];
    printf("Content-Type: text/plain\r\n");
    printf("X-Echo-Method: %s\r\n\r\n", var("REQUEST_METHOD"));
    printf("method=%s\npath=%s\nquery=%s\nheader=%s\nlength=%s\nbody=", var("REQUEST_METHOD"),
           var("PATH_INFO"), var("QUERY_STRING"), var("HTTP_X_TEST"), var("CONTENT_LENGTH"));
    fflush(stdout);
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
    }
}

int main(void) {
    const char *path = var("PATH_INFO");
    if (strcmp(path, "/notfound") == 0) {
        printf("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such thing\n");
    } else if (strcmp(path, "/redirect") == 0) {
        printf("Status: 302 Found\r\nLocation: http://example.invalid/elsewhere\r\n\r\n");
    } else if (strcmp(path, "/loop") == 0) {
        volatile unsigned long spin = 0;
        for (;;) {
            spin++;
        }
    } else if (strcmp(path, "/trap") == 0) {
        __builtin_trap();
    } else if (strcmp(path, "/malformed") == 0) {
        printf("this is not a CGI response\n");
    } else if (strncmp(path, "/env", 4) == 0) {
        printf("Content-Type: text/plain\n\n");
        for (char **e = environ; *e; e++) {
            printf("%s\n", *e);
        }
    } else if (strcmp(path, "/exit3") == 0) {
        fflush(stdout);
        _exit(3);
    } else if (strcmp(path, "/stderr") == 0) {
        fprintf(stderr, "cgi guest: a line on stderr\n");
        printf("Content-Type: text/plain\n\nsee stderr\n");
    } else {
        echo();
    }
    return 0;
}
