/* test_repl.c — `ltlc repl`: scripted sessions (stdin from a file, stdout and stderr
 * compared) and one interactive session driven through tmux (history with the up arrow). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static void mkdir_tmp(void) {
    snprintf(dir, sizeof dir, "/tmp/ltl_repl_XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void write_text(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

static char *read_all(FILE *p) {
    size_t n = 0, cap = 4096;
    char *buf = malloc(cap);
    for (size_t k; (k = fread(buf + n, 1, cap - n - 1, p)) > 0;) {
        n += k;
        if (cap - n < 2) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    return buf;
}

/* Runs `ltlc repl` in the temporary directory with script as stdin; stdout and stderr. */
static char *session(const char *script) {
    if (!dir[0]) mkdir_tmp();
    write_text("script.txt", script);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && HOME=%s %s repl < script.txt 2>&1", dir, dir, LTLC);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char *out = read_all(p);
    cr_assert_eq(pclose(p), 0, "ltlc repl failed:\n%s", out);
    return out;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

static void expect(const char *script, const char *want) {
    char *got = session(script);
    cr_expect_str_eq(got, want, "script:\n%s\ngot:\n%s\nwant:\n%s", script, got, want);
    free(got);
}

Test(repl, bindings_and_float_printing) {
    expect("x = reshape(arange(12), 3, 4) / 4\n"
           "x\n"
           "x.sum(dim = 1)\n"
           "mean(x)\n",
           "tensor([[0.0000, 0.2500, 0.5000, 0.7500],\n"
           "        [1.0000, 1.2500, 1.5000, 1.7500],\n"
           "        [2.0000, 2.2500, 2.5000, 2.7500]], shape=[3, 4], dtype=f32)\n"
           "tensor([1.5000, 5.5000, 9.5000], shape=[3], dtype=f32)\n"
           "tensor(1.3750, dtype=f32)\n");
}

Test(repl, matmul_and_relu_sum) {
    expect("x = reshape(arange(12), 3, 4) / 4 - 1\n"
           "x @ x.T\n"
           "relu(x).sum()\n",
           "tensor([[ 1.8750, -0.6250, -3.1250],\n"
           "        [-0.6250,  0.8750,  2.3750],\n"
           "        [-3.1250,  2.3750,  7.8750]], shape=[3, 3], dtype=f32)\n"
           "tensor(7., dtype=f32)\n");
}

Test(repl, integer_bool_and_scalars) {
    expect("reshape(arange(6), 2, 3)\n"
           "arange(4) >= 2\n"
           "1 + 2\n"
           "2.5 * 2\n"
           "ones(3) * 1e-5\n"
           "-ones(2, 2, 2)\n",
           "tensor([[0, 1, 2],\n"
           "        [3, 4, 5]], shape=[2, 3], dtype=i64)\n"
           "tensor([False, False,  True,  True], shape=[4], dtype=bool)\n"
           "3\n"
           "5.0\n"
           "tensor([1.0000e-05, 1.0000e-05, 1.0000e-05], shape=[3], dtype=f32)\n"
           "tensor([[[-1., -1.],\n"
           "         [-1., -1.]],\n"
           "\n"
           "        [[-1., -1.],\n"
           "         [-1., -1.]]], shape=[2, 2, 2], dtype=f32)\n");
}

Test(repl, large_tensors_are_abbreviated) {
    expect("zeros(40, 50)\n"
           "ones(2000)\n",
           "tensor([[0., 0., 0.,  ..., 0., 0., 0.],\n"
           "        [0., 0., 0.,  ..., 0., 0., 0.],\n"
           "        [0., 0., 0.,  ..., 0., 0., 0.],\n"
           "        ...,\n"
           "        [0., 0., 0.,  ..., 0., 0., 0.],\n"
           "        [0., 0., 0.,  ..., 0., 0., 0.],\n"
           "        [0., 0., 0.,  ..., 0., 0., 0.]], shape=[40, 50], dtype=f32)\n"
           "tensor([1., 1., 1.,  ..., 1., 1., 1.], shape=[2000], dtype=f32)\n");
}

Test(repl, randn_differs_per_evaluation_unless_seeded) {
    char *out = session("a = randn(2, 3)\nb = randn(2, 3)\n(a == b).sum()\n"
                        "(randn(4, seed = 7) == randn(4, seed = 7)).sum()\n");
    cr_expect_str_eq(out, "tensor(0, dtype=i64)\ntensor(4, dtype=i64)\n");
    free(out);
}

Test(repl, errors_are_reported_and_the_session_goes_on) {
    expect("x = ones(3, 4)\n"
           "x @ x\n"
           "nope + 1\n"
           "x.sum()\n",
           "<repl>:2:1: error: matmul: inner dimensions differ: f32[3, 4] @ f32[3, 4] (4 vs 3)\n"
           "    2 | x @ x\n"
           "      | ^~~~~\n"
           "<repl>:3:1: error: 'nope' is not defined\n"
           "    3 | nope + 1\n"
           "      | ^~~~\n"
           "tensor(12., dtype=f32)\n");
}

Test(repl, error_on_the_first_line_keeps_its_line_number) {
    expect("nope\n:frob\n",
           "<repl>:1:1: error: 'nope' is not defined\n"
           "    1 | nope\n"
           "      | ^~~~\n"
           "<repl>:2: error: unknown command ':frob' (try :help)\n");
}

Test(repl, type_and_ir) {
    expect("x = ones(3, 4)\n"
           ":type x @ x.T\n"
           ":type (x > 0).sum(dim = 0)\n"
           ":ir relu(x).sum()\n",
           "f32[3, 3]\n"
           "i64[4]\n"
           "%0 = buffer \"x\" : f32[3, 4]\n"
           "%1 = relu %0 : f32[3, 4]\n"
           "%2 = sum %1 {axes=[0, 1]} : f32[]\n"
           "output \"output\" = %2\n");
}

Test(repl, load_a_model_file_and_call_forward) {
    if (!dir[0]) mkdir_tmp();
    write_text("small.ltl",
               "use nn\n"
               "fn double(a) = a * 2\n"
               "model Small(hidden = 8) {\n"
               "    l1 = nn.Linear(4, hidden)\n"
               "    l2 = nn.Linear(hidden, 3)\n"
               "    forward(x: f32[B, 4]) -> f32[B, 3] = softmax(l2(relu(l1(x))), dim = 1)\n"
               "    training_step(x, y: i64[B]) = cross_entropy(forward(x), y)\n"
               "    optimizer = adam(lr = 1e-3)\n"
               "}\n");
    expect(":load small.ltl\n"
           "m = Small()\n"
           ":type m(ones(5, 4))\n"
           "m(ones(2, 4)).sum(dim = 1)\n"
           "p = m(ones(2, 4))\n"
           "(p == m(ones(2, 4))).sum()\n"
           "double(arange(3))\n"
           ":load missing.ltl\n"
           "Small(hidden = 2)(ones(1, 4)).sum()\n",
           "loaded fn double, model Small\n"
           "f32[5, 3]\n"
           "tensor([1., 1.], shape=[2], dtype=f32)\n"
           "tensor(6, dtype=i64)\n"
           "tensor([0, 2, 4], shape=[3], dtype=i64)\n"
           "ltlc: error: cannot open missing.ltl: No such file or directory\n"
           "tensor(1., dtype=f32)\n");
}

Test(repl, multi_line_model_definition) {
    expect("model Affine(n = 2) {\n"
           "    param w: f32[n, n] = ones()\n"
           "    param b: f32[n] = constant(value = 0.5)\n"
           "    forward(x: f32[B, n]) -> f32[B, n] = x @ w + b\n"
           "}\n"
           "f = Affine()\n"
           "f(ones(1, 2))\n"
           "sum(\n"
           "    arange(4)\n"
           ")\n"
           "Affine(n = 3)(ones(1, 2))\n",
           "tensor([[2.5000, 2.5000]], shape=[1, 2], dtype=f32)\n"
           "tensor(6, dtype=i64)\n"
           "<repl>:11:15: error: Affine(n = 3) expects f32[1, 3] but ones(1, 2) is f32[1, 2]: dimension 1 is 2, not n = 3\n"
           "   11 | Affine(n = 3)(ones(1, 2))\n"
           "      |               ^~~~~~~~~~\n"
           "<repl>:4:16: note: 'x' of forward is declared here\n"
           "    4 |     forward(x: f32[B, n]) -> f32[B, n] = x @ w + b\n"
           "      |                ^~~~~~~~~\n"
           "<repl>:11:1: note: it is created here\n"
           "   11 | Affine(n = 3)(ones(1, 2))\n"
           "      | ^~~~~~~~~~~~~\n");
}

Test(repl, quit_ends_the_session) {
    expect("1 + 1\n:quit\n1 + 2\n", "2\n");
    char *out = session(":help\n:q\n:help\n");
    cr_expect_eq(count(out, ":load FILE"), 1, "%s", out);
    free(out);
}

Test(repl, time_reports_ms_per_evaluation) {
    char *out = session("x = ones(3, 4)\n:time 50 relu(x).sum()\n:jit off\n:time 50 relu(x).sum()\n");
    cr_expect(strstr(out, "ms per evaluation (50 runs, LLVM JIT, compiled in "), "JIT by default: %s", out);
    cr_expect(strstr(out, "ms per evaluation (50 runs, interpreter)"), "%s", out);
    cr_expect(strstr(out, "round trip"), "%s", out);
    free(out);
}

/* ---- an interactive session in tmux ---- */

static char *tmux(const char *sock, const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "tmux -L %s %s 2>/dev/null", sock, args);
    FILE *p = popen(cmd, "r");
    char *out = p ? read_all(p) : strdup("");
    if (p) pclose(p);
    return out;
}


/* Waits (up to 3 s) until the pane shows needle n times; the pane's text. */
static char *wait_for(const char *sock, const char *needle, int n) {
    char *pane = NULL;
    for (int i = 0; i < 150; i++) {
        free(pane);
        pane = tmux(sock, "capture-pane -p -t repl");
        if (count(pane, needle) >= n) break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return pane;
}

Test(repl, interactive_history_with_tmux) {
    if (system("command -v tmux >/dev/null 2>&1") != 0) cr_skip("tmux is not installed");
    if (!dir[0]) mkdir_tmp();
    char sock[64], args[512];
    snprintf(sock, sizeof sock, "ltl_repl_%d", (int)getpid());
    snprintf(args, sizeof args, "new-session -d -s repl -x 100 -y 30 'cd %s && HOME=%s TERM=xterm %s repl'", dir, dir, LTLC);
    free(tmux(sock, args));
    char *pane = wait_for(sock, ">>>", 1);
    cr_assert(count(pane, ">>>") >= 1, "no prompt:\n%s", pane);
    free(pane);
    free(tmux(sock, "send-keys -t repl 'sum(arange(5)) * 2' Enter"));
    pane = wait_for(sock, "tensor(20, dtype=i64)", 1);
    cr_expect(count(pane, "tensor(20, dtype=i64)") == 1, "first result:\n%s", pane);
    free(pane);
    free(tmux(sock, "send-keys -t repl Up"));
    pane = wait_for(sock, "sum(arange(5)) * 2", 2);
    cr_expect(count(pane, "sum(arange(5)) * 2") == 2, "the up arrow did not recall the line:\n%s", pane);
    free(pane);
    free(tmux(sock, "send-keys -t repl Enter"));
    pane = wait_for(sock, "tensor(20, dtype=i64)", 2);
    cr_expect(count(pane, "tensor(20, dtype=i64)") == 2, "the recalled line did not run:\n%s", pane);
    free(pane);
    free(tmux(sock, "send-keys -t repl ':quit' Enter"));
    for (int i = 0; i < 100; i++) {
        char *ls = tmux(sock, "list-sessions");
        bool gone = !strstr(ls, "repl");
        free(ls);
        if (gone) break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    free(tmux(sock, "kill-server"));
    char path[256];
    snprintf(path, sizeof path, "%s/.ltl_history", dir);
    FILE *h = fopen(path, "r");
    cr_assert(h, "no ~/.ltl_history");
    char *hist = read_all(h);
    fclose(h);
    cr_expect(strstr(hist, "arange(5)"), "history:\n%s", hist);
    free(hist);
}
