/* driver.h — the commands of ltlc beyond the pipeline in main.c. */
#ifndef LTL_DRIVER_H
#define LTL_DRIVER_H

#include <stdbool.h>

/* run.c: `ltlc run FILE [STAGE...] [OPTIONS]`; argv starts after "run". Exit status. */
int run_command(int argc, char **argv);
/* Set by `ltlc build`: run_command compiles every step it can need, then returns. */
extern bool run_compile_only;
/* build.c: `ltlc build FILE -o PROG [OPTIONS]`, a standalone executable (docs/build.md). */
int build_command(int argc, char **argv);
/* repl.c: `ltlc repl [FILE...]`, an interactive session (docs/repl.md). Exit status. */
int repl_command(int argc, char **argv);

#endif
