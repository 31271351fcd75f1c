/* main.c — the ltlc driver. Each command is the pipeline as a flat list of pass calls;
 * `ltlc emit STAGE` stops after STAGE and prints it. Exit status: 0 ok, 1 user error, 2 usage. */
#include "sema.h"
#include "driver.h"
#include "ir.h"
#include "llvm.h"
#include "cuda.h"
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: ltlc COMMAND [OPTIONS] FILE...\n"
    "\n"
    "LTL compiles .ltl files (model, data, trainer) and trains them.\n"
    "\n"
    "commands:\n"
    "  check FILE...       parse and check; errors as file:line:col with a caret\n"
    "  emit STAGE FILE     print an intermediate form: ast, ir, grad, fused, llvm, cuda (see emit --help)\n"
    "  run FILE [STAGE]    train and evaluate: fit, validate, test, predict (see run --help)\n"
    "  repl [FILE...]      an interactive session: tensors, expressions, :load, :type, :ir\n"
    "  build FILE -o PROG  a standalone executable: PROG fit|validate|test|predict (see build --help)\n"
    "\n"
    "options:\n"
    "  -h, --help          this help; `ltlc COMMAND --help` for one command\n"
    "  --version           the version\n"
    "\n"
    "exit status: 0 ok, 1 an error in the input, 2 a usage error.\n"
    "The language: docs/language.md.\n";

static const char check_help[] =
    "usage: ltlc check FILE...\n"
    "\n"
    "Parses and checks each FILE: the syntax, the trainer's flags, callbacks and loggers, and\n"
    "every step of the model traced with symbolic dimensions (names, types, shapes, the\n"
    "gradient and optimizer graph), and the data module (its sources' arguments, transforms\n"
    "and loader; no data file is opened). Errors are printed as file:line:col: error: message, with\n"
    "the source line and a caret; up to 20 per file. Exit 0 when every file is clean, 1 otherwise.\n";

static const char emit_help[] =
    "usage: ltlc emit STAGE FILE\n"
    "\n"
    "Prints an intermediate form of FILE. Stages:\n"
    "  ast     the canonical source form of the syntax tree; it re-parses to the same tree\n"
    "  ir      the training step's forward graph (tensor IR, SSA), symbolic dimensions\n"
    "  grad    the whole training step: forward, loss, backward and optimizer update\n"
    "  fused   the CPU backend's kernels: the nodes each fuses, arena offsets (--batch)\n"
    "  cuda    the CUDA C of the same kernels, as NVRTC compiles it (--batch)\n"
    "  llvm    the step's LLVM module as generated for the host CPU (--batch)\n"
    "options:\n"
    "  --step NAME     the method to lower (training_step, validation_step, forward, ...)\n"
    "  --batch N       the batch size of fused, cuda and llvm (default 64)\n"
    "  --precision P   the trainer's precision the graph is built for: 32-true (default),\n"
    "                  bf16-mixed, 16-mixed, bf16-true or 64-true (docs/precision.md)\n"
    "  --no-simplify   print the graph as traced, before folding, CSE and dead-code removal\n";

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "ltlc: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'ltlc --help'.\n");
    return 2;
}

static bool wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return true;
    return false;
}

/* The front end of every command: read, lex, parse, check. NULL after an error (reported). */
static Node *front(Ast *ast, const char *path, char **text) {
    Node *root = parse_file(ast, path, text);
    if (diag_error_count()) return NULL;
    sema_check_config(root);
    return diag_error_count() ? NULL : root;
}

/* ltlc check: the front end, every step traced with symbolic dimensions, then the data
 * module as `ltlc run` reads it (its sources, transforms and loader; no file is opened). */
static bool check_file(Ast *ast, const char *path, char **text) {
    Node *root = front(ast, path, text);
    if (root) sema_check_steps(root, path);
    if (root && diag_error_count() == 0) {
        DataPlan dp;
        sema_data_plan(root, path, &(SemaOptions){0}, &dp);
        sema_data_free(&dp);
    }
    return root && diag_error_count() == 0;
}

static int cmd_check(int argc, char **argv) {
    if (wants_help(argc, argv)) { fputs(check_help, stdout); return 0; }
    if (argc == 0) return usage_error("%s", "check needs at least one FILE");
    int status = 0;
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') return usage_error("unknown option '%s' for check", argv[i]);
        Ast ast = {0};
        char *text = NULL;
        diag_reset();
        if (!check_file(&ast, argv[i], &text)) status = 1;
        ast_free(&ast);
        free(text);
    }
    return status;
}

static int cmd_emit(int argc, char **argv) {
    if (wants_help(argc, argv)) { fputs(emit_help, stdout); return 0; }
    const char *step = "training_step", *stage = NULL, *file = NULL, *precision = "32-true";
    bool no_simplify = false;
    int64_t batch = 64;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--step") && i + 1 < argc) step = argv[++i];
        else if (!strncmp(argv[i], "--step=", 7)) step = argv[i] + 7;
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = argv[++i];
        else if (!strncmp(argv[i], "--precision=", 12)) precision = argv[i] + 12;
        else if (!strcmp(argv[i], "--no-simplify")) no_simplify = true;
        else if (argv[i][0] == '-') return usage_error("unknown option '%s' for emit", argv[i]);
        else if (!stage) stage = argv[i];
        else if (!file) file = argv[i];
        else return usage_error("%s", "emit takes one STAGE and one FILE");
    }
    if (!stage || !file) return usage_error("%s", "emit needs a STAGE and a FILE");
    bool ast_only = !strcmp(stage, "ast"), backend = !strcmp(stage, "fused") || !strcmp(stage, "llvm") ||
                                         !strcmp(stage, "cuda");
    if (!ast_only && !backend && strcmp(stage, "ir") && strcmp(stage, "grad"))
        return usage_error("unknown stage '%s' (try: ast, ir, grad, fused, llvm, cuda)", stage);
    if (batch < 1) return usage_error("%s", "--batch needs a positive size");
    static const char *const modes[] = {"32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"};
    int mode = 0;
    while (mode < 5 && strcmp(precision, modes[mode])) mode++;
    if (mode == 5) return usage_error("unknown precision '%s' (32-true, bf16-mixed, 16-mixed, bf16-true, 64-true)", precision);
    Ast ast = {0};
    char *text = NULL;
    Node *root = front(&ast, file, &text);
    int status = root ? 0 : 1;
    if (root && ast_only) ast_print(stdout, root);
    else if (root) {
        SemaOptions opt = {.check = !backend, .batch = batch, .precision = precision,
                           .backward = !strcmp(stage, "grad") || (backend && !strcmp(step, "training_step"))};
        StepGraph *s = sema_lower(root, file, step, &opt, true);
        if (s && !no_simplify) sema_simplify(s);
        char err[512];
        if (s && !strcmp(stage, "cuda")) {
            if (!cuda_emit_step(stdout, s->g, err, sizeof err))
                status = 1, fprintf(stderr, "ltlc: %s\n", err);
        } else if (s && backend) {
            if (!llvm_step_emit(stdout, s->g, !strcmp(stage, "llvm"), false, err, sizeof err))
                status = 1, fprintf(stderr, "ltlc: %s\n", err);
        } else if (s) {
            char *buf = NULL;
            size_t len = 0;
            FILE *mem = open_memstream(&buf, &len);
            ir_print(mem, s->g);
            fclose(mem);
            char *out = sema_render(s, buf);
            fputs(out, stdout);
            free(out);
            free(buf);
        } else status = 1;
        sema_step_free(s);
    }
    ast_free(&ast);
    free(text);
    return status;
}

int main(int argc, char **argv) {
    if (argc < 2) { fputs(usage_text, stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) { printf("ltlc %s\n", LTL_VERSION); return 0; }
    if (!strcmp(cmd, "check")) return cmd_check(argc - 2, argv + 2);
    if (!strcmp(cmd, "emit")) return cmd_emit(argc - 2, argv + 2);
    cuda_step_api = &cuda_step_impl; /* the trainer may drive the GPU (not in `ltlc build` programs) */
    if (!strcmp(cmd, "run")) return run_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "repl")) return repl_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "build")) return build_command(argc - 2, argv + 2);
    return usage_error("unknown command '%s'", cmd);
}
