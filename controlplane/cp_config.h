/*
 * cp_config.h - the daemon's settings: command-line flags and the config
 * file (DESIGN 9).  One `key = value` per line, `#` comments, keys are the
 * long flag names without the dashes; flags override the file.
 */
#ifndef CP_CONFIG_H
#define CP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cp_config {
    char *config;               /* --config FILE */
    char *data;                 /* --data DIR (default ./var) */
    char *listen;               /* --listen HOST:PORT (default 127.0.0.1:7700), "" = none */
    char *listen_tls;           /* --listen-tls HOST:PORT */
    char *tls_cert, *tls_key;   /* for the TLS listener */
    char *control;              /* --control PATH (default DATA/imfused.sock) */
    char *ca_file;              /* --ca-file FILE */
    char *io;                   /* --io kernel|dpdk */
    unsigned workers;           /* --workers N */
    uint64_t store_map_size;    /* --store-map-size SIZE (bytes; 0 = the store's default) */
    bool open_registration;     /* --open-registration */
    char *log_level;            /* --log-level LEVEL */
};

/*
 * Parse argv (then the config file it names, flags winning).  Returns 0, 1
 * when --help or --version was printed (exit 0), or negative with the exact
 * reason in why ("line 3: unknown key \"foo\"").  Unless it returns 0, nothing
 * is left in c to free.
 */
int cp_config_parse(struct cp_config *c, int argc, char **argv, char *why, size_t whysz);
void cp_config_free(struct cp_config *c);

#endif
