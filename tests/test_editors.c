/* Editor support (editors/): checked with the real editors.
 *
 * One table of checks -- a place in tests/editors/sample.ltl and the token
 * class expected there -- is run through
 *   - Vim in batch mode: synID() / synIDtrans() and the chain of highlight links;
 *   - Emacs in batch mode: the `face' text property after font-lock-ensure;
 *   - the VS Code TextMate grammar: every regex compiled with Oniguruma (as
 *     vscode-textmate does), then a small TextMate tokenizer (begin/end rules,
 *     captures, includes, first match wins) over the sample.
 * Indentation: tests/editors/indent.ltl is flattened and scrambled into a
 * temp file, re-indented by Vim (gg=G) and Emacs (indent-region), and must
 * come back unchanged.
 *
 * Temp files live under /tmp (mkstemps); nothing is written into the tree.
 * A test skips when vim or emacs is not installed (`make deps` installs
 * vim-nox and emacs-nox).
 */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <oniguruma.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SAMPLE SRCDIR "/tests/editors/sample.ltl"
#define INDENT SRCDIR "/tests/editors/indent.ltl"
#define VIMDIR SRCDIR "/editors/vim"
#define ELISP SRCDIR "/editors/emacs/ltl-mode.el"
#define VSCODE SRCDIR "/editors/vscode"

/* ---------------------------------------------------------------- helpers */

static char *ed_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static bool ed_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* A new empty temp file /tmp/ltl-ed-XXXXXX<suffix>; its name goes to path. */
static void ed_tmpfile(char *path, size_t size, const char *suffix)
{
    snprintf(path, size, "/tmp/ltl-ed-XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    cr_assert(fd >= 0, "mkstemps(%s): %s", path, strerror(errno));
    close(fd);
}

static bool ed_on_path(const char *exe)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof dir, "%.*s/%s", (int)n, path, exe);
        if (n > 0 && access(dir, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* Run argv with stdin from /dev/null and stdout+stderr into log_path; kill it
 * after timeout_s. Returns the exit status, or -1. */
static int ed_run(char *const argv[], const char *log_path, int timeout_s)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        setenv("TERM", "dumb", 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    struct timespec nap = {0, 5 * 1000 * 1000};
    for (long waited_ms = 0;; waited_ms += 5) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0)
            return -1;
        if (waited_ms > timeout_s * 1000L) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

/* Report a failed editor run with its log. */
static void ed_expect_ran(int rc, const char *what, const char *log_path)
{
    if (rc != 0) {
        char *log = ed_read_file(log_path, NULL);
        cr_expect(rc == 0, "%s exited with %d; output:\n%s", what, rc, log ? log : "");
        free(log);
    }
}

/* Does one of the '|'-separated alternatives of `alts` satisfy pred(word)? */
static bool ed_any_alt(const char *alts, bool (*pred)(const char *alt, size_t n, void *ctx), void *ctx)
{
    for (;;) {
        size_t n = strcspn(alts, "|");
        if (pred(alts, n, ctx))
            return true;
        if (!alts[n])
            return false;
        alts += n + 1;
    }
}

/* Is `alt` (length n) one of the words of `text`, words split at the bytes of seps? */
static bool ed_word_in(const char *alt, size_t n, void *ctx)
{
    const char *text = ((const char **)ctx)[0], *seps = ((const char **)ctx)[1];
    while (*text) {
        text += strspn(text, seps);
        size_t m = strcspn(text, seps);
        if (m == n && m > 0 && strncmp(text, alt, n) == 0)
            return true;
        text += m;
    }
    return false;
}

static bool ed_has_word(const char *text, const char *seps, const char *alts)
{
    const char *ctx[2] = {text, seps};
    return ed_any_alt(alts, ed_word_in, ctx);
}

/* ----------------------------------------------------------- the checks */

enum cls {
    KEYWORD, BLOCK, TYPENAME, FUNCNAME, CONSTANT, BUILTIN, TYPE, INT, FLOAT, STRING,
    ESCAPE, PLACEHOLDER, COMMENT, TODO, OPERATOR, DELIM, PLAIN, NCLS
};

/* What each editor must show for a class. '|' separates alternatives. */
static const struct expect {
    const char *name;
    const char *vim_group;   /* the syntax group at the place */
    const char *vim_std;     /* a standard group on its chain of links ("" for none) */
    const char *emacs_face;  /* a face in the `face' property ("nil" for none) */
    const char *tm_scope;    /* a prefix of one of the TextMate scopes there */
    const char *tm_forbid;   /* prefixes none of the scopes may have */
} expect[NCLS] = {
    [KEYWORD] = {"keyword", "ltlKeyword|ltlStatement|ltlConditional|ltlRepeat|ltlLogical", "Statement",
                 "font-lock-keyword-face",
                 "keyword.control|keyword.other|keyword.operator.logical|keyword.declaration", ""},
    [BLOCK] = {"block kind", "ltlBlock", "Structure", "font-lock-keyword-face", "keyword.declaration", ""},
    [TYPENAME] = {"declared model/data name", "ltlModuleName", "Type", "font-lock-type-face",
                  "entity.name.type", ""},
    [FUNCNAME] = {"declared fn name", "ltlFuncName", "Function", "font-lock-function-name-face",
                  "entity.name.function", ""},
    [CONSTANT] = {"constant", "ltlBoolean|ltlNone", "Constant", "font-lock-constant-face",
                  "constant.language", ""},
    [BUILTIN] = {"step/hook/binding", "ltlBuiltin|ltlBinding", "Function", "font-lock-builtin-face",
                 "support.function.builtin|variable.language", ""},
    [TYPE] = {"type", "ltlType|ltlTensorType|ltlShapeDim", "Type", "font-lock-type-face",
              "support.type|punctuation.definition.shape", ""},
    [INT] = {"integer", "ltlNumber", "Number", "ltl-number-face", "constant.numeric.integer", ""},
    [FLOAT] = {"float", "ltlFloat", "Float", "ltl-number-face", "constant.numeric.float", ""},
    [STRING] = {"string", "ltlString", "String", "font-lock-string-face", "string.quoted.double",
                "support.|keyword.|constant.numeric|constant.language"},
    [ESCAPE] = {"escape", "ltlEscape", "SpecialChar", "ltl-escape-face", "constant.character.escape", ""},
    [PLACEHOLDER] = {"placeholder", "ltlPlaceholder", "Special", "ltl-placeholder-face",
                     "constant.other.placeholder", ""},
    [COMMENT] = {"comment", "ltlComment", "Comment", "font-lock-comment-face|font-lock-comment-delimiter-face",
                 "comment.line.number-sign", "support.|keyword.control|keyword.declaration|constant."},
    [TODO] = {"TODO in a comment", "ltlTodo", "Todo", "font-lock-comment-face", "keyword.other.todo", ""},
    [OPERATOR] = {"operator", "ltlOperator", "Operator", "ltl-operator-face", "keyword.operator", ""},
    [DELIM] = {"punctuation", "ltlDelimiter", "Delimiter", "ltl-delimiter-face", "punctuation.", ""},
    [PLAIN] = {"plain name", "", "", "nil", "source.ltl", ""},
};

/* A check: the first occurrence of `needle` in the sample, `off` bytes in. */
static const struct check {
    const char *needle;
    int off;
    enum cls cls;
} fixed_checks[] = {
    /* comments */
    {"# Fixture", 0, COMMENT}, {"# Fixture", 2, COMMENT}, {"for tests/", 0, COMMENT},
    {"TODO keep", 0, TODO}, {"# a trailing", 4, COMMENT},
    /* keywords, contextual ones where a declaration starts */
    {"use nn\n", 0, KEYWORD}, {"use nn.init as", 0, KEYWORD}, {"as init", 0, KEYWORD},
    {"param w", 0, KEYWORD}, {"buffer steps", 0, KEYWORD}, {"fn swish", 0, KEYWORD},
    {"fn cast", 0, KEYWORD}, {"return log_softmax", 0, KEYWORD}, {"return none", 0, KEYWORD},
    {"if not", 0, KEYWORD}, {"not (y", 0, KEYWORD}, {"and x >=", 0, KEYWORD},
    {"or x <=", 0, KEYWORD}, {"} else {", 2, KEYWORD}, {"for i, b", 0, KEYWORD},
    {"b in enumerate", 2, KEYWORD},
    {"model MLP", 0, BLOCK}, {"model GAN", 0, BLOCK}, {"data Pairs", 0, BLOCK},
    {"data Pairs", 3, BLOCK}, {"trainer {", 0, BLOCK},
    {"model MLP", 6, TYPENAME}, {"model GAN", 8, TYPENAME}, {"data Pairs", 5, TYPENAME},
    {"fn swish", 3, FUNCNAME}, {"fn cast", 6, FUNCNAME},
    /* the same words used as names are plain */
    {"data.vocab_size", 0, PLAIN}, {"data.vocab_size", 5, PLAIN}, {"model = 1", 0, PLAIN},
    {"hidden1 = 128", 0, PLAIN}, {"hidden1 = 128", 6, PLAIN}, {"l1 = nn", 1, PLAIN},
    {"precision =", 0, PLAIN}, {"G = MLP()", 0, PLAIN},
    /* constants */
    {"prog_bar = true", 11, CONSTANT}, {"== false }", 3, CONSTANT}, {"shuffle = false", 10, CONSTANT},
    {"!= none", 3, CONSTANT}, {"return none", 7, CONSTANT},
    /* steps and hooks used, not only declared; the special bindings */
    {"forward(x), y", 0, BUILTIN}, {"= forward(x)", 2, BUILTIN},
    {"    optimizer =", 4, BUILTIN}, {"    optimizers =", 4, BUILTIN},
    {"    scheduler =", 4, BUILTIN}, {"    schedulers =", 4, BUILTIN},
    /* types */
    {"f32[B, 784]", 0, TYPE}, {"f32[B, 784]", 2, TYPE}, {"f32[B, 784]", 3, TYPE},
    {"f32[B, 784]", 4, TYPE}, {"f32[B, 784]", 10, TYPE}, {"f32[B, 784]", 7, INT},
    {"-> f32[B, 10]", 3, TYPE}, {"-> f32[B, 10]", 7, TYPE}, {"i64[]", 0, TYPE}, {"i64[B]", 4, TYPE},
    {"f64[...]", 0, TYPE}, {"f64[...]", 4, OPERATOR}, {"bf16[N]", 0, TYPE}, {"bf16[N]", 5, TYPE},
    {"f16[N]", 0, TYPE}, {"i32[N]", 0, TYPE}, {"u8[N]", 0, TYPE}, {"bool[N]", 0, TYPE},
    {"bool[N]", 5, TYPE}, {"x: u8)", 3, TYPE}, {"f32(x)", 0, TYPE},
    /* numbers */
    {"hidden1 = 128", 10, INT}, {"60_000", 0, INT}, {"60_000", 2, INT}, {"60_000", 5, INT},
    {"28 * 28", 0, INT}, {"1e-3", 0, FLOAT}, {"1e-3", 1, FLOAT}, {"1e-3", 2, FLOAT},
    {"1e-3", 3, FLOAT}, {"-0.5", 1, FLOAT}, {"-0.5", 2, FLOAT}, {".25", 0, FLOAT},
    {".25", 2, FLOAT}, {"2. or", 0, FLOAT}, {"2. or", 1, FLOAT}, {"1_000.5e+2", 0, FLOAT},
    {"1_000.5e+2", 5, FLOAT}, {"1_000.5e+2", 8, FLOAT}, {"2e-4", 0, FLOAT}, {"0.999", 4, FLOAT},
    {"255.\n", 3, FLOAT}, {"beta = 1.0", 7, FLOAT},
    /* strings */
    {"\"esc", 0, STRING}, {"\"esc", 2, STRING}, {"\\n\\t", 0, ESCAPE}, {"\\n\\t", 1, ESCAPE},
    {"\\t\\r", 1, ESCAPE}, {"\\r\\\\", 1, ESCAPE}, {"\\\\\\\"", 1, ESCAPE}, {"\\\\\\\"", 3, ESCAPE},
    {"\\0\\u", 1, ESCAPE}, {"\\u{1F600}", 0, ESCAPE}, {"\\u{1F600}", 4, ESCAPE},
    {"\\u{1F600}", 8, ESCAPE}, {"}\", loss", 1, STRING}, {"\"samples/", 1, STRING},
    {"{epoch}", 0, PLACEHOLDER}, {"{epoch}", 3, PLACEHOLDER}, {"{val_loss:.2f}", 0, PLACEHOLDER},
    {"{val_loss:.2f}", 10, PLACEHOLDER}, {".png\"", 1, STRING}, {"\"bf16-mixed\"", 1, STRING},
    {"\"train\"", 1, STRING}, {"\"/tmp/data\"", 5, STRING},
    /* operators */
    {"h @ w", 2, OPERATOR}, {"** 2", 0, OPERATOR}, {"** 2", 1, OPERATOR}, {"% 3", 0, OPERATOR},
    {"!= none", 0, OPERATOR}, {">= 2.", 0, OPERATOR}, {"<= 1_000", 1, OPERATOR},
    {"b / i", 2, OPERATOR}, {"i - 1", 2, OPERATOR}, {"< 3 >", 0, OPERATOR}, {"> 0 ==", 0, OPERATOR},
    {"== false", 1, OPERATOR}, {"-> f32[B, 10]", 0, OPERATOR}, {"-> f32[B, 10]", 1, OPERATOR},
    {"28 * 28", 3, OPERATOR}, {"root + \"/train\"", 5, OPERATOR}, {"hidden1 = 128", 8, OPERATOR},
    {"-0.5", 0, OPERATOR},
    /* punctuation */
    {"nn.Linear", 2, DELIM}, {"w.T", 1, DELIM}, {", hidden2", 0, DELIM}, {"y: i64", 1, DELIM},
    {"); return", 1, DELIM},
};

/* Every step and hook is also checked where it is declared: "    NAME(". */
static const char *const builtin_names[] = {
    "forward", "training_step", "validation_step", "test_step", "predict_step",
    "configure_optimizers", "on_fit_start", "on_fit_end", "on_train_start", "on_train_end",
    "on_train_epoch_start", "on_train_epoch_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_before_optimizer_step", "on_after_backward", "on_before_backward",
    "on_train_batch_start", "on_train_batch_end", "on_validation_batch_end",
    "on_save_checkpoint", "on_load_checkpoint",
};

#define NFIXED (sizeof fixed_checks / sizeof fixed_checks[0])
#define NBUILTIN (sizeof builtin_names / sizeof builtin_names[0])
#define NCHECKS (NFIXED + NBUILTIN)

/* A check placed in the sample: 1-based line and byte column, 0-based offset. */
struct place {
    char what[96];
    enum cls cls;
    int line, col;
    size_t pos;
};

/* Read the sample and place every check in it. */
static char *ed_places(struct place *places)
{
    size_t len;
    char *text = ed_read_file(SAMPLE, &len);
    cr_assert(text, "cannot read %s", SAMPLE);
    for (size_t i = 0; i < NCHECKS; i++) {
        struct place *p = &places[i];
        char needle[96];
        int off;
        if (i < NFIXED) {
            snprintf(needle, sizeof needle, "%s", fixed_checks[i].needle);
            off = fixed_checks[i].off;
            p->cls = fixed_checks[i].cls;
        } else {
            snprintf(needle, sizeof needle, "    %s(", builtin_names[i - NFIXED]);
            off = 4;
            p->cls = BUILTIN;
        }
        const char *hit = strstr(text, needle);
        cr_assert(hit, "fixture %s has no \"%s\"", SAMPLE, needle);
        cr_assert(off < (int)strlen(needle), "offset %d past \"%s\"", off, needle);
        p->pos = (size_t)(hit - text) + (size_t)off;
        p->line = 1;
        size_t bol = 0;
        for (size_t k = 0; k < p->pos; k++)
            if (text[k] == '\n')
                p->line++, bol = k + 1;
        p->col = (int)(p->pos - bol) + 1;
        char shown[64];
        snprintf(shown, sizeof shown, "%.*s", (int)strcspn(needle, "\n"), needle);
        snprintf(p->what, sizeof p->what, "'%c' of \"%s\" (%d:%d)", text[p->pos], shown, p->line,
                 p->col);
    }
    return text;
}

/* The next line of a results file (lines end in '\n'); NULL at the end. */
static char *ed_next_line(char **cursor)
{
    if (!*cursor || !**cursor)
        return NULL;
    char *line = *cursor, *nl = strchr(line, '\n');
    if (nl) {
        *nl = '\0';
        *cursor = nl + 1;
    } else {
        *cursor = line + strlen(line);
    }
    return line;
}

/* ------------------------------------------------------------------- Vim */

static bool ed_have(const char *exe)
{
    if (!ed_on_path(exe))
        cr_skip_test("%s is not installed (make deps installs vim-nox and emacs-nox)", exe);
    return true;
}

/* Start of every Vim script: the editors/vim runtime first, then the
 * plugins, then the file (so that the filetype is detected as usual). */
static void ed_vim_prelude(FILE *f, const char *file)
{
    fprintf(f, "set nocompatible\n"
               "let &runtimepath = '%s,' . &runtimepath\n"
               "filetype plugin indent on\n"
               "syntax on\n"
               "edit %s\n",
            VIMDIR, file);
}

static int ed_vim(const char *script, const char *log)
{
    char *argv[] = {"vim", "-Nu", "NONE", "-i", "NONE", "-n", "-es", "-S", (char *)script, NULL};
    return ed_run(argv, log, 30);
}

Test(editors, vim_syntax)
{
    ed_have("vim");
    struct place places[NCHECKS];
    free(ed_places(places));

    char script[64], out[64], log[64];
    ed_tmpfile(script, sizeof script, ".vim");
    ed_tmpfile(out, sizeof out, ".txt");
    ed_tmpfile(log, sizeof log, ".log");
    FILE *f = fopen(script, "w");
    cr_assert(f);
    ed_vim_prelude(f, SAMPLE);
    /* The group, its translation and its chain of links, e.g.
       ltlKeyword>Keyword>Statement: synIDtrans() gives only the end. */
    fputs("function! LtlChain(id) abort\n"
          "  let name = synIDattr(a:id, 'name')\n"
          "  let chain = name\n"
          "  let n = 0\n"
          "  while name != '' && n < 10\n"
          "    let m = matchlist(execute('highlight ' . name), 'links to \\(\\w\\+\\)')\n"
          "    if empty(m) | break | endif\n"
          "    let name = m[1]\n"
          "    let chain .= '>' . name\n"
          "    let n += 1\n"
          "  endwhile\n"
          "  return chain\n"
          "endfunction\n"
          "let out = ['filetype=' . &filetype . ' syntax=' . get(b:, 'current_syntax', '')]\n"
          "for [l, c] in [",
          f);
    for (size_t i = 0; i < NCHECKS; i++)
        fprintf(f, "%s[%d, %d]", i ? ", " : "", places[i].line, places[i].col);
    fprintf(f, "]\n"
               "  let id = synID(l, c, 1)\n"
               "  call add(out, synIDattr(id, 'name') . ' ' . synIDattr(synIDtrans(id), 'name')"
               " . ' ' . LtlChain(id))\n"
               "endfor\n"
               "call add(out, 'errmsg=' . v:errmsg)\n"
               "call writefile(out, '%s')\n"
               "qall!\n",
            out);
    fclose(f);

    ed_expect_ran(ed_vim(script, log), "vim", log);
    char *results = ed_read_file(out, NULL), *cursor = results;
    cr_assert(results && *results, "vim wrote no results");
    char *line = ed_next_line(&cursor);
    cr_expect(line && strcmp(line, "filetype=ltl syntax=ltl") == 0, "vim did not detect the filetype: %s",
              line ? line : "?");
    for (size_t i = 0; i < NCHECKS; i++) {
        const struct expect *e = &expect[places[i].cls];
        line = ed_next_line(&cursor);
        cr_assert(line, "vim results end early at check %zu", i);
        char group[64] = "", trans[64] = "", chain[256] = "";
        sscanf(line, "%63s %63s %255s", group, trans, chain);
        if (line[0] == ' ') /* no group at all */
            group[0] = trans[0] = chain[0] = '\0';
        bool ok_group = e->vim_group[0] ? ed_has_word(group, " ", e->vim_group) : group[0] == '\0';
        bool ok_std = e->vim_std[0] ? ed_has_word(chain, ">", e->vim_std) : true;
        cr_expect(ok_group && ok_std,
                  "vim: %s should be %s (group %s, linked to %s); got group '%s', links '%s', "
                  "shown as '%s'",
                  places[i].what, e->name, e->vim_group[0] ? e->vim_group : "none",
                  e->vim_std[0] ? e->vim_std : "-", group, chain, trans);
    }
    line = ed_next_line(&cursor);
    cr_expect(line && strcmp(line, "errmsg=") == 0, "vim reported an error: %s", line ? line : "?");
    free(results);
    unlink(script), unlink(out), unlink(log);
}

/* ---------------------------------------------------------- indentation */

/* The indent fixture with every line's indentation removed (variant 0) or
 * replaced by a scramble of spaces and tabs (variant 1). Blank lines stay
 * empty. Written to a new temp file *.ltl. */
static void ed_misindent(char *path, size_t size, int variant)
{
    char *text = ed_read_file(INDENT, NULL);
    cr_assert(text, "cannot read %s", INDENT);
    size_t n = strlen(text);
    char *bad = malloc(2 * n + 32 * n / 10 + 1024), *w = bad;
    cr_assert(bad);
    int lineno = 0;
    for (char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        size_t ws = strspn(p, " \t");
        if (ws > len)
            ws = len;
        if (ws < len && variant == 1) {
            int k = (lineno * 7) % 11;
            for (int j = 0; j < k; j++)
                *w++ = (j % 5 == 4) ? '\t' : ' ';
        }
        memcpy(w, p + ws, len - ws);
        w += len - ws;
        p += len;
        if (*p == '\n')
            *w++ = *p++;
        lineno++;
    }
    *w = '\0';
    ed_tmpfile(path, size, ".ltl");
    cr_assert(ed_write_file(path, bad));
    free(bad);
    free(text);
}

/* Compare a re-indented file with the fixture, line by line. */
static void ed_expect_indented(const char *who, const char *path, int variant)
{
    char *want = ed_read_file(INDENT, NULL), *got = ed_read_file(path, NULL);
    cr_assert(want && got, "%s: cannot read the re-indented file", who);
    char *wc = want, *gc = got, *wl, *gl;
    int line = 0, bad = 0;
    while ((wl = ed_next_line(&wc)) != NULL) {
        gl = ed_next_line(&gc);
        line++;
        if (!gl || strcmp(wl, gl) != 0) {
            if (bad++ < 5)
                cr_expect(false, "%s (variant %d): line %d is\n  |%s|\nwant\n  |%s|", who, variant,
                          line, gl ? gl : "(missing)", wl);
        }
    }
    cr_expect(bad == 0, "%s (variant %d): %d lines indented wrong", who, variant, bad);
    cr_expect(ed_next_line(&gc) == NULL, "%s: extra lines after re-indenting", who);
    free(want);
    free(got);
}

Test(editors, vim_indent)
{
    ed_have("vim");
    for (int variant = 0; variant < 2; variant++) {
        char bad[64], script[64], log[64];
        ed_misindent(bad, sizeof bad, variant);
        ed_tmpfile(script, sizeof script, ".vim");
        ed_tmpfile(log, sizeof log, ".log");
        FILE *f = fopen(script, "w");
        cr_assert(f);
        ed_vim_prelude(f, bad);
        fputs("if &indentexpr !~# 'GetLtlIndent' | cquit! 3 | endif\n"
              "normal! gg=G\n"
              "write!\n"
              "qall!\n",
              f);
        fclose(f);
        ed_expect_ran(ed_vim(script, log), "vim gg=G", log);
        ed_expect_indented("vim gg=G", bad, variant);
        unlink(bad), unlink(script), unlink(log);
    }
}

/* ----------------------------------------------------------------- Emacs */

static int ed_emacs(const char *script, const char *log)
{
    char *argv[] = {"emacs", "-Q", "--batch", "-l", ELISP, "-l", (char *)script, NULL};
    return ed_run(argv, log, 60);
}

Test(editors, emacs_faces)
{
    ed_have("emacs");
    struct place places[NCHECKS];
    free(ed_places(places));

    char script[64], out[64], log[64], elc[64];
    ed_tmpfile(script, sizeof script, ".el");
    ed_tmpfile(out, sizeof out, ".txt");
    ed_tmpfile(log, sizeof log, ".log");
    ed_tmpfile(elc, sizeof elc, ".elc");
    FILE *f = fopen(script, "w");
    cr_assert(f);
    /* Byte-compile the mode (warnings are errors) into a temp .elc, open the
       sample (auto-mode-alist picks the mode), fontify, read faces. */
    fprintf(f,
            "(setq ltl-test-out nil)\n"
            "(defun ltl-test-put (s) (push s ltl-test-out))\n"
            "(ltl-test-put (format \"compiled=%%s\"\n"
            "  (let ((byte-compile-dest-file-function (lambda (_) \"%s\"))\n"
            "        (byte-compile-error-on-warn t))\n"
            "    (condition-case err (and (byte-compile-file \"%s\") t)\n"
            "      (error (format \"%%S\" err))))))\n"
            "(find-file \"%s\")\n"
            "(ltl-test-put (format \"mode=%%s prog=%%s feature=%%s\" major-mode\n"
            "  (and (derived-mode-p 'prog-mode) t) (featurep 'ltl-mode)))\n"
            "(font-lock-ensure)\n"
            "(dolist (lc '(",
            elc, ELISP, SAMPLE);
    for (size_t i = 0; i < NCHECKS; i++)
        fprintf(f, "(%d . %d) ", places[i].line, places[i].col);
    fprintf(f, "))\n"
               "  (goto-char (point-min))\n"
               "  (forward-line (1- (car lc)))\n"
               "  (forward-char (1- (cdr lc)))\n"
               "  (ltl-test-put (format \"%%S %%s\" (get-text-property (point) 'face)\n"
               "                        (if (nth 4 (syntax-ppss (1+ (point)))) \"in-comment\" \"-\"))))\n"
               "(with-temp-file \"%s\"\n"
               "  (insert (mapconcat #'identity (nreverse ltl-test-out) \"\\n\") \"\\n\"))\n",
            out);
    fclose(f);

    ed_expect_ran(ed_emacs(script, log), "emacs", log);
    char *results = ed_read_file(out, NULL), *cursor = results;
    cr_assert(results && *results, "emacs wrote no results");
    char *line = ed_next_line(&cursor);
    cr_expect(line && strcmp(line, "compiled=t") == 0,
              "emacs: ltl-mode.el does not byte-compile cleanly: %s", line ? line : "?");
    line = ed_next_line(&cursor);
    cr_expect(line && strcmp(line, "mode=ltl-mode prog=t feature=t") == 0,
              "emacs: .ltl did not open in ltl-mode derived from prog-mode: %s", line ? line : "?");
    for (size_t i = 0; i < NCHECKS; i++) {
        const struct expect *e = &expect[places[i].cls];
        line = ed_next_line(&cursor);
        cr_assert(line, "emacs results end early at check %zu", i);
        bool ok = ed_has_word(line, " ()", e->emacs_face);
        if (places[i].cls == COMMENT || places[i].cls == TODO)
            ok = ok && strstr(line, "in-comment") != NULL;
        cr_expect(ok, "emacs: %s should be %s (%s); got %s", places[i].what, e->name, e->emacs_face,
                  line);
    }
    free(results);
    unlink(script), unlink(out), unlink(log), unlink(elc);
}

Test(editors, emacs_indent)
{
    ed_have("emacs");
    char bad[2][64], script[64], log[64];
    for (int variant = 0; variant < 2; variant++)
        ed_misindent(bad[variant], sizeof bad[variant], variant);
    ed_tmpfile(script, sizeof script, ".el");
    ed_tmpfile(log, sizeof log, ".log");
    FILE *f = fopen(script, "w");
    cr_assert(f);
    for (int variant = 0; variant < 2; variant++)
        fprintf(f,
                "(with-current-buffer (find-file \"%s\")\n"
                "  (unless (eq major-mode 'ltl-mode) (kill-emacs 3))\n"
                "  (indent-region (point-min) (point-max))\n"
                "  (write-region nil nil buffer-file-name))\n",
                bad[variant]);
    fclose(f);
    ed_expect_ran(ed_emacs(script, log), "emacs indent-region", log);
    for (int variant = 0; variant < 2; variant++) {
        ed_expect_indented("emacs indent-region", bad[variant], variant);
        unlink(bad[variant]);
    }
    unlink(script), unlink(log);
}

/* --------------------------------------------------------------- VS Code */

static cJSON *ed_json(const char *path)
{
    char *text = ed_read_file(path, NULL);
    cr_assert(text, "cannot read %s", path);
    cJSON *json = cJSON_Parse(text);
    cr_assert(json, "%s is not valid JSON (near \"%.40s\")", path, cJSON_GetErrorPtr());
    free(text);
    return json;
}

static bool ed_exists(const char *dir, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void ed_onig_init(void)
{
    static OnigEncoding encs[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encs, 1);
}

/* Compile a regex as vscode-textmate does (vscode-oniguruma: UTF-8, the
 * default Oniguruma syntax, ONIG_OPTION_CAPTURE_GROUP). NULL and a message on error. */
static OnigRegex ed_compile(const char *pattern, char *err, size_t errsize)
{
    OnigRegex reg;
    OnigErrorInfo einfo;
    int r = onig_new(&reg, (const UChar *)pattern, (const UChar *)pattern + strlen(pattern),
                     ONIG_OPTION_CAPTURE_GROUP, ONIG_ENCODING_UTF8, ONIG_SYNTAX_ONIGURUMA, &einfo);
    if (r != ONIG_NORMAL) {
        UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, r, &einfo);
        snprintf(err, errsize, "%s", (char *)msg);
        return NULL;
    }
    return reg;
}

Test(editors, vscode_manifest)
{
    cJSON *pkg = ed_json(VSCODE "/package.json");
    cJSON *contrib = cJSON_GetObjectItemCaseSensitive(pkg, "contributes");
    cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(pkg, "name")), "package.json: no name");
    cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(pkg, "publisher")),
              "package.json: no publisher");
    cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(pkg, "version")), "package.json: no version");
    cJSON *engines = cJSON_GetObjectItemCaseSensitive(pkg, "engines");
    cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(engines, "vscode")),
              "package.json: no engines.vscode");

    cJSON *langs = cJSON_GetObjectItemCaseSensitive(contrib, "languages");
    cr_assert(cJSON_IsArray(langs) && cJSON_GetArraySize(langs) == 1,
              "package.json: contributes.languages should hold one language");
    cJSON *lang = cJSON_GetArrayItem(langs, 0);
    cJSON *id = cJSON_GetObjectItemCaseSensitive(lang, "id");
    cr_expect(cJSON_IsString(id) && strcmp(id->valuestring, "ltl") == 0, "language id is not ltl");
    bool has_ext = false;
    cJSON *ext;
    cJSON_ArrayForEach(ext, cJSON_GetObjectItemCaseSensitive(lang, "extensions"))
        has_ext |= cJSON_IsString(ext) && strcmp(ext->valuestring, ".ltl") == 0;
    cr_expect(has_ext, "the language does not claim .ltl");
    cJSON *conf = cJSON_GetObjectItemCaseSensitive(lang, "configuration");
    cr_assert(cJSON_IsString(conf), "the language has no configuration");
    cr_expect(ed_exists(VSCODE, conf->valuestring), "configuration %s does not exist", conf->valuestring);

    cJSON *grammars = cJSON_GetObjectItemCaseSensitive(contrib, "grammars");
    cr_assert(cJSON_IsArray(grammars) && cJSON_GetArraySize(grammars) == 1,
              "package.json: contributes.grammars should hold one grammar");
    cJSON *gram = cJSON_GetArrayItem(grammars, 0);
    cJSON *glang = cJSON_GetObjectItemCaseSensitive(gram, "language");
    cJSON *scope = cJSON_GetObjectItemCaseSensitive(gram, "scopeName");
    cJSON *gpath = cJSON_GetObjectItemCaseSensitive(gram, "path");
    cr_expect(cJSON_IsString(glang) && strcmp(glang->valuestring, "ltl") == 0, "grammar language is not ltl");
    cr_expect(cJSON_IsString(scope) && strcmp(scope->valuestring, "source.ltl") == 0,
              "grammar scopeName is not source.ltl");
    cr_assert(cJSON_IsString(gpath), "grammar has no path");
    cr_expect(ed_exists(VSCODE, gpath->valuestring), "grammar %s does not exist", gpath->valuestring);

    /* The grammar: its scope name and every include resolved. */
    cJSON *g = ed_json(VSCODE "/syntaxes/ltl.tmLanguage.json");
    cJSON *gscope = cJSON_GetObjectItemCaseSensitive(g, "scopeName");
    cr_expect(cJSON_IsString(gscope) && strcmp(gscope->valuestring, "source.ltl") == 0,
              "the grammar's scopeName is not source.ltl");
    cJSON *repo = cJSON_GetObjectItemCaseSensitive(g, "repository");
    /* Walk the grammar depth-first with an explicit stack. */
    cJSON *stack[512];
    int sp = 0, includes = 0;
    stack[sp++] = g;
    while (sp > 0) {
        cJSON *node = stack[--sp], *child;
        cJSON *inc = cJSON_GetObjectItemCaseSensitive(node, "include");
        if (cJSON_IsString(inc)) {
            includes++;
            const char *s = inc->valuestring;
            cr_expect(strcmp(s, "$self") == 0 || strcmp(s, "$base") == 0 ||
                          (s[0] == '#' && cJSON_GetObjectItemCaseSensitive(repo, s + 1)),
                      "grammar: include \"%s\" does not resolve", s);
        }
        cJSON_ArrayForEach(child, node)
            if ((cJSON_IsObject(child) || cJSON_IsArray(child)) && sp < 512)
                stack[sp++] = child;
    }
    cr_expect(includes > 0, "grammar: no includes found");

    /* The language configuration: `#` comments, the three bracket pairs
       (brackets, auto-closing, surrounding), folding markers. */
    cJSON *lc = ed_json(VSCODE "/language-configuration.json");
    cJSON *comments = cJSON_GetObjectItemCaseSensitive(lc, "comments");
    cJSON *line = cJSON_GetObjectItemCaseSensitive(comments, "lineComment");
    cr_expect(cJSON_IsString(line) && strcmp(line->valuestring, "#") == 0, "lineComment is not #");
    static const char *const pairs[][2] = {{"{", "}"}, {"[", "]"}, {"(", ")"}};
    for (size_t k = 0; k < 3; k++) {
        bool in_brackets = false, in_auto = false, in_surround = false;
        cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(lc, "brackets"))
            in_brackets |= cJSON_GetArraySize(it) == 2 &&
                           strcmp(cJSON_GetArrayItem(it, 0)->valuestring, pairs[k][0]) == 0 &&
                           strcmp(cJSON_GetArrayItem(it, 1)->valuestring, pairs[k][1]) == 0;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(lc, "autoClosingPairs")) {
            cJSON *o = cJSON_GetObjectItemCaseSensitive(it, "open"), *c = cJSON_GetObjectItemCaseSensitive(it, "close");
            in_auto |= cJSON_IsString(o) && cJSON_IsString(c) && strcmp(o->valuestring, pairs[k][0]) == 0 &&
                       strcmp(c->valuestring, pairs[k][1]) == 0;
        }
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(lc, "surroundingPairs"))
            in_surround |= cJSON_GetArraySize(it) == 2 &&
                           strcmp(cJSON_GetArrayItem(it, 0)->valuestring, pairs[k][0]) == 0;
        cr_expect(in_brackets && in_auto && in_surround,
                  "language-configuration: %s%s missing from brackets/autoClosingPairs/surroundingPairs",
                  pairs[k][0], pairs[k][1]);
    }
    cJSON *markers = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(lc, "folding"), "markers");
    cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(markers, "start")) &&
                  cJSON_IsString(cJSON_GetObjectItemCaseSensitive(markers, "end")),
              "language-configuration: no folding markers");
    cJSON_Delete(pkg);
    cJSON_Delete(g);
    cJSON_Delete(lc);
}

/* Compile every regex of a JSON tree (keys in `keys`, '|'-separated). */
static int ed_compile_all(cJSON *node, const char *keys, const char *file, int *failed)
{
    int n = 0;
    cJSON *child;
    cJSON_ArrayForEach(child, node) {
        if (cJSON_IsString(child) && child->string && ed_has_word(child->string, "", keys)) {
            char err[ONIG_MAX_ERROR_MESSAGE_LEN + 64];
            OnigRegex reg = ed_compile(child->valuestring, err, sizeof err);
            cr_expect(reg, "%s: \"%s\": /%s/ does not compile: %s", file, child->string,
                      child->valuestring, err);
            if (reg)
                onig_free(reg);
            else
                ++*failed;
            n++;
        } else if (cJSON_IsObject(child) || cJSON_IsArray(child)) {
            n += ed_compile_all(child, keys, file, failed);
        }
    }
    return n;
}

Test(editors, vscode_regexes)
{
    ed_onig_init();
    int failed = 0;
    cJSON *g = ed_json(VSCODE "/syntaxes/ltl.tmLanguage.json");
    int n = ed_compile_all(g, "match|begin|end|while", "ltl.tmLanguage.json", &failed);
    cr_expect(n >= 20, "only %d regexes found in the grammar", n);
    /* The language configuration's patterns are JavaScript regexes; these use
       only what both flavours share, so Oniguruma must take them too. */
    cJSON *lc = ed_json(VSCODE "/language-configuration.json");
    int m = ed_compile_all(lc, "start|end|increaseIndentPattern|decreaseIndentPattern|wordPattern",
                           "language-configuration.json", &failed);
    cr_expect(m >= 4, "only %d patterns found in language-configuration.json", m);
    cr_expect(failed == 0, "%d of %d regexes do not compile", failed, n + m);
    cJSON_Delete(g);
    cJSON_Delete(lc);
    onig_end();
}

/* A small TextMate tokenizer: enough of the algorithm of vscode-textmate for
 * this grammar (match and begin/end rules, captures, includes of the
 * repository and $self; at each step the earliest match wins, the end
 * pattern on ties, then the first rule). It gives every byte of the text the
 * space-separated scopes that cover it. */

#define TM_SCOPE 320
#define TM_MAXRULES 128
#define TM_DEPTH 32

struct tmg {
    cJSON *grammar, *repo;
    struct { const char *src; OnigRegex reg; } cache[256];
    int ncache;
    OnigRegion *region;
};

static OnigRegex tm_regex(struct tmg *tm, const char *src)
{
    for (int i = 0; i < tm->ncache; i++)
        if (tm->cache[i].src == src)
            return tm->cache[i].reg;
    char err[ONIG_MAX_ERROR_MESSAGE_LEN + 8];
    OnigRegex reg = ed_compile(src, err, sizeof err);
    cr_assert(reg, "regex /%s/: %s", src, err);
    cr_assert(tm->ncache < 256);
    tm->cache[tm->ncache].src = src;
    tm->cache[tm->ncache++].reg = reg;
    return reg;
}

static const char *tm_str(cJSON *obj, const char *key)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static cJSON *tm_resolve(struct tmg *tm, cJSON *rule)
{
    const char *inc = tm_str(rule, "include");
    if (!inc)
        return rule;
    if (strcmp(inc, "$self") == 0 || strcmp(inc, "$base") == 0)
        return tm->grammar;
    cr_assert(inc[0] == '#', "include %s: only the repository and $self are supported", inc);
    cJSON *r = cJSON_GetObjectItemCaseSensitive(tm->repo, inc + 1);
    cr_assert(r, "include %s does not resolve", inc);
    return r;
}

/* The match/begin rules reachable from a rule's `patterns`, in order. */
static void tm_collect(struct tmg *tm, cJSON *patterns, cJSON **out, int *n, int depth)
{
    cr_assert(depth < 16, "includes nest too deep");
    cJSON *p;
    cJSON_ArrayForEach(p, patterns) {
        cJSON *r = tm_resolve(tm, p);
        if (tm_str(r, "match") || tm_str(r, "begin")) {
            cr_assert(*n < TM_MAXRULES);
            out[(*n)++] = r;
        } else {
            tm_collect(tm, cJSON_GetObjectItemCaseSensitive(r, "patterns"), out, n, depth + 1);
        }
    }
}

static void tm_append(char (*sc)[TM_SCOPE], size_t b, size_t e, const char *name)
{
    if (!name)
        return;
    for (size_t i = b; i < e; i++) {
        size_t len = strlen(sc[i]);
        snprintf(sc[i] + len, TM_SCOPE - len, "%s%s", len ? " " : "", name);
    }
}

static void tm_fill(char (*sc)[TM_SCOPE], size_t b, size_t e, cJSON **stack, int sp)
{
    for (size_t i = b; i < e; i++)
        sc[i][0] = '\0';
    for (int k = 0; k < sp; k++)
        tm_append(sc, b, e, k == 0 ? tm_str(stack[0], "scopeName") : tm_str(stack[k], "name"));
}

/* Scopes of the captures of the last match, over the bytes they cover. */
static void tm_captures(struct tmg *tm, char (*sc)[TM_SCOPE], size_t base, cJSON *caps)
{
    cJSON *cap;
    cJSON_ArrayForEach(cap, caps) {
        int k = atoi(cap->string);
        if (k < 0 || k >= tm->region->num_regs || tm->region->beg[k] < 0)
            continue;
        tm_append(sc, base + (size_t)tm->region->beg[k], base + (size_t)tm->region->end[k],
                  tm_str(cap, "name"));
    }
}

/* Tokenize `text`; sc[i] gets the scopes of byte i. */
static void tm_tokenize(struct tmg *tm, const char *text, char (*sc)[TM_SCOPE])
{
    cJSON *stack[TM_DEPTH] = {tm->grammar};
    int sp = 1;
    size_t bol = 0, total = strlen(text);
    while (bol < total) {
        size_t eol = bol + strcspn(text + bol, "\n");
        size_t len = eol - bol + (text[eol] == '\n'); /* lines are fed with their '\n' */
        const UChar *line = (const UChar *)text + bol, *end = line + len;
        size_t pos = 0;
        for (int guard = 0; pos < len; guard++) {
            cr_assert(guard < 10000, "tokenizer loops at byte %zu", bol + pos);
            cJSON *top = stack[sp - 1];
            cJSON *rules[TM_MAXRULES];
            int nrules = 0;
            tm_collect(tm, cJSON_GetObjectItemCaseSensitive(top, "patterns"), rules, &nrules, 0);
            /* Find the earliest match: the end pattern first, then the rules. */
            long best = -1;
            cJSON *best_rule = NULL;
            const char *endre = sp > 1 ? tm_str(top, "end") : NULL;
            if (endre) {
                OnigRegion *rg = onig_region_new();
                long r = onig_search(tm_regex(tm, endre), line, end, line + pos, end, rg, ONIG_OPTION_NONE);
                if (r >= 0) {
                    best = r;
                    onig_region_copy(tm->region, rg);
                }
                onig_region_free(rg, 1);
            }
            for (int i = 0; i < nrules; i++) {
                const char *re = tm_str(rules[i], "match");
                if (!re)
                    re = tm_str(rules[i], "begin");
                OnigRegion *rg = onig_region_new();
                long r = onig_search(tm_regex(tm, re), line, end, line + pos, end, rg, ONIG_OPTION_NONE);
                if (r >= 0 && (best < 0 || r < best)) {
                    best = r;
                    best_rule = rules[i];
                    onig_region_copy(tm->region, rg);
                }
                onig_region_free(rg, 1);
            }
            if (best < 0) {
                tm_fill(sc, bol + pos, bol + len, stack, sp);
                break;
            }
            size_t ms = (size_t)tm->region->beg[0], me = (size_t)tm->region->end[0];
            tm_fill(sc, bol + pos, bol + ms, stack, sp);
            if (!best_rule) { /* the end of the current begin/end rule */
                tm_fill(sc, bol + ms, bol + me, stack, sp);
                cJSON *caps = cJSON_GetObjectItemCaseSensitive(top, "endCaptures");
                tm_captures(tm, sc, bol, caps ? caps : cJSON_GetObjectItemCaseSensitive(top, "captures"));
                sp--;
            } else if (tm_str(best_rule, "match")) {
                tm_fill(sc, bol + ms, bol + me, stack, sp);
                tm_append(sc, bol + ms, bol + me, tm_str(best_rule, "name"));
                tm_captures(tm, sc, bol, cJSON_GetObjectItemCaseSensitive(best_rule, "captures"));
                if (me == ms) { /* an empty match: step over one byte */
                    tm_fill(sc, bol + ms, bol + ms + 1, stack, sp);
                    me++;
                }
            } else {
                cr_assert(sp < TM_DEPTH, "begin/end rules nest too deep");
                stack[sp++] = best_rule;
                tm_fill(sc, bol + ms, bol + me, stack, sp);
                cJSON *caps = cJSON_GetObjectItemCaseSensitive(best_rule, "beginCaptures");
                tm_captures(tm, sc, bol, caps ? caps : cJSON_GetObjectItemCaseSensitive(best_rule, "captures"));
            }
            pos = me;
        }
        bol += len;
    }
}

/* Does `prefix` (length n) start one of the scopes in ctx? */
static bool tm_prefix_in(const char *prefix, size_t n, void *ctx)
{
    const char *s = ctx;
    while (*s) {
        s += strspn(s, " ");
        size_t m = strcspn(s, " ");
        if (n > 0 && m >= n && strncmp(s, prefix, n) == 0)
            return true;
        s += m;
    }
    return false;
}

Test(editors, vscode_tokens)
{
    ed_onig_init();
    struct place places[NCHECKS];
    char *text = ed_places(places);
    struct tmg tm = {0};
    tm.grammar = ed_json(VSCODE "/syntaxes/ltl.tmLanguage.json");
    tm.repo = cJSON_GetObjectItemCaseSensitive(tm.grammar, "repository");
    tm.region = onig_region_new();
    size_t total = strlen(text);
    char (*sc)[TM_SCOPE] = calloc(total + 1, TM_SCOPE);
    cr_assert(sc);
    tm_tokenize(&tm, text, sc);
    for (size_t i = 0; i < NCHECKS; i++) {
        const struct expect *e = &expect[places[i].cls];
        const char *scopes = sc[places[i].pos];
        bool ok;
        if (places[i].cls == PLAIN)
            ok = strcmp(scopes, "source.ltl") == 0;
        else
            ok = ed_any_alt(e->tm_scope, tm_prefix_in, (void *)scopes) &&
                 !(e->tm_forbid[0] && ed_any_alt(e->tm_forbid, tm_prefix_in, (void *)scopes));
        cr_expect(ok, "vscode: %s should be %s (a scope starting %s%s%s); got scopes \"%s\"",
                  places[i].what, e->name, e->tm_scope, e->tm_forbid[0] ? ", none starting " : "",
                  e->tm_forbid, scopes);
    }
    /* The grammar leaves no region open at the end of the sample. */
    cr_expect(strcmp(sc[total - 1], "source.ltl") == 0, "vscode: the sample ends inside \"%s\"",
              sc[total - 1]);
    free(sc);
    for (int i = 0; i < tm.ncache; i++)
        onig_free(tm.cache[i].reg);
    onig_region_free(tm.region, 1);
    cJSON_Delete(tm.grammar);
    free(text);
    onig_end();
}
