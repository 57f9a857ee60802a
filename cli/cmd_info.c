/* cmd_info.c — `memfit info MODEL`: architecture, hyperparameters, parameter
 * count, the tensor table and the bytes per type. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void print_hparams(const mf_model_info *in) {
    printf("format        %s\n", in->file_format);
    printf("architecture  %s\n", in->arch);
    printf("vocab         %d (tokenizer: %s)\n", in->n_vocab, in->tokenizer);
    printf("dim           %d\n", in->dim);
    printf("layers        %d\n", in->n_layers);
    printf("heads         %d (KV heads %d, head size %d)\n", in->n_heads, in->n_kv_heads,
           in->head_dim);
    printf("ffn           %d\n", in->n_ff);
    printf("context       %d\n", in->n_ctx_train);
    printf("rope          dims %d, freq_base %g\n", in->rope_dim, in->rope_base);
    printf("rms eps       %g\n", in->norm_eps);
    printf("embeddings    %s\n", in->tied_embeddings ? "tied (no output.weight)" : "untied");
    printf("parameters    %llu (%.3f B)\n", (unsigned long long)in->n_params,
           (double)in->n_params / 1e9);
    printf("tensor bytes  %llu (%.2f MiB)\n\n", (unsigned long long)in->n_bytes,
           (double)in->n_bytes / 1048576.0);
}

typedef struct { const char *name; uint64_t bytes, n; } type_total;

int cmd_info(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: memfit info MODEL [-z TOKENIZER]\n");
        return argc < 2;
    }
    mf_model_params mp = {0};
    if (argc >= 4 && !strcmp(argv[2], "-z")) mp.tokenizer_path = argv[3];
    mf_model *m;
    if (mf_model_load(argv[1], &mp, &m) != MF_OK) return cli_fail("cannot load model");
    mf_model_info in;
    mf_model_get_info(m, &in);
    print_hparams(&in);
    type_total by_type[40];
    int n_types = 0;
    printf("%-36s %-24s %-8s %12s\n", "tensor", "shape", "type", "bytes");
    for (int i = 0; i < in.n_tensors; i++) {
        mf_tensor_info t;
        mf_model_tensor(m, i, &t);
        char shape[64];
        int o = snprintf(shape, sizeof shape, "[%lld", (long long)t.ne[0]);
        for (int d = 1; d < t.n_dims && o < (int)sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, ", %lld", (long long)t.ne[d]);
        if (o < (int)sizeof shape) snprintf(shape + o, sizeof shape - (size_t)o, "]");
        printf("%-36s %-24s %-8s %12llu\n", t.name, shape, t.type_name,
               (unsigned long long)t.n_bytes);
        int k = 0;
        while (k < n_types && strcmp(by_type[k].name, t.type_name)) k++;
        if (k == n_types && n_types < 40) by_type[n_types++] = (type_total){t.type_name, 0, 0};
        if (k < n_types) {
            by_type[k].bytes += t.n_bytes;
            by_type[k].n++;
        }
    }
    printf("\n%-8s %8s %16s\n", "type", "tensors", "bytes");
    for (int k = 0; k < n_types; k++)
        printf("%-8s %8llu %16llu (%.2f MiB)\n", by_type[k].name,
               (unsigned long long)by_type[k].n, (unsigned long long)by_type[k].bytes,
               (double)by_type[k].bytes / 1048576.0);
    mf_model_free(m);
    return 0;
}
