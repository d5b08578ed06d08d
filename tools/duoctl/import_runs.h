/* import_runs.h - `duoctl import runs|cancel` (import_runs.c). */
#ifndef DUOCTL_IMPORT_RUNS_H
#define DUOCTL_IMPORT_RUNS_H

/* argv[0] is "runs" or "cancel"; returns the process exit status. */
int import_runs_cmd(int argc, char **argv);

#endif
