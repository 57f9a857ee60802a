/* cmd_plan.c — `memfit plan`: what a run under --mem would hold and stream,
 * printed before anything big is loaded; `--measure` records this machine's
 * disk and memory bandwidth for the planner's cost model. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit plan -m MODEL --mem SIZE [-c CTX] [-b BATCH] [-t THREADS] [--kv-type T]\n"
    "       memfit plan -m MODEL --measure   (record disk/memory bandwidth for the cost model)\n";

int cmd_plan(int argc, char **argv) {
    cli_model_opts mo = {0};
    bool measure = false;
    for (int i = 1; i < argc; i++) {
        bool bad = false;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--measure")) measure = true;
        else if (!cli_model_opt(argc, argv, &i, &mo, &bad))
            return cli_usage("plan", "unknown option '%s'", argv[i]);
        if (bad) return cli_usage("plan", "bad or missing value for '%s'", argv[i]);
    }
    if (!mo.model) return cli_usage("plan", "-m MODEL is required");
    if (measure) {
        double disk, mem;
        if (mf_measure_machine(mo.model, &disk, &mem) != MF_OK) return cli_fail("measuring failed");
        printf("disk read %.2f GB/s (reading %s), memory read %.2f GB/s: recorded\n", disk,
               mo.model, mem);
        return 0;
    }
    if (!mo.mem) return cli_usage("plan", "--mem SIZE is required");
    mf_model_params mp = {.tokenizer_path = mo.tokenizer};
    mf_model *m;
    if (mf_model_load(mo.model, &mp, &m) != MF_OK) return cli_fail("cannot load model");
    mf_session_params sp = cli_session_params(&mo);
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    int rc = 0;
    if (!buf) rc = 1;
    else if (mf_plan_report(m, &sp, buf, cap) != MF_OK) rc = cli_fail("no plan fits");
    else fputs(buf, stdout);
    free(buf);
    mf_model_free(m);
    return rc;
}
