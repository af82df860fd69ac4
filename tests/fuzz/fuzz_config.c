/*
 * fuzz_config.c — libFuzzer target for broker/config*.c (YAML via libyaml,
 * then every field's checks).
 *
 * The configuration file is operator input rather than peer input, but it is
 * parsed by code that must reject anything without crashing. Each input is
 * written to one temporary file (created once) and loaded with
 * config_load(path, 0, NULL): no host lookups. Paths inside the file
 * (data_dir, key_file, secret_file) are only resolved, never created, at load.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[128];

static void cleanup(void)
{
    (void)unlink(path);
    (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/carehub-fuzz-config-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(path, sizeof path, "%s/carehub.yaml", dir);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f) != 0)
        abort();
    config_t *cfg = config_load(path, 0, NULL);
    config_destroy(&cfg);
    config_destroy(&cfg); /* twice is safe */
    return 0;
}
