# LTL — a plain Makefile.
#   make run     install what is missing, build, run the default example
#   make test    install what is missing, build, run every test (Criterion) and a short fuzz run
#   make asan    the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz    a long libFuzzer run over the front end
#   make bench   benchmarks (separate from the tests)

BUILD   ?= build
CC      ?= cc
SAN     ?=
OPT     ?= -O2
LLVM_CONFIG ?= llvm-config-19
# Recursive: a fresh machine gets llvm-19-dev from `make deps` within the same `make` run.
LLVM_CFLAGS = $(shell $(LLVM_CONFIG) --cflags 2>/dev/null)

# Debian packages the project needs (build, tests, examples).
DEB_PACKAGES = build-essential pkg-config re2c lemon llvm-19-dev libcriterion-dev zlib1g-dev \
               libedit-dev libcjson-dev libxxhash-dev libpng-dev libonig-dev dataset-fashion-mnist \
               clang libclang-rt-14-dev vim-nox emacs-nox tmux openmpi-bin libopenmpi-dev

CFLAGS_BASE = -std=c17 -Wall -Wextra -Werror -g $(OPT) -D_GNU_SOURCE -Icompiler -Iruntime -I$(BUILD)/gen \
              -DLTL_STDLIB_DIR='"$(CURDIR)/stdlib"'
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN = -fsanitize=address,undefined
endif
CFLAGS  += $(CFLAGS_BASE) $(EDIT_CFLAGS)
EDIT_CFLAGS = $(shell pkg-config --cflags libedit 2>/dev/null)
LDLIBS  += -lm -lpthread -lz -lcjson -ledit -lpng16 -lxxhash

# Generated front end: re2c lexer and Lemon parser, never committed.
GEN_C   = $(BUILD)/gen/lexer.c $(BUILD)/gen/parser.c
COMPILER_SRC = $(filter-out compiler/main.c,$(wildcard compiler/*.c))
RUNTIME_SRC  = $(wildcard runtime/*.c)
LIB_OBJ = $(COMPILER_SRC:%.c=$(BUILD)/%.o) $(RUNTIME_SRC:%.c=$(BUILD)/%.o) \
          $(BUILD)/gen/lexer.o $(BUILD)/gen/parser.o
TEST_SRC = $(wildcard tests/test_*.c)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)
LTLC    = $(BUILD)/ltlc

.PHONY: golden-update all deps run run-only test check-tests asan fuzz fuzz-short fuzz-ckpt-short bench clean examples
all: $(LTLC)

# Install missing Debian packages (a fresh machine has no package lists: update first).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/gen/lexer.c: grammar/lexer.re $(BUILD)/gen/parser.h
	@mkdir -p $(@D)
	re2c -W --no-generation-date -o $@ $<

$(BUILD)/gen/parser.c $(BUILD)/gen/parser.h &: grammar/parser.y
	@mkdir -p $(BUILD)/gen
	cp $< $(BUILD)/gen/parser.y
	lemon -q -T/usr/share/lemon/lempar.c -d$(BUILD)/gen $(BUILD)/gen/parser.y

$(BUILD)/gen/parser.o: $(BUILD)/gen/parser.c
	$(CC) $(CFLAGS) -DNDEBUG -Wno-unused-variable -Wno-unused-parameter -c -o $@ $<

$(BUILD)/gen/lexer.o: $(BUILD)/gen/lexer.c
	$(CC) $(CFLAGS) -Wno-unused-label -c -o $@ $<

$(BUILD)/%.o: %.c $(BUILD)/gen/parser.h $(wildcard compiler/*.h runtime/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) -c -o $@ $<

$(BUILD)/libltl.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

LLVM_LIBS = $(shell $(LLVM_CONFIG) --ldflags) $(shell $(LLVM_CONFIG) --libs)
$(LTLC): $(BUILD)/compiler/main.o $(BUILD)/libltl.a
	$(CC) $(LDSAN) -o $@ $^ $(LLVM_LIBS) $(LDLIBS)

# `ltlc build` links programs with the runtime minus LLVM: the libltl objects that use no
# LLVM, plus compiler/prog/ (main and the table-driven steps). docs/build.md.
LLVM_OBJ = $(addprefix $(BUILD)/compiler/,llvm_jit.o llvm_gemm.o llvm_step.o llvm_step_kern.o repl.o build.o)
PROG_RT  = $(BUILD)/libltl_rt.a $(BUILD)/prog/prog_main.o $(BUILD)/prog/step_aot.o
$(BUILD)/libltl_rt.a: $(filter-out $(LLVM_OBJ),$(LIB_OBJ))
	rm -f $@ && ar rcs $@ $^
$(BUILD)/prog/%.o: compiler/prog/%.c compiler/prog/aot.h $(BUILD)/gen/parser.h $(wildcard compiler/*.h runtime/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) -Icompiler/prog -c -o $@ $<
$(BUILD)/compiler/build.o: CFLAGS += -DLTL_PROG_DIR='"$(abspath $(BUILD))"' -DLTL_PROG_INC='"$(CURDIR)/compiler/prog"' \
  -DLTL_PROG_LIBS='"$(LDSAN) -lm -lpthread -lz -lcjson -lpng16 -lxxhash"'
all check-tests: $(PROG_RT)

# The benchmarks' C programs (bench/step.sh, bench/cuda.sh), linked as ltlc is.
$(BUILD)/bench/step $(BUILD)/bench/cuda: $(BUILD)/bench/%: bench/%.c $(BUILD)/libltl.a $(wildcard compiler/*.h runtime/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) $(LDSAN) -o $@ $< $(BUILD)/libltl.a $(LLVM_LIBS) $(LDLIBS)

# One Criterion binary for all tests, so the run ends with one Synthesis line.
$(BUILD)/tests/run: $(TEST_OBJ) $(BUILD)/libltl.a
	$(CC) $(LDSAN) -o $@ $^ $(LLVM_LIBS) -lcriterion -lonig -lcjson $(LDLIBS)

$(BUILD)/tests/%.o: tests/%.c $(BUILD)/gen/parser.h $(wildcard compiler/*.h runtime/*.h tests/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) -DLTLC='"$(abspath $(LTLC))"' -DSRCDIR='"$(CURDIR)"' -c -o $@ $<

run: deps
	$(MAKE) run-only

# The default example: the Fashion-MNIST MLP, trained, then tested (runs/lightning_logs/).
run-only: $(LTLC)
	./$(LTLC) check examples/*.ltl
	./$(LTLC) run examples/fashion_mlp.ltl fit test

# Tests compile steps into a cache of their own, not the user's ~/.cache/ltl. accelerator =
# "auto" stays on the CPU (the tests compare with CPU results) unless LTL_CUDA_LIB is set.
check-tests: $(LTLC) $(BUILD)/tests/run
	cache=$$(mktemp -d) && XDG_CACHE_HOME=$$cache LTL_CUDA_LIB=$${LTL_CUDA_LIB:-/nonexistent/libcuda.so.1} \
	  ./$(BUILD)/tests/run --jobs 2; st=$$?; rm -rf $$cache; exit $$st

test: deps
	$(MAKE) check-tests
	$(MAKE) fuzz-short fuzz-ckpt-short

asan: deps
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp $(MAKE) BUILD=build-asan SAN=1 OPT=-O1 check-tests

# libFuzzer over the front end (clang), seeded from the examples.
FUZZ_FLAGS = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 -std=c17 -D_GNU_SOURCE -Icompiler -I$(BUILD)/fuzz/gen
$(BUILD)/fuzz/fuzz_front: tests/fuzz/fuzz_front.c $(COMPILER_SRC) grammar/lexer.re grammar/parser.y
	$(MAKE) BUILD=$(BUILD)/fuzz $(BUILD)/fuzz/gen/lexer.c $(BUILD)/fuzz/gen/parser.c
	clang $(FUZZ_FLAGS) -Wno-unused-variable -DNDEBUG -o $@ tests/fuzz/fuzz_front.c $(FUZZ_SRC) \
	  $(BUILD)/fuzz/gen/lexer.c $(BUILD)/fuzz/gen/parser.c -lm
FUZZ_SRC = $(filter compiler/util.c compiler/diag.c compiler/ast.c compiler/parse.c compiler/print.c,$(COMPILER_SRC))

fuzz-short: $(BUILD)/fuzz/fuzz_front
	@mkdir -p $(BUILD)/fuzz/corpus && cp examples/*.ltl stdlib/*.ltl tests/frontend/*.ltl $(BUILD)/fuzz/corpus/ 2>/dev/null; \
	./$(BUILD)/fuzz/fuzz_front -dict=tests/fuzz/ltl.dict -max_total_time=30 -max_len=4096 -timeout=5 $(BUILD)/fuzz/corpus 2>$(BUILD)/fuzz/log.txt \
	  && echo "fuzz: 30 s, no crash" || { tail -50 $(BUILD)/fuzz/log.txt; exit 1; }

# libFuzzer over the checkpoint reader (runtime/ckpt.c).
$(BUILD)/fuzz/fuzz_ckpt: tests/fuzz/fuzz_ckpt.c runtime/ckpt.c runtime/rt.h
	@mkdir -p $(@D)
	clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 -std=c17 -D_GNU_SOURCE \
	  -Iruntime -o $@ tests/fuzz/fuzz_ckpt.c runtime/ckpt.c -lcjson

CKPT_FUZZ = ./$(BUILD)/fuzz/fuzz_ckpt -dict=tests/fixtures/ckpt/fuzz.dict -max_len=4096 -timeout=5 \
	  $(BUILD)/fuzz/ckpt_corpus tests/fixtures/ckpt/seeds
fuzz-ckpt-short: $(BUILD)/fuzz/fuzz_ckpt
	@mkdir -p $(BUILD)/fuzz/ckpt_corpus; \
	$(CKPT_FUZZ) -max_total_time=30 2>$(BUILD)/fuzz/ckpt_log.txt \
	  && echo "fuzz ckpt: 30 s, no crash" || { tail -50 $(BUILD)/fuzz/ckpt_log.txt; exit 1; }

fuzz: $(BUILD)/fuzz/fuzz_front $(BUILD)/fuzz/fuzz_ckpt
	@mkdir -p $(BUILD)/fuzz/ckpt_corpus; $(CKPT_FUZZ) -max_total_time=$${FUZZ_TIME:-600}
	@mkdir -p $(BUILD)/fuzz/corpus && cp examples/*.ltl stdlib/*.ltl tests/frontend/*.ltl $(BUILD)/fuzz/corpus/ 2>/dev/null; \
	./$(BUILD)/fuzz/fuzz_front -dict=tests/fuzz/ltl.dict -max_total_time=$${FUZZ_TIME:-600} -max_len=65536 $(BUILD)/fuzz/corpus

# bench/compare.sh: LTL against PyTorch eager, torch.compile and Lightning (bench/RESULTS.md);
# it installs them from PyPI into bench/.venv itself (see the script for its BENCH_* settings).
DEB_PACKAGES += python3-venv
bench: deps
	$(MAKE) $(LTLC)
	bench/frontend.sh $(LTLC)
	bench/trainer.sh $(LTLC)
	BUILD=$(BUILD) bench/step.sh
	BUILD=$(BUILD) bench/gemm.sh
	bench/ddp.sh $(LTLC)
	ACCEL=cuda bench/ddp.sh $(LTLC)
	BUILD=$(BUILD) bench/cuda.sh
	bench/compare.sh $(LTLC)

# Trains every example and prints what each reached (EXAMPLES_FLAGS="--trainer.max_epochs=1" to be quick).
examples: deps
	$(MAKE) $(LTLC)
	bench/examples.sh $(LTLC)

# Regenerates the expected output of tests/frontend/ (review the diff before committing).
golden-update: $(LTLC)
	tests/frontend/update.sh

clean:
	rm -rf build build-asan
