/* cmd_synth.c — `memfit synth`: write a random-weight LLaMA model. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char *usage_text =
    "usage: memfit synth -o OUT.gguf --dim D --layers L --heads H [--kv-heads K] --ff F\n"
    "                    --vocab V [--ctx N] [--type f16|f32|bf16|q8_0] [--seed S] [--vocab-from VOCAB.gguf]\n";

static bool synth_opt(int argc, char **argv, int *i, mf_synth_params *p, const char **out,
                      bool *bad) {
    const char *v = NULL;
    bool miss = false;
    struct { const char *name; int *dst; } ints[] = {
        {"--dim", &p->dim}, {"--layers", &p->n_layers}, {"--heads", &p->n_heads},
        {"--kv-heads", &p->n_kv_heads}, {"--ff", &p->n_ff}, {"--vocab", &p->n_vocab},
        {"--ctx", &p->n_ctx}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (cli_opt(argc, argv, i, ints[k].name, NULL, &v, &miss)) {
            if (miss || !cli_int(v, 1, 1 << 20, ints[k].dst)) *bad = true;
            return true;
        }
    if (cli_opt(argc, argv, i, "-o", "--output", &v, &miss)) *out = v;
    else if (cli_opt(argc, argv, i, "--vocab-from", NULL, &v, &miss)) p->vocab_from = v;
    else if (cli_opt(argc, argv, i, "--seed", NULL, &v, &miss)) {
        if (!miss && !cli_u64(v, &p->seed)) *bad = true;
    } else if (cli_opt(argc, argv, i, "--type", NULL, &v, &miss)) {
        p->type = v;
    } else return false;
    if (miss) *bad = true;
    return true;
}

int cmd_synth(int argc, char **argv) {
    mf_synth_params p = {.seed = 1};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        bool bad = false;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!synth_opt(argc, argv, &i, &p, &out, &bad))
            return cli_usage("synth", "unknown option '%s'", argv[i]);
        if (bad) return cli_usage("synth", "bad or missing value for '%s'", argv[i - 1 < 1 ? 1 : i]);
    }
    if (!out) return cli_usage("synth", "-o OUT.gguf is required");
    if (!p.n_kv_heads) p.n_kv_heads = p.n_heads;
    if (!p.dim || !p.n_layers || !p.n_heads || !p.n_ff || (!p.n_vocab && !p.vocab_from))
        return cli_usage("synth", "--dim, --layers, --heads, --ff and --vocab are required");
    if (mf_synth(&p, out) != MF_OK) return cli_fail("synth failed");
    fprintf(stderr, "memfit: wrote %s\n", out);
    return 0;
}
