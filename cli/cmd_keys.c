/*
 * cmd_keys.c — `walgate keys generate|show|rotate NAME`: the primary and secondary ed25519
 * key of an SSH tunnel, printed as authorized_keys lines.
 */
#include "cli/cli.h"
#include "keys/keys.h"

#include <stdio.h>
#include <string.h>

static void keys_usage(FILE *f)
{
    fprintf(f, "usage: walgate [-c FILE] keys generate NAME [--force] [--state-dir DIR]\n"
               "       walgate [-c FILE] keys show NAME [--long] [--state-dir DIR]\n"
               "       walgate [-c FILE] keys rotate NAME [--state-dir DIR]\n"
               "\n"
               "  --state-dir DIR    keys live in DIR/keys/NAME (no configuration file needed)\n");
}

static int print_key(const keys_key *k, bool with_fp)
{
    wg_buf line = {0};
    if (keys_key_authorized_line(k, &line) != 0) {
        wg_buf_free(&line);
        return -1;
    }
    if (with_fp) {
        char fp[96];
        if (keys_key_fingerprint(k, fp, sizeof(fp)) == 0)
            printf("# %s %s\n", keys_key_comment(k), fp);
    }
    printf("%s\n", line.data);
    wg_buf_free(&line);
    return 0;
}

static void print_pair(const keys_pair *kp, bool with_fp)
{
    print_key(kp->primary, with_fp);
    print_key(kp->secondary, with_fp);
}

int cmd_keys(int argc, char **argv, const cli_opts *opts)
{
    const char *verb = NULL, *name = NULL, *state_dir = NULL;
    bool force = false, long_fmt = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            keys_usage(stdout);
            return 0;
        } else if (strcmp(a, "--force") == 0) {
            force = true;
        } else if (strcmp(a, "--long") == 0 || strcmp(a, "-l") == 0) {
            long_fmt = true;
        } else if (strcmp(a, "--state-dir") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "walgate: --state-dir needs a directory\n");
                return 2;
            }
            state_dir = argv[i];
        } else if (a[0] == '-') {
            fprintf(stderr, "walgate: keys: unknown option %s\n", a);
            keys_usage(stderr);
            return 2;
        } else if (!verb) {
            verb = a;
        } else if (!name) {
            name = a;
        } else {
            fprintf(stderr, "walgate: keys: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!verb || !name) {
        keys_usage(stderr);
        return 2;
    }
    bool is_gen = strcmp(verb, "generate") == 0, is_show = strcmp(verb, "show") == 0,
         is_rot = strcmp(verb, "rotate") == 0;
    if (!is_gen && !is_show && !is_rot) {
        fprintf(stderr, "walgate: keys: unknown action %s (generate, show or rotate)\n", verb);
        return 2;
    }
    if ((force && !is_gen) || (long_fmt && !is_show)) {
        fprintf(stderr, "walgate: keys %s: %s is not an option of this action\n", verb,
                force ? "--force" : "--long");
        return 2;
    }

    cli_config *cfg = NULL;
    if (!state_dir) {
        cfg = cli_load_config_or_report(opts);
        if (!cfg)
            return 2;
        state_dir = cfg->state_dir;
        if (!cli_config_tunnel(cfg, name))
            fprintf(stderr, "walgate: warning: %s has no [tunnel %s] section\n", cfg->path, name);
    }

    wg_error err = {0};
    keys_pair kp = {0};
    int rc;
    if (is_gen)
        rc = keys_generate(state_dir, name, force, &kp, &err);
    else if (is_rot)
        rc = keys_rotate(state_dir, name, &kp, &err);
    else
        rc = keys_load(state_dir, name, &kp, &err);
    if (rc != 0) {
        cli_report(&err);
        cli_config_free(cfg);
        return 1;
    }
    print_pair(&kp, long_fmt);
    if (is_gen)
        fprintf(stderr, "walgate: add both lines to the bastion's authorized_keys for tunnel %s\n",
                name);
    else if (is_rot)
        fprintf(stderr,
                "walgate: rotated: the old secondary is now the primary. Add the new secondary "
                "line to the bastion's authorized_keys, then remove the old primary's line.\n");
    keys_pair_free(&kp);
    cli_config_free(cfg);
    return 0;
}
