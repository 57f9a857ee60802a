# memfit — build, test, sanitize, fuzz.
#   make            libmemfit.a and ./memfit
#   make test       every unit and CLI test; ends with "N passed, N failed"
#   make sanitize   the same tests built with ASan + UBSan (clang)
#   make fuzz       libFuzzer targets in build/fuzz/ (clang)
CC      ?= cc
CFLAGS  ?= -std=c11 -O2 -g -Wall -Wextra -Wshadow $(EXTRA_CFLAGS)
CPPFLAGS = -D_GNU_SOURCE -Iinclude -Isrc
LDLIBS   = -lpcre2-8 -lm -lpthread
BUILD   ?= build

# Files named *_avx2.c hold the x86 SIMD kernels; only they get ISA flags and
# the library picks them at run time after checking the CPU.
ISA_avx2 = -mavx2 -mfma -mf16c
# *_avx512.c: installed only when the CPU has AVX-512 F, BW, VL and VNNI.
ISA_avx512 = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni

LIB_SRC  = $(sort $(wildcard src/*/*.c))
# x86 kernel files include immintrin.h: other targets (aarch64: NEON files,
# which compile to nothing on x86) leave them out
ifeq ($(filter x86_64% i686% i386%,$(shell $(CC) -dumpmachine)),)
LIB_SRC := $(filter-out %_avx2.c %_avx512.c,$(LIB_SRC))
endif
CLI_SRC  = $(sort $(wildcard cli/*.c))
TEST_SRC = $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC = $(sort $(wildcard tests/fuzz/fuzz_*.c))

LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN = $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
LIB      = $(BUILD)/libmemfit.a

.PHONY: all test sanitize fuzz clean bench
all: memfit

memfit: $(BUILD)/memfit
	cp $< $@

$(BUILD)/memfit: $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(LIB): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_avx2) -MMD -MP -c -o $@ $<

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_avx512) -MMD -MP -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c tests/unit/test.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

test: $(BUILD)/memfit $(TEST_BIN)
	@MEMFIT=$(BUILD)/memfit TEST_BIN_DIR=$(BUILD)/tests sh tests/run.sh

SAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# MF_SANITIZED tells tests that memory figures include ASan's shadow memory
sanitize:
	MF_SANITIZED=1 $(MAKE) CC=clang BUILD=build-san EXTRA_CFLAGS="$(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" test

FUZZ_FLAGS = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_BIN = $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
fuzz:
	$(MAKE) CC=clang BUILD=build-fuzz EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" build-fuzz/libmemfit.a
	$(MAKE) CC=clang BUILD=build-fuzz $(FUZZ_BIN)

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c build-fuzz/libmemfit.a
	clang $(CPPFLAGS) -std=c11 -O1 -g $(FUZZ_FLAGS) -o $@ $< build-fuzz/libmemfit.a $(LDLIBS)

bench: all
	sh bench/run.sh

clean:
	rm -rf build build-san build-fuzz memfit

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_avx2) -o $@ $< $(LIB) $(LDLIBS)

# The demo: a random model (with the Llama-2 vocabulary when ../shared is
# there) of about 110 MB, its plan under a 48 MiB budget, and text generated
# inside that budget (gibberish: random weights), with the measured peak.
DEMO_VOCAB = $(wildcard ../shared/models/llama-2-tiny-random.gguf)
DEMO_PROMPT = $(if $(DEMO_VOCAB),-p "Once upon a time",--ids 1,2,3)
demo: memfit
	./memfit synth -o build/demo.gguf --dim 512 --layers 8 --heads 8 --kv-heads 4 --ff 1536 \
	    $(if $(DEMO_VOCAB),--vocab-from $(DEMO_VOCAB),--vocab 32000) --seed 1
	./memfit plan -m build/demo.gguf --mem 48M -c 256 | head -9
	./memfit run -m build/demo.gguf $(DEMO_PROMPT) -n 24 --seed 1 -c 256 --mem 48M --stats
.PHONY: demo
