/* test_trainer.c — the trainer's configuration from the trainer block and the command line. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "sema.h"

static char diags[8192];

static bool config(const char *file, const char *const *ov, int nov, RtTrainerConfig *c) {
    Ast ast = {0};
    char *text = NULL;
    diag_reset();
    memset(diags, 0, sizeof diags);
    FILE *mem = fmemopen(diags, sizeof diags - 1, "w");
    diag_set_output(mem);
    Node *root = parse_file(&ast, file, &text);
    cr_assert(root, "cannot parse %s", file);
    bool ok = sema_trainer_config(root, file, ov, nov, c);
    fclose(mem);
    diag_set_output(NULL);
    ast_free(&ast);
    free(text);
    return ok;
}

Test(trainer, every_flag_of_all_flags_example) {
    RtTrainerConfig c;
    cr_assert(config(SRCDIR "/examples/all_flags.ltl", NULL, 0, &c), "%s", diags);
    cr_assert_str_eq(c.precision, "bf16-mixed");
    cr_assert_str_eq(c.accelerator, "cpu");
    cr_assert_eq(c.max_epochs, 5);
    cr_assert_eq(c.max_steps, 0, "an expression (-1 + 1) is evaluated");
    cr_assert_eq(c.accumulate_grad_batches, 2);
    cr_assert_float_eq(c.gradient_clip_val, 1.0, 0);
    cr_assert_str_eq(c.max_time, "00:01:00:00");
    cr_assert(!c.limit_train_batches.count && c.limit_train_batches.v == 1.0);
    cr_assert(c.overfit_batches.count && c.overfit_batches.v == 0);
    cr_assert_eq(c.seed, 1234);
    cr_assert_str_eq(c.profiler, "simple");
    cr_assert_eq(c.ncallbacks, 6);
    cr_assert_str_eq(c.callbacks[0].name, "checkpoint");
    cr_assert_str_eq(c.callbacks[0].keys[1], "filename");
    cr_assert_str_eq(c.callbacks[0].vals[1].s, "{epoch}-{val_loss:.2f}");
    cr_assert_eq(c.callbacks[0].vals[4].kind, RT_INT);
    cr_assert_eq(c.callbacks[0].vals[4].i, 3, "save_top_k");
    cr_assert_str_eq(c.callbacks[1].name, "early_stopping");
    cr_assert_float_eq(c.callbacks[1].vals[1].f, 0.001, 1e-15);
    cr_assert_eq(c.nloggers, 2);
    cr_assert_str_eq(c.loggers[1].name, "tensorboard");
    rt_trainer_free(&c);
}

Test(trainer, defaults_and_command_line_overrides) {
    RtTrainerConfig c;
    const char *ov[] = {"max_epochs=3", "precision=16-mixed", "limit_val_batches=0.25", "limit_train_batches=10",
                        "enable_progress_bar=false"};
    cr_assert(config(SRCDIR "/examples/fashion_mlp.ltl", ov, 5, &c), "%s", diags);
    cr_assert_eq(c.max_epochs, 3, "the command line wins over the block's 10");
    cr_assert_str_eq(c.precision, "16-mixed");
    cr_assert(!c.limit_val_batches.count && c.limit_val_batches.v == 0.25);
    cr_assert(c.limit_train_batches.count && c.limit_train_batches.v == 10);
    cr_assert(!c.enable_progress_bar);
    cr_assert_eq(c.num_sanity_val_steps, 2, "Lightning's default");
    cr_assert_eq(c.log_every_n_steps, 50);
    cr_assert_eq(c.nloggers, 2);
    rt_trainer_free(&c);
}

Test(trainer, bad_overrides_are_errors) {
    RtTrainerConfig c;
    const char *cases[][2] = {
        {"max_epochs=abc", "--trainer.max_epochs=abc: 'max_epochs' cannot be set to that kind of value"},
        {"limit_val_batches=1.5", "'limit_val_batches' as a fraction must be at most 1.0 (an integer counts batches)"},
        {"max_epoch=3", "unknown trainer flag 'max_epoch'"},
        {"precision=bf16", "'precision' cannot be \"bf16\""},
        {"accumulate_grad_batches=0", "'accumulate_grad_batches' must be at least 1"},
        {"max_epochs", "expected FLAG=VALUE"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_assert(!config(SRCDIR "/examples/fashion_mlp.ltl", cases[i], 1, &c), "%s accepted", cases[i][0]);
        cr_assert(strstr(diags, cases[i][1]), "for %s got: %s", cases[i][0], diags);
        rt_trainer_free(&c);
    }
}
