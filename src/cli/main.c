#include "pvbackup/common.h"

#include "pvbackup/interrupt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int cmd_help(int argc, char **argv);

static const pvb_cli_help help_help = {
    .name = "help",
    .usage = "pvbackup help [COMMAND]",
    .description = "Show the list of commands, or the help of one command.",
    .options = NULL,
    .examples = "  pvbackup help\n"
                "  pvbackup help restore\n"
                "  pvbackup restore --help\n",
    .repo_options = false,
};

/* Every command, in the order "pvbackup help" lists them. */
static const pvb_cli_command commands[] = {
    {"init", pvb_cli_cmd_init, "create a new repository", &pvb_cli_help_init},
    {"backup", pvb_cli_cmd_backup, "back up a directory as a new snapshot of a volume",
     &pvb_cli_help_backup},
    {"snapshots", pvb_cli_cmd_snapshots, "list the snapshots of a repository",
     &pvb_cli_help_snapshots},
    {"ls", pvb_cli_cmd_ls, "list the files of a snapshot", &pvb_cli_help_ls},
    {"diff", pvb_cli_cmd_diff, "show what changed between two snapshots", &pvb_cli_help_diff},
    {"restore", pvb_cli_cmd_restore, "restore a snapshot, or part of it, into a directory",
     &pvb_cli_help_restore},
    {"verify", pvb_cli_cmd_verify, "check the integrity of a repository", &pvb_cli_help_verify},
    {"prune", pvb_cli_cmd_prune, "remove data that no snapshot uses", &pvb_cli_help_prune},
    {"export", pvb_cli_cmd_export, "write a snapshot as a tar archive", &pvb_cli_help_export},
    {"catalog", pvb_cli_cmd_catalog, "maintain the local catalog (rebuild)", &pvb_cli_help_catalog},
    {"version", pvb_cli_cmd_version, "show the version of pvbackup and its libraries",
     &pvb_cli_help_version},
    {"help", cmd_help, "show the help of a command", &help_help},
};

static const pvb_cli_command *find_command(const char *name)
{
    for (size_t cmd_index = 0; cmd_index < PVB_ARRAY_LEN(commands); cmd_index++) {
        if (strcmp(commands[cmd_index].name, name) == 0) {
            return &commands[cmd_index];
        }
    }
    return NULL;
}

static void print_overview(FILE *f)
{
    fputs("usage: pvbackup COMMAND [options]\n"
          "\n"
          "Backup and disaster recovery for persistent volumes.\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t cmd_index = 0; cmd_index < PVB_ARRAY_LEN(commands); cmd_index++) {
        fprintf(f, "  %-10s %s\n", commands[cmd_index].name, commands[cmd_index].summary);
    }
    fputs("\n"
          "Run 'pvbackup COMMAND --help' for the options of a command.\n"
          "Exit codes: 0 ok, 1 failure, 2 usage, 3 partial, 4 not found, 5 wrong password,\n"
          "6 integrity problem, 7 locked, 8 storage or I/O error, 9 configuration error,\n"
          "130 interrupted (see docs/cli.md).\n",
          f);
}

static int cmd_help(int argc, char **argv)
{
    const pvb_cli_command *cmd;

    if (argc < 2) {
        print_overview(stdout);
        return PVB_EXIT_OK;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        pvb_cli_help_print(&help_help, stdout);
        return PVB_EXIT_OK;
    }
    if (argc > 2 && strcmp(argv[1], "catalog") == 0) {
        /* "help catalog rebuild" is "catalog rebuild --help" */
        char *sub_argv[] = {argv[1], argv[2], (char *)"--help", NULL};
        return pvb_cli_cmd_catalog(3, sub_argv);
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL || argc > 2) {
        char *shown = pvb_cli_escape(argc > 2 && cmd != NULL ? argv[2] : argv[1], NULL);
        fprintf(stderr, "pvbackup: error: no help for '%s'\nhint: see 'pvbackup help'\n",
                shown != NULL ? shown : "?");
        free(shown);
        return PVB_EXIT_USAGE;
    }
    pvb_cli_help_print(cmd->help, stdout);
    return PVB_EXIT_OK;
}

/* Output is written through stdio; a full disk or a closed pipe must not go unnoticed. */
static int finish_stdout(int code)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (errno != EPIPE) {
            fprintf(stderr, "pvbackup: error: cannot write to standard output: %s\n",
                    strerror(errno));
        }
        if (code == PVB_EXIT_OK) {
            code = PVB_EXIT_STORAGE;
        }
    }
    return code;
}

int main(int argc, char **argv)
{
    const pvb_cli_command *cmd;

    if (argc < 2) {
        print_overview(stderr);
        return PVB_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        print_overview(stdout);
        return finish_stdout(PVB_EXIT_OK);
    }
    if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
        char *version_argv[] = {(char *)"version", NULL};
        return finish_stdout(pvb_cli_cmd_version(1, version_argv));
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL) {
        char *shown;
        char *eq = strchr(argv[1], '=');
        if (argv[1][0] == '-' && eq != NULL) {
            *eq = '\0'; /* show an option's name, never its value */
        }
        shown = pvb_cli_escape(argv[1], NULL);
        if (argv[1][0] == '-') {
            fprintf(stderr, "pvbackup: error: unknown option '%s' before the command\n",
                    shown != NULL ? shown : "?");
        } else {
            fprintf(stderr, "pvbackup: error: '%s' is not a pvbackup command\n",
                    shown != NULL ? shown : "?");
        }
        fputs("hint: see 'pvbackup help'\n", stderr);
        free(shown);
        return PVB_EXIT_USAGE;
    }
    pvb_interrupt_install();
    return finish_stdout(cmd->run(argc - 1, argv + 1));
}
