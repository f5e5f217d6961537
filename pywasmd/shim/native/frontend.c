/* containerd-shim-pywasm-v1, compiled: the common case of `start` and `delete`.
 *
 * containerd runs the shim binary twice per container and waits for it each time; a Python
 * interpreter start is ~10 ms of CPU on each. This program does what pywasmd/shim/bootstrap.py
 * does in the common case, with the same output and exit status, and execs the Python shim
 * (PYWASM_FALLBACK, the generated `python -IS` launcher) with its own arguments for anything
 * else, before it has changed anything it could not undo:
 *
 *   start   argv in the forms containerd uses; config.json plain enough JSON (ASCII, a
 *           grouping annotation, if any, a string without escapes); the zygote answers `ok`
 *           (with it off, absent, stale or failing, Python serves the container itself and
 *           respawns the zygote).
 *   delete  nothing left to kill, unmount or `runc delete` (a dead server's leftovers); it
 *           removes the cgroup directories and a stale socket as Python does.
 *
 * Built by `python -m pywasmd.shim.install` with zig cc (static musl), which defines
 * PYWASM_FALLBACK, PYWASM_ZYGOTE_DEFAULT and PYWASM_WATCHED (the Python files whose behaviour
 * this copies, with their size and mtime: once one differs, everything is Python's) in a
 * generated header (`-include`). With -DPYWASM_FRONTEND_SELFTEST it is instead a tool the
 * unit tests use to compare its pure pieces (the socket address, the grouping key, the
 * DeleteResponse encoding) with the Python ones.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PYWASM_FALLBACK
#define PYWASM_FALLBACK ""
#endif
#ifndef PYWASM_ZYGOTE_DEFAULT
#define PYWASM_ZYGOTE_DEFAULT ""
#endif

extern char **environ;

#define SOCKET_ROOT "/run/containerd/s"
#define RUNC_STATE_ROOT "/run/pywasm/runc"
#define CGROUP_ROOT "/sys/fs/cgroup"
#define ZYGOTE_PROTOCOL "pywasm-zygote-2"

/* --- sha256 (FIPS 180-4) -------------------------------------------------------------- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
                      K256[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

/* hex digest of data[0:n] into out[65] */
static void sha256_hex(const unsigned char *data, size_t n, char out[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        sha256_block(h, data + i);
    }
    unsigned char tail[128] = {0};
    size_t rest = n - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t blocks = rest + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)n * 8;
    for (int b = 0; b < 8; b++) {
        tail[blocks * 64 - 1 - b] = (unsigned char)(bits >> (8 * b));
    }
    for (size_t b = 0; b < blocks; b++) {
        sha256_block(h, tail + 64 * b);
    }
    static const char hex[] = "0123456789abcdef";
    for (int j = 0; j < 32; j++) {
        unsigned char byte = (unsigned char)(h[j / 4] >> (24 - 8 * (j % 4)));
        out[2 * j] = hex[byte >> 4];
        out[2 * j + 1] = hex[byte & 15];
    }
    out[64] = '\0';
}

/* --- small helpers ------------------------------------------------------------------ */

/* A growable byte buffer; on allocation failure `failed` is set and the caller defers. */
struct buf {
    char *data;
    size_t len, cap;
    int failed;
};

static void buf_add(struct buf *b, const void *p, size_t n) {
    if (b->failed) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        char *grown = realloc(b->data, cap);
        if (grown == NULL) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* posixpath.join(a, b) appended to `out` (which holds a): an absolute b replaces it. */
static void path_join(struct buf *out, const char *b) {
    if (b[0] == '/') {
        out->len = 0;
        if (out->data) {
            out->data[0] = '\0';
        }
    } else if (out->len > 0 && out->data[out->len - 1] != '/') {
        buf_add(out, "/", 1);
    }
    buf_str(out, b);
    if (out->data == NULL) {
        buf_add(out, "", 0);
    }
}

static int is_ascii(const char *s) {
    for (; *s; s++) {
        if ((unsigned char)*s >= 0x80) {
            return 0;
        }
    }
    return 1;
}

/* Python's str.isspace() for ASCII: what str.strip() removes. */
static int py_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

enum read_result { READ_OK, READ_DEFER };

/* paths._read: the file's text, stripped; "" when missing or unreadable. READ_DEFER when the
 * text is not plain ASCII (Python's decoding and strip rules beyond ASCII stay Python's). */
static enum read_result read_stripped(const char *dir, const char *name, char *out, size_t cap) {
    char path[PATH_MAX];
    out[0] = '\0';
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        return READ_DEFER;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return READ_OK;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap - 1) {
            close(fd);
            return READ_DEFER;
        }
        ssize_t got = read(fd, out + n, cap - 1 - n);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            close(fd);
            out[0] = '\0';
            return READ_OK; /* Python: OSError while reading -> "" */
        }
        if (got == 0) {
            break;
        }
        n += (size_t)got;
    }
    close(fd);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c >= 0x80 || c == 0) {
            return READ_DEFER;
        }
    }
    size_t lo = 0;
    while (lo < n && py_space((unsigned char)out[lo])) {
        lo++;
    }
    while (n > lo && py_space((unsigned char)out[n - 1])) {
        n--;
    }
    memmove(out, out + lo, n - lo);
    out[n - lo] = '\0';
    return READ_OK;
}

/* A sockaddr_un for `path` and its length as Python's socket module computes it (no NUL
 * needed); 0 when the path does not fit. */
static socklen_t unix_addr(struct sockaddr_un *sa, const char *path) {
    size_t len = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (len > sizeof sa->sun_path) {
        return 0;
    }
    memcpy(sa->sun_path, path, len);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t done = write(fd, p, n);
        if (done < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += done;
        n -= (size_t)done;
    }
    return 0;
}

static size_t varint(unsigned char *out, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return n;
}

/* bootstrap.encode_delete_response */
static size_t encode_delete_response(unsigned char *out, uint64_t pid, uint64_t status,
                                     uint64_t ns) {
    unsigned char stamp[32];
    size_t s = 0, n = 0;
    stamp[s++] = 0x08;
    s += varint(stamp + s, ns / 1000000000ULL);
    if (ns % 1000000000ULL) {
        stamp[s++] = 0x10;
        s += varint(stamp + s, ns % 1000000000ULL);
    }
    if (pid) {
        out[n++] = 0x08;
        n += varint(out + n, pid);
    }
    if (status) {
        out[n++] = 0x10;
        n += varint(out + n, status);
    }
    out[n++] = 0x1a;
    n += varint(out + n, s);
    memcpy(out + n, stamp, s);
    return n + s;
}

/* bootstrap.socket_address: unix:///run/containerd/s/<sha256 of join(address, ns, key)> */
static int socket_address(const char *address, const char *ns, const char *key, char *out,
                          size_t cap) {
    struct buf joined = {0};
    buf_str(&joined, address);
    path_join(&joined, ns);
    path_join(&joined, key);
    if (joined.failed) {
        free(joined.data);
        return -1;
    }
    char digest[65];
    sha256_hex((const unsigned char *)joined.data, joined.len, digest);
    free(joined.data);
    return snprintf(out, cap, "unix://" SOCKET_ROOT "/%s", digest) < (int)cap ? 0 : -1;
}


/* --- the grouping key from config.json (bootstrap.grouping_key) ----------------------- */

/* The annotations that group containers, in bootstrap.GROUP_ANNOTATIONS' order. */
static const char *const GROUP_ANNOTATIONS[] = {"io.kubernetes.cri.sandbox-id", "pywasm.io/group"};
#define N_GROUP_ANNOTATIONS (sizeof GROUP_ANNOTATIONS / sizeof *GROUP_ANNOTATIONS)

/* JSON as Python's json module reads it, only as far as the grouping key needs; anything
 * where Python's answer would take more than this (escapes in the strings that matter,
 * NaN, non-ASCII, deep nesting, a truthy annotation that is not a string) is DEFER. */
enum { J_OK = 0, J_DEFER = -1 };

struct json {
    const char *p, *end;
    int depth;
};

struct jvalue {
    char kind; /* '{' '[' '"' '0' (number) 't' 'f' 'n' */
    const char *at;   /* where it starts */
    const char *str;  /* a string's raw contents */
    size_t len;       /* their length; for '{' and '[' the member count */
    int plain;        /* a string without escapes */
    int zero;         /* a number that is zero */
};

static void jws(struct json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
        j->p++;
    }
}

static int jstring(struct json *j, struct jvalue *v) {
    if (j->p >= j->end || *j->p != '"') {
        return J_DEFER;
    }
    const char *start = ++j->p;
    v->kind = '"';
    v->plain = 1;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            v->str = start;
            v->len = (size_t)(j->p - start);
            j->p++;
            return J_OK;
        }
        if (c < 0x20) {
            return J_DEFER;
        }
        if (c == '\\') {
            v->plain = 0;
            if (++j->p >= j->end) {
                return J_DEFER;
            }
            if (*j->p == 'u') {
                for (int i = 1; i <= 4; i++) {
                    if (j->p + i >= j->end || !strchr("0123456789abcdefABCDEF", j->p[i]) ||
                        j->p[i] == '\0') {
                        return J_DEFER;
                    }
                }
                j->p += 5;
                continue;
            }
            if (strchr("\"\\/bfnrt", *j->p) == NULL || *j->p == '\0') {
                return J_DEFER;
            }
        }
        j->p++;
    }
    return J_DEFER;
}

static int jdigits(struct json *j) {
    const char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        j->p++;
    }
    return j->p > start;
}

/* Python's NUMBER_RE: -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)? */
static int jnumber(struct json *j, struct jvalue *v) {
    const char *start = j->p;
    v->kind = '0';
    v->zero = 1;
    if (j->p < j->end && *j->p == '-') {
        j->p++;
    }
    if (j->p < j->end && *j->p == '0') {
        j->p++;
    } else if (!jdigits(j)) {
        return J_DEFER; /* -Infinity, or not a number */
    }
    if (j->p + 1 < j->end && *j->p == '.' && j->p[1] >= '0' && j->p[1] <= '9') {
        j->p++;
        jdigits(j);
    }
    const char *mantissa_end = j->p;
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        const char *e = j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) {
            j->p++;
        }
        if (!jdigits(j)) {
            j->p = e; /* not an exponent: Python stops before it (and then fails) */
        }
    }
    for (const char *q = start; q < mantissa_end; q++) {
        if (*q >= '1' && *q <= '9') {
            v->zero = 0;
        }
    }
    return J_OK;
}

static int jvalue(struct json *j, struct jvalue *v);

/* An object or array; `each` (objects only) sees every member. */
static int jcontainer(struct json *j, struct jvalue *v,
                      int (*each)(void *ctx, const struct jvalue *key, const struct jvalue *val),
                      void *ctx) {
    char open = *j->p, close = open == '{' ? '}' : ']';
    if (++j->depth > 64) {
        return J_DEFER;
    }
    j->p++;
    v->kind = open;
    v->len = 0;
    jws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return J_OK;
    }
    for (;;) {
        struct jvalue key = {0}, val = {0};
        jws(j);
        if (open == '{') {
            if (jstring(j, &key) != J_OK) {
                return J_DEFER;
            }
            jws(j);
            if (j->p >= j->end || *j->p != ':') {
                return J_DEFER;
            }
            j->p++;
        }
        if (jvalue(j, &val) != J_OK) {
            return J_DEFER;
        }
        if (open == '{' && each != NULL && each(ctx, &key, &val) != J_OK) {
            return J_DEFER;
        }
        v->len++;
        jws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return J_OK;
        }
        return J_DEFER;
    }
}

static int jliteral(struct json *j, const char *word, char kind, struct jvalue *v) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) {
        return J_DEFER;
    }
    j->p += n;
    v->kind = kind;
    return J_OK;
}

static int jvalue(struct json *j, struct jvalue *v) {
    jws(j);
    if (j->p >= j->end) {
        return J_DEFER;
    }
    v->at = j->p;
    switch (*j->p) {
    case '{':
    case '[':
        return jcontainer(j, v, NULL, NULL);
    case '"':
        return jstring(j, v);
    case 't':
        return jliteral(j, "true", 't', v);
    case 'f':
        return jliteral(j, "false", 'f', v);
    case 'n':
        return jliteral(j, "null", 'n', v);
    default:
        return jnumber(j, v);
    }
}

static int key_is(const struct jvalue *key, const char *name) {
    return key->plain && key->len == strlen(name) && memcmp(key->str, name, key->len) == 0;
}

/* A key with escapes could spell any name: Python decodes it, this leaves it to Python. */
static int plain_key(const struct jvalue *key) { return key->plain ? J_OK : J_DEFER; }

struct top {
    struct jvalue annotations; /* the last "annotations" member (Python keeps the last) */
    int found;
};

static int top_member(void *ctx, const struct jvalue *key, const struct jvalue *val) {
    struct top *t = ctx;
    if (plain_key(key) != J_OK) {
        return J_DEFER;
    }
    if (key_is(key, "annotations")) {
        t->annotations = *val;
        t->found = 1;
    }
    return J_OK;
}

struct group {
    struct jvalue values[N_GROUP_ANNOTATIONS];
    int found[N_GROUP_ANNOTATIONS];
};

static int group_member(void *ctx, const struct jvalue *key, const struct jvalue *val) {
    struct group *g = ctx;
    if (plain_key(key) != J_OK) {
        return J_DEFER;
    }
    for (size_t i = 0; i < N_GROUP_ANNOTATIONS; i++) {
        if (key_is(key, GROUP_ANNOTATIONS[i])) {
            g->values[i] = *val;
            g->found[i] = 1;
        }
    }
    return J_OK;
}

/* The grouping key from config.json's bytes: 0 and *key (the id, or a malloc'd annotation
 * value), or J_DEFER. */
static int group_key_of(const char *data, size_t len, const char *id, char **key) {
    *key = (char *)id;
    int named = 0;
    for (size_t i = 0; i < N_GROUP_ANNOTATIONS; i++) {
        if (data && memmem(data, len, GROUP_ANNOTATIONS[i], strlen(GROUP_ANNOTATIONS[i]))) {
            named = 1;
        }
    }
    if (!named) {
        return J_OK; /* as Python's shortcut: no JSON parsed at all */
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)data[i] >= 0x80 || data[i] == '\0') {
            return J_DEFER;
        }
    }
    struct json j = {data, data + len, 0};
    struct jvalue top = {0};
    struct top t = {0};
    jws(&j);
    if (j.p >= j.end || *j.p != '{') {
        return J_DEFER; /* Python: no .get on a list or a string (then the id); not mine */
    }
    top.at = j.p;
    if (jcontainer(&j, &top, top_member, &t) != J_OK) {
        return J_DEFER;
    }
    jws(&j);
    if (j.p != j.end) {
        return J_DEFER;
    }
    if (!t.found || t.annotations.kind != '{') {
        /* absent, or falsy (`or {}`), or a value without .get: Python returns the id */
        return J_OK;
    }
    struct json a = {t.annotations.at, data + len, 0};
    struct jvalue ann = {0};
    struct group g = {0};
    if (jcontainer(&a, &ann, group_member, &g) != J_OK) {
        return J_DEFER;
    }
    for (size_t i = 0; i < N_GROUP_ANNOTATIONS; i++) {
        const struct jvalue *v = &g.values[i];
        if (!g.found[i] || v->kind == 'n' || v->kind == 'f') {
            continue; /* absent or falsy: the next annotation */
        }
        if (v->kind == '"' && v->plain) {
            if (v->len == 0) {
                continue;
            }
            *key = strndup(v->str, v->len);
            return *key == NULL ? J_DEFER : J_OK;
        }
        if ((v->kind == '0' && v->zero) || ((v->kind == '{' || v->kind == '[') && v->len == 0)) {
            continue;
        }
        return J_DEFER; /* str() of a number, list, object or true; or a string's escapes */
    }
    return J_OK;
}

#ifndef PYWASM_FRONTEND_SELFTEST

/* --- deferring to Python ---------------------------------------------------------- */

static char **g_argv;

/* Run the Python shim with our arguments; it redoes the whole subcommand. */
__attribute__((noreturn)) static void defer(void) {
    execv(PYWASM_FALLBACK, g_argv);
    char msg[PATH_MAX + 128];
    int n = snprintf(msg, sizeof msg, "containerd-shim-pywasm-v1: cannot run the Python shim %s: %s",
                     PYWASM_FALLBACK, strerror(errno));
    if (n > 0) {
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    }
    _exit(1);
}

/* --- the command line (pywasmd/shim/cli.py, the forms containerd uses) ------------ */

struct args {
    const char *action, *namespace, *address, *publish_binary, *id, *bundle;
    int debug;
};

static void parse(int argc, char **argv, struct args *a) {
    *a = (struct args){"", "default", "", "", "", "", 0};
    int have_action = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!is_ascii(arg)) {
            defer();
        }
        if (arg[0] != '-' || strcmp(arg, "-") == 0 || strcmp(arg, "--") == 0) {
            if (!have_action) {
                a->action = arg;
                have_action = 1;
            }
            continue;
        }
        const char *name = arg + strspn(arg, "-");
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
#define IS(s) (len == sizeof(s) - 1 && strncmp(name, s, len) == 0)
        if (IS("debug")) {
            a->debug = 1;
            continue;
        }
        const char **slot = NULL;
        const char *ignored;
        if (IS("namespace")) {
            slot = &a->namespace;
        } else if (IS("address")) {
            slot = &a->address;
        } else if (IS("publish-binary")) {
            slot = &a->publish_binary;
        } else if (IS("id")) {
            slot = &a->id;
        } else if (IS("bundle")) {
            slot = &a->bundle;
        } else if (IS("socket") || IS("debug-socket")) {
            slot = &ignored;
        } else {
            defer(); /* -v, -version, -info, and flags this program does not know */
        }
#undef IS
        if (eq) {
            *slot = eq + 1;
        } else if (i + 1 < argc) {
            *slot = argv[++i];
        } else {
            defer();
        }
    }
}

/* --- start ---------------------------------------------------------------------- */

static const char *bundle_dir(const struct args *a, char *cwd, size_t cap) {
    if (a->bundle[0]) {
        return a->bundle;
    }
    if (getcwd(cwd, cap) == NULL || !is_ascii(cwd)) {
        defer();
    }
    return cwd;
}

/* bootstrap.grouping_key: the container's id, or the value of a grouping annotation. */
static const char *grouping_key(const char *bundle, const char *id) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/config.json", bundle) >= (int)sizeof path) {
        defer();
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return id;
    }
    struct buf raw = {0};
    char chunk[65536];
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            close(fd);
            free(raw.data);
            return id; /* Python: OSError -> the container id */
        }
        if (got == 0) {
            break;
        }
        buf_add(&raw, chunk, (size_t)got);
    }
    close(fd);
    char *key = NULL;
    if (raw.failed || group_key_of(raw.data, raw.len, id, &key) != J_OK) {
        defer();
    }
    free(raw.data);
    return key;
}

/* Undo what start did to the socket path, then let Python do it all. */
static void unbind_and_defer(int fd, const char *path) {
    close(fd);
    unlink(path);
    defer();
}

/* unixsock.listen: a listening socket at `path`, or -1 when a live process answers there. */
static int listen_at(const char *path) {
    if (mkdir(SOCKET_ROOT, 0711) != 0 && (errno != EEXIST || !is_dir(SOCKET_ROOT))) {
        defer();
    }
    struct sockaddr_un sa;
    socklen_t salen = unix_addr(&sa, path);
    if (salen == 0) {
        defer();
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            defer();
        }
        if (bind(fd, (struct sockaddr *)&sa, salen) == 0) {
            if (chmod(path, 0600) != 0 || listen(fd, 128) != 0) {
                unbind_and_defer(fd, path);
            }
            return fd;
        }
        int err = errno;
        close(fd);
        if (err != EADDRINUSE) {
            defer();
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            defer();
        }
        int live = connect(probe, (struct sockaddr *)&sa, salen) == 0;
        close(probe);
        if (live) {
            return -1;
        }
        if (unlink(path) != 0) {
            defer();
        }
    }
    defer();
    return -1;
}

static void add_field(struct buf *b, const char *name, const char *value) {
    buf_add(b, "\0", 1);
    buf_str(b, name);
    buf_add(b, "=", 1);
    buf_str(b, value);
}

/* zygote.encode_request for a `serve` of this container (the ShimArgs fields in their order,
 * socket_path, then the environment as os.environ holds it). */
static int encode_request(struct buf *b, const struct args *a, const char *bundle,
                          const char *listen_path) {
    buf_add(b, "\0\0\0\0", 4);
    buf_str(b, ZYGOTE_PROTOCOL);
    buf_add(b, "\0" "9", 2);
    add_field(b, "action", "serve");
    add_field(b, "namespace", a->namespace);
    add_field(b, "address", a->address);
    add_field(b, "publish_binary", a->publish_binary);
    add_field(b, "id", a->id);
    add_field(b, "bundle", bundle);
    add_field(b, "debug", a->debug ? "1" : "");
    add_field(b, "version", "");
    add_field(b, "socket_path", listen_path);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL) {
            continue; /* os.environ skips these too */
        }
        if (!is_ascii(*e)) {
            return -1;
        }
        /* os.environ keeps the first of duplicate names: leave such an environment to it */
        size_t klen = (size_t)(eq - *e) + 1;
        for (char **prev = environ; prev != e; prev++) {
            if (strncmp(*prev, *e, klen) == 0) {
                return -1;
            }
        }
        buf_add(b, "\0", 1);
        buf_str(b, *e);
    }
    if (b->failed) {
        return -1;
    }
    uint32_t size = (uint32_t)(b->len - 4);
    b->data[0] = (char)(size >> 24);
    b->data[1] = (char)(size >> 16);
    b->data[2] = (char)(size >> 8);
    b->data[3] = (char)size;
    return 0;
}

/* zygote.request_server: 1 when a zygote-forked server took the listener. */
static int request_server(int listener, const struct args *a, const char *bundle,
                          const char *listen_path) {
    const char *zpath = getenv("PYWASM_ZYGOTE_SOCKET");
    if (zpath == NULL || zpath[0] == '\0') {
        zpath = PYWASM_ZYGOTE_DEFAULT;
    }
    struct sockaddr_un sa;
    socklen_t salen = unix_addr(&sa, zpath);
    if (zpath[0] == '\0' || salen == 0) {
        return 0;
    }
    struct buf req = {0};
    if (encode_request(&req, a, bundle, listen_path) != 0) {
        free(req.data);
        return 0;
    }
    int conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (conn < 0) {
        free(req.data);
        return 0;
    }
    struct timeval five = {.tv_sec = 5};
    setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &five, sizeof five);
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &five, sizeof five);
    int ok = 0;
    if (connect(conn, (struct sockaddr *)&sa, salen) == 0) {
        struct iovec iov = {.iov_base = req.data, .iov_len = req.len};
        union {
            char raw[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.raw,
                             .msg_controllen = sizeof control.raw};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &listener, sizeof(int));
        ssize_t sent;
        do {
            sent = sendmsg(conn, &msg, MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent == (ssize_t)req.len) {
            char reply[256];
            size_t got = 0;
            for (;;) {
                ssize_t n = recv(conn, reply + got, sizeof reply - 1 - got, 0);
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                if (n <= 0 || (got += (size_t)n) == sizeof reply - 1) {
                    ok = n == 0;
                    break;
                }
            }
            reply[got] = '\0';
            ok = ok && strncmp(reply, "ok ", 3) == 0;
        }
    }
    close(conn);
    free(req.data);
    return ok;
}

static void write_address(const char *bundle, const char *address) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/address", bundle) >= (int)sizeof path) {
        defer();
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        defer();
    }
    if (write_all(fd, address, strlen(address)) != 0) {
        close(fd);
        defer();
    }
    close(fd);
}

static int start(const struct args *a) {
    const char *zygote = getenv("PYWASM_ZYGOTE");
    if (zygote != NULL && strcmp(zygote, "off") == 0) {
        defer(); /* Python forks the server itself */
    }
    char cwd[PATH_MAX];
    const char *bundle = bundle_dir(a, cwd, sizeof cwd);
    char address[128];
    if (socket_address(a->address, a->namespace, grouping_key(bundle, a->id), address,
                       sizeof address) != 0) {
        defer();
    }
    const char *path = address + strlen("unix://");
    int listener = listen_at(path);
    if (listener >= 0) {
        if (!request_server(listener, a, bundle, path)) {
            unbind_and_defer(listener, path);
        }
        close(listener);
    }
    write_address(bundle, address);
    if (write_all(1, address, strlen(address)) != 0) {
        return 1;
    }
    return 0;
}

/* --- delete ------------------------------------------------------------------------- */

/* bootstrap._is_worker */
static int is_worker(long pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    struct buf cmd = {0};
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0 || (got < 0 && errno == EINTR)) {
        if (got > 0) {
            buf_add(&cmd, chunk, (size_t)got);
        }
    }
    close(fd);
    if (cmd.failed) {
        defer();
    }
    static const char needle[] = "pywasmd.shim.worker";
    int found = cmd.data && memmem(cmd.data, cmd.len, needle, sizeof needle - 1) != NULL;
    free(cmd.data);
    return found;
}

/* mounts.is_mountpoint: is the real path of `path` a mount point in /proc/self/mountinfo? */
static int is_mountpoint(const char *path) {
    char real[PATH_MAX];
    if (realpath(path, real) == NULL) {
        defer();
    }
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL) {
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, f) >= 0) {
        if (!is_ascii(line)) {
            defer(); /* Python reads mountinfo as UTF-8: its rules, its errors */
        }
        char *save = NULL;
        char *field = strtok_r(line, " \t\n\r\v\f", &save);
        for (int i = 0; field && i < 4; i++) {
            field = strtok_r(NULL, " \t\n\r\v\f", &save);
        }
        found = field != NULL && strcmp(field, real) == 0;
    }
    free(line);
    fclose(f);
    return found;
}

/* paths.read_socket_path's check: os.path.dirname(path) == SOCKET_ROOT */
static int in_socket_root(const char *path) {
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return 0;
    }
    size_t head = (size_t)(slash - path) + 1;
    int all_slashes = strspn(path, "/") >= head;
    if (!all_slashes) {
        while (head > 0 && path[head - 1] == '/') {
            head--;
        }
    }
    return head == strlen(SOCKET_ROOT) && strncmp(path, SOCKET_ROOT, head) == 0;
}

/* paths.read_runc_root's check: under RUNC_STATE_ROOT, no ".." component */
static int has_dotdot(const char *path) {
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2) {
        if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/')) {
            return 1;
        }
    }
    return 0;
}

static int delete(const struct args *a) {
    char cwd[PATH_MAX];
    const char *bundle = bundle_dir(a, cwd, sizeof cwd);
    char text[PATH_MAX];
    char path[PATH_MAX];

    /* Everything Python would do beyond removing a cgroup and a stale socket: its job. */
    if (read_stripped(bundle, "init.pid", text, sizeof text) != READ_OK) {
        defer();
    }
    long pid = 0;
    if (text[0]) {
        if (strspn(text, "0123456789") != strlen(text)) {
            pid = 0;
        } else if (strlen(text) > 9) {
            defer();
        } else {
            pid = strtol(text, NULL, 10);
        }
    }
    if (pid > 0 && is_worker(pid)) {
        defer();
    }
    if (read_stripped(bundle, "pywasm-runc", text, sizeof text) != READ_OK) {
        defer();
    }
    if (strncmp(text, RUNC_STATE_ROOT "/", strlen(RUNC_STATE_ROOT) + 1) == 0 && !has_dotdot(text)) {
        defer();
    }
    if (snprintf(path, sizeof path, "%s/pywasm-mounts", bundle) >= (int)sizeof path ||
        is_dir(path)) {
        defer();
    }
    if (snprintf(path, sizeof path, "%s/rootfs", bundle) >= (int)sizeof path ||
        (is_dir(path) && is_mountpoint(path))) {
        defer();
    }

    /* bootstrap._remove_cgroup */
    if (read_stripped(bundle, "pywasm-cgroup", text, sizeof text) != READ_OK) {
        defer();
    }
    const char *rel = text + strspn(text, "/");
    if (rel[0] && !has_dotdot(rel)) {
        static const char *const dirs[] = {"",     "memory/",  "cpu/",    "cpuacct/",
                                           "pids/", "freezer/", "devices/"};
        for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
            if (snprintf(path, sizeof path, CGROUP_ROOT "/%s%s", dirs[i], rel) <
                (int)sizeof path) {
                rmdir(path);
            }
        }
    }

    /* bootstrap._remove_stale_socket */
    if (read_stripped(bundle, "address", text, sizeof text) != READ_OK) {
        defer();
    }
    const char *sock = strncmp(text, "unix://", 7) == 0 ? text + 7 : text;
    struct sockaddr_un sa;
    socklen_t salen = unix_addr(&sa, sock);
    if (in_socket_root(sock) && salen != 0) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            if (connect(probe, (struct sockaddr *)&sa, salen) != 0 && errno == ECONNREFUSED) {
                unlink(sock);
            }
            close(probe);
        }
    }

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned char out[64];
    size_t n = encode_delete_response(
        out, (uint64_t)pid, 128 + 9,
        (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec);
    return write_all(1, (const char *)out, n) == 0 ? 0 : 1;
}

/* The Python files this program copies the behaviour of, as they were when it was built. */
struct watched {
    const char *path;
    long long sec;
    long nsec;
    long long size;
};
#ifdef PYWASM_WATCHED
static const struct watched WATCHED[] = {PYWASM_WATCHED};
#define N_WATCHED (sizeof WATCHED / sizeof *WATCHED)
#else
static const struct watched *const WATCHED = NULL;
#define N_WATCHED 0
#endif

/* A checkout changed them without a rebuild: this copy may no longer be theirs. */
static int watched_changed(void) {
    for (size_t i = 0; i < N_WATCHED; i++) {
        struct stat st;
        if (stat(WATCHED[i].path, &st) != 0 || st.st_size != WATCHED[i].size ||
            st.st_mtim.tv_sec != WATCHED[i].sec || st.st_mtim.tv_nsec != WATCHED[i].nsec) {
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    g_argv = argv;
    if (watched_changed()) {
        defer();
    }
    struct args a;
    parse(argc, argv, &a);
    if (strcmp(a.action, "start") == 0) {
        _exit(start(&a));
    }
    if (strcmp(a.action, "delete") == 0) {
        _exit(delete(&a));
    }
    defer(); /* usage errors and messages are Python's */
    return 1;
}

#else /* PYWASM_FRONTEND_SELFTEST */

/* Reads lines from stdin and answers one line each, for tests/shim/test_frontend.py:
 *   addr <address>\t<namespace>\t<key>   ->  the socket address
 *   del <pid> <status> <ns>             ->  the DeleteResponse in hex
 *   key <config.json in hex>\t<id>      ->  the grouping key in hex, or DEFER
 */
static int unhex(const char *hex, size_t n, char *out) {
    for (size_t i = 0; i < n / 2; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) {
            return -1;
        }
        out[i] = (char)byte;
    }
    return 0;
}

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') {
            line[--len] = '\0';
        }
        if (strncmp(line, "addr ", 5) == 0) {
            char *ns = strchr(line + 5, '\t');
            char *key = ns ? strchr(ns + 1, '\t') : NULL;
            if (key == NULL) {
                return 2;
            }
            *ns++ = '\0';
            *key++ = '\0';
            char out[128];
            if (socket_address(line + 5, ns, key, out, sizeof out) != 0) {
                return 3;
            }
            printf("%s\n", out);
        } else if (strncmp(line, "key ", 4) == 0) {
            char *tab = strchr(line + 4, '\t');
            if (tab == NULL) {
                return 2;
            }
            *tab = '\0';
            size_t n = strlen(line + 4);
            char *config = malloc(n / 2 + 1);
            if (config == NULL || unhex(line + 4, n, config) != 0) {
                return 2;
            }
            char *key;
            if (group_key_of(config, n / 2, tab + 1, &key) != J_OK) {
                printf("DEFER\n");
            } else {
                for (const char *k = key; *k; k++) {
                    printf("%02x", (unsigned char)*k);
                }
                printf("\n");
            }
            free(config);
        } else if (strncmp(line, "del ", 4) == 0) {
            unsigned long long pid, status, ns;
            if (sscanf(line + 4, "%llu %llu %llu", &pid, &status, &ns) != 3) {
                return 2;
            }
            unsigned char out[64];
            size_t n = encode_delete_response(out, pid, status, ns);
            for (size_t i = 0; i < n; i++) {
                printf("%02x", out[i]);
            }
            printf("\n");
        } else {
            return 2;
        }
    }
    free(line);
    return 0;
}

#endif
