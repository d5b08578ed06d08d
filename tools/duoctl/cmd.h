/* cmd.h - duoctl subcommands. Each takes the arguments after its own name and returns a
 * process exit status (0 ok, 1 failure, 2 usage). Each lives in its own cmd_<name>.c. */
#ifndef DUOCTL_CMD_H
#define DUOCTL_CMD_H

int cmd_config_doc(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_api(int argc, char **argv);
int cmd_stage(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_device(int argc, char **argv);
int cmd_job(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_auth(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_dead(int argc, char **argv);

#endif
