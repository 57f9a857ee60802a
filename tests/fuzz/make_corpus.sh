#!/bin/sh
# Build seed corpora for the fuzz targets from ../shared and a few tiny files
# made here: build-fuzz/corpus/gguf and build-fuzz/corpus/llama2c (ignored by git).
#   sh tests/fuzz/make_corpus.sh [SHARED_DIR [OUT_DIR]]
#   ./build-fuzz/fuzz_gguf -max_len=65536 -max_total_time=60 build-fuzz/corpus/gguf
# Seeds stay small (libFuzzer is slow on megabyte inputs): prefixes of the real
# files (headers, vocabulary arrays) and complete tiny files written by python3.
set -e
shared=${1:-../shared}
out=${2:-build-fuzz/corpus}
mkdir -p "$out/gguf" "$out/llama2c"
for f in "$shared"/models/stories260K.gguf "$shared"/models/synth-512-f16.gguf \
         "$shared"/models/quantized/synth-512-Q4_K_M.gguf "$shared"/vocab/ggml-vocab-gpt-2.gguf; do
    [ -f "$f" ] || continue
    b=$(basename "$f" .gguf)
    for n in 64 1024 16384 65536; do head -c $n "$f" > "$out/gguf/$b.$n"; done
done
[ -f "$shared/models/stories260K.bin" ] && head -c 4096 "$shared/models/stories260K.bin" > "$out/llama2c/stories260K.4096"
python3 - "$out" <<'PY'
import struct, sys
out = sys.argv[1]
def s(x): return struct.pack('<Q', len(x)) + x
# A complete tiny GGUF: a few value types, nested and string arrays, 2 tensors.
kv = s(b'general.architecture') + struct.pack('<I', 8) + s(b'llama')
kv += s(b'a.u32') + struct.pack('<II', 4, 7)
kv += s(b'a.strs') + struct.pack('<IIQ', 9, 8, 2) + s(b'x') + s(b'yz')
kv += s(b'a.nest') + struct.pack('<IIQ', 9, 9, 1) + struct.pack('<IQ', 5, 2) + struct.pack('<ii', -1, 2)
kv += s(b'a.f32') + struct.pack('<If', 6, 0.5)
ti = s(b't0') + struct.pack('<IQQIQ', 2, 4, 2, 0, 0)
ti += s(b't1') + struct.pack('<IQIQ', 1, 32, 8, 32)
hdr = b'GGUF' + struct.pack('<IQQ', 3, 2, 5) + kv + ti
hdr += b'\0' * (-len(hdr) % 32)
open(out + '/gguf/tiny.gguf', 'wb').write(hdr + bytes(range(32)) + bytes(34) + b'\0' * 30)
# A complete tiny llama2.c checkpoint: dim 8, hidden 12, 2 layers, 2 heads, 1 kv head,
# vocab 10 (negative: untied), seq_len 5.
dim, hid, L, nh, nkv, V, seq = 8, 12, 2, 2, 1, 10, 5
hs = dim // nh
n = V*dim + L*(dim + dim*dim + 2*dim*nkv*hs + dim*dim + dim + 3*dim*hid) + dim + 2*(seq*hs//2) + V*dim
open(out + '/llama2c/tiny-untied.bin', 'wb').write(struct.pack('<7i', dim, hid, L, nh, nkv, -V, seq) + struct.pack('<%df' % n, *range(n)))
# A tokenizer.bin with 4 tokens.
tok = struct.pack('<i', 5)
for sc, t in ((0.0, b'<unk>'), (-1.0, b''), (2.0, b'ab'), (3.0, b'xyz')):
    tok += struct.pack('<fi', sc, len(t)) + t
open(out + '/llama2c/tok4.bin', 'wb').write(tok)
PY
echo "seeds: $(ls "$out/gguf" | wc -l) gguf, $(ls "$out/llama2c" | wc -l) llama2c"
