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

/* run_ddp.c: the world of a run (docs/distributed.md). DDP_SINGLE: one process; DDP_RANK:
 * this process is a rank of a world of several, joined (rt_dist_*); DDP_LAUNCHED: the run is
 * over with exit status *status (the ranks were started through mpirun and have ended, or
 * the world could not be made: the message is printed). argv as run_command's. A rank's
 * threads = 0 becomes its share of the cores. */
struct RtTrainerConfig;
typedef enum { DDP_SINGLE, DDP_RANK, DDP_LAUNCHED } DdpMode;
DdpMode ddp_setup(struct RtTrainerConfig *c, int argc, char **argv, int *status);
#endif
