#include "pvbackup/common.h"

#include <stdlib.h>
#include <sys/sysmacros.h>

#include "cli.h"
#include "pvbackup/entry.h"
#include "pvbackup/timeutil.h"

const pvb_cli_help pvb_cli_help_ls = {
    .name = "ls",
    .usage = "pvbackup ls --repo URL SNAPSHOT [PATH] [--volume NAME] [--json]",
    .description =
        "List the entries of a snapshot at and below PATH (default: everything), in tree\n"
        "order, like 'ls -l': mode, owner, group, size, modification time (UTC) and path,\n"
        "with the target of symbolic links and hard links. SNAPSHOT is an id, a unique\n"
        "prefix of one (at least 4 characters) or 'latest' (of --volume). Names that are not\n"
        "printable UTF-8 are shown escaped (\\n, \\xff); --json adds their raw bytes in base64.",
    .options = "      --volume NAME         the volume whose snapshot 'latest' means\n"
               "      --json                print a JSON array of entry objects\n",
    .examples =
        "  pvbackup ls --repo /backups/repo latest --volume pg-data\n"
        "  pvbackup ls --repo /backups/repo 1a2b3c4d etc/nginx\n"
        "  pvbackup ls 1a2b3c4d5e6f --json | jq -r '.[] | select(.type==\"file\") | .path'\n",
    .repo_options = true,
};

enum { OPT_VOLUME = PVB_CLI_OPT_LOCAL, OPT_JSON };

typedef struct ls_args {
    const char *volume;
    bool json;
} ls_args;

static int ls_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    ls_args *a = ctx;

    switch (opt) {
    case OPT_VOLUME:
        if (!pvb_cli_volume_valid(arg)) {
            return pvb_cli_usage(c, "invalid volume name");
        }
        a->volume = arg;
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

/* Whether path is prefix itself or lies below it ("" is the whole tree). */
static bool under(const char *path, const char *prefix, size_t prefix_len)
{
    if (prefix_len == 0) {
        return true;
    }
    return strncmp(path, prefix, prefix_len) == 0 &&
           (path[prefix_len] == '\0' || path[prefix_len] == '/');
}

static void owner_text(const char *name, uint32_t id, char *out, size_t outlen)
{
    if (name != NULL && name[0] != '\0') {
        char *shown = pvb_cli_escape(name, NULL);
        snprintf(out, outlen, "%s", shown != NULL ? shown : "?");
        free(shown);
    } else {
        snprintf(out, outlen, "%lu", (unsigned long)id);
    }
}

static void size_text(const pvb_entry *e, char *out, size_t outlen)
{
    if (e->type == PVB_ENTRY_CHR || e->type == PVB_ENTRY_BLK) {
        dev_t rdev = (dev_t)e->rdev;
        snprintf(out, outlen, "%u, %u", major(rdev), minor(rdev));
    } else {
        snprintf(out, outlen, "%llu", (unsigned long long)e->size);
    }
}

static int print_text(const pvb_tree *t, const char *prefix)
{
    size_t prefix_len = strlen(prefix);
    int w_user = 1, w_group = 1, w_size = 1;
    char buf[80];

    /* Two passes: column widths first, as ls does. */
    for (size_t entry_index = 0; entry_index < t->n; entry_index++) {
        const pvb_entry *e = &t->entries[entry_index];
        int len;

        if (!under(e->path, prefix, prefix_len)) {
            continue;
        }
        owner_text(e->uname, e->uid, buf, sizeof buf);
        len = (int)strlen(buf);
        w_user = len > w_user ? len : w_user;
        owner_text(e->gname, e->gid, buf, sizeof buf);
        len = (int)strlen(buf);
        w_group = len > w_group ? len : w_group;
        size_text(e, buf, sizeof buf);
        len = (int)strlen(buf);
        w_size = len > w_size ? len : w_size;
    }
    for (size_t entry_index = 0; entry_index < t->n; entry_index++) {
        const pvb_entry *e = &t->entries[entry_index];
        char mode[11], user[80], group[80], size[80], mtime[32];

        if (!under(e->path, prefix, prefix_len)) {
            continue;
        }
        pvb_cli_mode_string(e->type, e->mode, mode);
        owner_text(e->uname, e->uid, user, sizeof user);
        owner_text(e->gname, e->gid, group, sizeof group);
        size_text(e, size, sizeof size);
        pvb_cli_format_time(e->mtime_sec, mtime, sizeof mtime);
        printf("%s %-*s %-*s %*s %s ", mode, w_user, user, w_group, group, w_size, size, mtime);
        pvb_cli_fputs_escaped(e->path, stdout);
        if (e->type == PVB_ENTRY_SYMLINK && e->link_target != NULL) {
            fputs(" -> ", stdout);
            pvb_cli_fputs_escaped(e->link_target, stdout);
        } else if (e->type == PVB_ENTRY_HARDLINK && e->link_target != NULL) {
            fputs(" link to ", stdout);
            pvb_cli_fputs_escaped(e->link_target, stdout);
        }
        if ((e->flags & PVB_ENTRY_F_CHANGED_WHILE_READ) != 0) {
            fputs("  [changed while read]", stdout);
        }
        if ((e->flags & PVB_ENTRY_F_READ_ERROR) != 0) {
            fputs("  [unreadable: no data]", stdout);
        }
        fputc('\n', stdout);
    }
    return PVB_OK;
}

static json_t *entry_json(const pvb_entry *e)
{
    json_t *o = json_object();
    json_t *xattrs = NULL;
    char mode[11], mtime[48], when[32];
    int bad = 0;

    if (o == NULL) {
        return NULL;
    }
    pvb_cli_mode_string(e->type, e->mode, mode);
    pvb_cli_format_time(e->mtime_sec, when, sizeof when);
    /* "2026-12-04 16:11:58" -> RFC 3339 with nanoseconds, without the int64 ns range limit */
    if (when[0] != '@' && strlen(when) == 19) {
        when[10] = 'T';
        snprintf(mtime, sizeof mtime, "%s.%09luZ", when, (unsigned long)e->mtime_nsec);
    } else {
        snprintf(mtime, sizeof mtime, "%s", when);
    }
    bad |= pvb_cli_json_set_path(o, "path", e->path);
    bad |= pvb_cli_json_set(o, "type", json_string(pvb_cli_entry_type_name(e->type)));
    bad |= pvb_cli_json_set(o, "mode", json_integer((json_int_t)(e->mode & 07777u)));
    bad |= pvb_cli_json_set(o, "mode_string", json_string(mode));
    bad |= pvb_cli_json_set(o, "uid", json_integer((json_int_t)e->uid));
    bad |= pvb_cli_json_set(o, "gid", json_integer((json_int_t)e->gid));
    if (e->uname != NULL) {
        bad |= pvb_cli_json_set(o, "uname", pvb_cli_json_str(e->uname));
    }
    if (e->gname != NULL) {
        bad |= pvb_cli_json_set(o, "gname", pvb_cli_json_str(e->gname));
    }
    bad |= pvb_cli_json_set(o, "size", pvb_cli_json_u64(e->size));
    bad |= pvb_cli_json_set(o, "mtime", json_string(mtime));
    bad |= pvb_cli_json_set(o, "nlink", json_integer((json_int_t)e->nlink));
    if (e->link_target != NULL) {
        bad |= pvb_cli_json_set_path(o, "link_target", e->link_target);
    }
    if (e->type == PVB_ENTRY_CHR || e->type == PVB_ENTRY_BLK) {
        dev_t rdev = (dev_t)e->rdev;
        bad |= pvb_cli_json_set(o, "rdev_major", json_integer((json_int_t)major(rdev)));
        bad |= pvb_cli_json_set(o, "rdev_minor", json_integer((json_int_t)minor(rdev)));
    }
    if (e->acl_text != NULL) {
        bad |= pvb_cli_json_set(o, "acl", pvb_cli_json_str(e->acl_text));
    }
    if (e->n_xattrs > 0) {
        xattrs = json_array();
        for (size_t x = 0; xattrs != NULL && x < e->n_xattrs; x++) {
            bad |= pvb_cli_json_append(xattrs, pvb_cli_json_str(e->xattrs[x].name));
        }
        bad |= pvb_cli_json_set(o, "xattrs", xattrs);
    }
    if (e->n_extents > 0) {
        bad |= pvb_cli_json_set(o, "sparse", json_true());
    }
    if (e->fflags != 0) {
        bad |= pvb_cli_json_set(o, "fflags", pvb_cli_json_u64(e->fflags));
    }
    bad |= pvb_cli_json_set(o, "blocks", pvb_cli_json_u64(e->n_blocks));
    if ((e->flags & PVB_ENTRY_F_CHANGED_WHILE_READ) != 0) {
        bad |= pvb_cli_json_set(o, "changed_while_read", json_true());
    }
    if ((e->flags & PVB_ENTRY_F_READ_ERROR) != 0) {
        bad |= pvb_cli_json_set(o, "read_error", json_true());
    }
    if (bad != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int print_json(const pvb_tree *t, const char *prefix, pvb_error *err)
{
    size_t prefix_len = strlen(prefix);
    json_t *arr = json_array();
    int bad = arr == NULL ? -1 : 0;
    int rc;

    for (size_t entry_index = 0; entry_index < t->n && bad == 0; entry_index++) {
        if (under(t->entries[entry_index].path, prefix, prefix_len)) {
            bad |= pvb_cli_json_append(arr, entry_json(&t->entries[entry_index]));
        }
    }
    if (bad != 0) {
        json_decref(arr);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    rc = pvb_cli_json_print(arr, err);
    json_decref(arr);
    return rc;
}

int pvb_cli_cmd_ls(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"volume", required_argument, NULL, OPT_VOLUME},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    ls_args a = {NULL, false};
    pvb_cli_repo r = {NULL, NULL};
    pvb_snapshot snap;
    pvb_tree tree = {NULL, 0};
    pvb_error err;
    char *prefix = NULL;
    int first_arg = 0;
    int code;

    memset(&snap, 0, sizeof snap);
    memset(&err, 0, sizeof err);
    pvb_cli_common_init(&c, &pvb_cli_help_ls);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, ls_option, &a, &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg >= argc) {
        code = pvb_cli_usage(&c, "missing SNAPSHOT (an id, a unique prefix or 'latest')");
        goto out;
    }
    if (argc - first_arg > 2) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg + 2]);
        goto out;
    }
    if (pvb_cli_snapshot_path(first_arg + 1 < argc ? argv[first_arg + 1] : "", &prefix, &err) !=
        PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK ||
        pvb_cli_resolve(r.repo, argv[first_arg], a.volume, &snap, &err) != PVB_OK ||
        pvb_tree_load(r.repo, &snap, &tree, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (prefix[0] != '\0' && pvb_tree_find(&tree, prefix) < 0) {
        char *shown = pvb_cli_escape(prefix, NULL);
        PVB_ERR(&err, PVB_E_NOT_FOUND, "'%s' is not in snapshot %.12s", shown != NULL ? shown : "?",
                snap.id);
        pvb_error_hint(&err, "paths are relative to the root of the snapshot; list it with "
                             "'pvbackup ls SNAPSHOT'");
        free(shown);
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (a.json) {
        if (print_json(&tree, prefix, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else {
        print_text(&tree, prefix);
    }
    code = PVB_EXIT_OK;
out:
    pvb_tree_clear(&tree);
    pvb_snapshot_clear(&snap);
    pvb_cli_repo_close(&r);
    free(prefix);
    return code;
}
