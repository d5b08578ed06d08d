/* main.c - duoctl: the operator's and upstream developer's command-line tool. Only
 * dispatch lives here; each subcommand is its own file. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "log.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"migrate", cmd_migrate, "apply pending SQL migrations (safe to run concurrently)"},
    {"api", cmd_api, "make one signed Duo API call and print the JSON response"},
    {"enroll", cmd_enroll, "start an enrollment or check it (enroll.begin / enroll.status jobs)"},
    {"import", cmd_import,
     "import Duo users: manual (one user) or auto (whole tenant, --follow); runs, cancel"},
    {"auth", cmd_auth, "challenge a user's Duo device (auth job) and print allow/deny"},
    {"job", cmd_job, "send any job type with a JSON body and print its reply"},
    {"config-doc", cmd_config_doc, "print the configuration reference (Markdown)"},
    {"stage", cmd_stage, "create|list|show|update|delete|rotate-key Duo stages"},
    {"user", cmd_user, "upsert|list|load local users"},
    {"device", cmd_device, "list|delete local device records"},
    {"status", cmd_status,
     "queues, consumers, retries, dead letters, imports, outcomes (--json, --watch)"},
    {"dead", cmd_dead, "list|show|replay|purge dead-lettered messages"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: duoctl COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    log_init("duoctl", LOG_WARN);
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "duoctl: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
