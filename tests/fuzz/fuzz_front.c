/* fuzz_front.c — libFuzzer target for the front end (`make fuzz`, `make fuzz-short`).
 * Any input must parse without a crash, a leak or undefined behaviour; when it parses cleanly,
 * its canonical print must re-parse to an equal tree and print to the same text again.
 * tests/fuzz/ltl.dict (keywords, dtypes, operators, number and escape forms) speeds it up:
 *   build/fuzz/fuzz_front -dict=tests/fuzz/ltl.dict build/fuzz/corpus
 * A crash leaves crash-HASH here; replay it with `build/fuzz/fuzz_front crash-HASH`, then keep
 * it as a golden (tests/frontend) or a unit test once fixed. */
#include "front.h"
#include <stdlib.h>
#include <string.h>

static FILE *devnull;

/* Prints a clean tree to a malloc'd string. */
static char *print_tree(const Node *root, size_t *len) {
    char *s = NULL;
    FILE *f = open_memstream(&s, len);
    if (!f) abort();
    ast_print(f, root);
    fclose(f);
    return s;
}

static void fail(const char *what, const char *a, const char *b) {
    fprintf(stderr, "fuzz_front: %s\n--- first\n%s\n--- second\n%s\n", what, a, b ? b : "");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;

    diag_reset();
    diag_set_output(devnull);
    Ast ast = {0};
    Node *root = parse_source(&ast, "fuzz.ltl", text, size);
    if (root && diag_error_count() == 0) {
        size_t len1, len2;
        char *p1 = print_tree(root, &len1);
        if (strlen(p1) != len1) fail("the print holds a NUL byte", p1, NULL);
        diag_reset();
        Ast again = {0};
        Node *root2 = parse_source(&again, "print.ltl", p1, len1);
        if (!root2 || diag_error_count() != 0) fail("the print does not parse", text, p1);
        if (!ast_equal(root, root2)) fail("the print parses to another tree", text, p1);
        char *p2 = print_tree(root2, &len2);
        if (len1 != len2 || memcmp(p1, p2, len1) != 0) fail("printing twice differs", p1, p2);
        free(p2);
        ast_free(&again);
        free(p1);
    }
    ast_free(&ast);
    diag_reset();
    free(text);
    return 0;
}
