/* Allocates 1 MiB blocks (and touches them) until malloc fails, then aborts.
 * The blocks are kept in a list, so the compiler cannot elide the allocations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    char data[(1 << 20) - sizeof(struct block *)];
};

static struct block *volatile head;

int main(void) {
    for (size_t total = 0;; total++) {
        struct block *b = malloc(sizeof *b);
        if (b == NULL) {
            fprintf(stderr, "memhog: malloc failed after %zu MiB\n", total);
            abort();
        }
        memset(b->data, (int)total, sizeof b->data);
        b->next = head;
        head = b;
    }
}
