/* memfit.c — the command-line entry point: dispatch to a subcommand. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"run", cmd_run, "generate text from a prompt"},
    {"info", cmd_info, "show a model's hyperparameters and tensor table"},
    {"logits", cmd_logits, "write all logits of a prompt (MFRF) for comparison"},
    {"perplexity", cmd_perplexity, "perplexity of a text file"},
    {"synth", cmd_synth, "write a random-weight model of any shape"},
    {"bench", cmd_bench, "prompt and generation speed (like llama-bench)"},
    {"batch", cmd_batch, "decode many prompts together (each weight read serves all)"},
    {"plan", cmd_plan, "what a run under --mem keeps resident and streams"},
    {"quantize", cmd_quantize, "convert a model's tensors to another type (q8_0, q4_k_m, ...)"},
    {"kld", cmd_kld, "KL divergence of a model's predictions from a base model's"},
};

static void log_to_stderr(mf_log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= MF_LOG_WARN) fprintf(stderr, "memfit: warning: %s\n", msg);
}

static int usage(FILE *f) {
    fprintf(f, "usage: memfit COMMAND [options]   (memfit COMMAND --help for options)\n\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].help);
    return f == stderr;
}

int main(int argc, char **argv) {
    mf_set_log(log_to_stderr, NULL);
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))
        return usage(stdout);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "memfit: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
