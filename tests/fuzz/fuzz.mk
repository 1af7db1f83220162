# Fuzzing, included at the end of the Makefile.
#
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="lab-csv ipc-pipe"]
#       builds every target with clang's libFuzzer into build/fuzz/ and runs
#       each for FUZZ_SECONDS on tests/fuzz/corpus/<target>/ (new inputs are
#       added there); a crash, leak or timeout is written to
#       tests/fuzz/crashes/<target>/ and makes the run exit nonzero.
#   make fuzz-build      only builds the fuzzers
#   make fuzz-regress    replays every corpus and crash file as Criterion
#       tests built with $(CC) and the SANITIZE= in use; `make tests` builds
#       them as $(OUT)/tests/bin/test-fuzz-<target>, so `make test` runs them.
#
# The fuzz build never mixes with the others: clang, the library and the
# demo sources it needs compiled with -fsanitize=fuzzer-no-link,address,
# undefined into build/fuzz/obj, fuzzers in build/fuzz/bin.

FUZZ_TARGETS ?= server-route server-like lab-csv http-response ipc-pipe mpi-job
FUZZ_SECONDS ?= 60
# Per-input limit: a normal input takes milliseconds, so a slower one is a
# finding (the LIKE matcher's exponential patterns), not noise.
FUZZ_TIMEOUT ?= 10
FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_OBJ := $(FUZZ_DIR)/obj
FUZZ_ALL_TARGETS := server-route server-like lab-csv http-response ipc-pipe mpi-job

FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
            -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g $(WARN) -Iinclude $(PKG_CFLAGS) $(FUZZ_SAN)
FUZZ_LIB_CFLAGS := $(FUZZ_CFLAGS) -fPIC -fvisibility=hidden -DASYNC_BUILDING -Ilib \
                   $(if $(filter ucontext,$(CORO)),-DASYNC_CORO_UCONTEXT)
FUZZ_APP_CFLAGS := $(FUZZ_CFLAGS) -DASYNC_SRC_DIR='"$(CURDIR)"'
FUZZ_LIBS := $(LIBS) $(DEMO_PKG_LIBS) -lcsv

# The demo sources each harness may call into.  They go into an archive per
# target, so that the linker takes only the files the harness needs (and
# those files' needs): the demos are being split into more files.
FUZZ_DEMO_server-route := $(wildcard demos/brewery/common/server-*.c) \
                          demos/brewery/common/builtin-states.c
FUZZ_DEMO_server-like := $(FUZZ_DEMO_server-route)
FUZZ_DEMO_lab-csv := $(wildcard demos/lab/common/*.c)
FUZZ_INC_server-route := -Idemos/brewery/common
FUZZ_INC_server-like := -Idemos/brewery/common
FUZZ_INC_lab-csv := -Idemos/lab/common
# mpi-job: the MPI backend's two decoders and its registry, which need no
# MPI (the harness defines init.c's rank variables).
FUZZ_DEMO_mpi-job := lib/mpi/job_message.c lib/mpi/run.c lib/mpi/registry.c
FUZZ_INC_mpi-job := -Ilib
# libFuzzer options per target.  ipc-pipe: a message may be 1 GiB, whose
# buffer doubles to 2 GiB (never touched); the harness's own allocator
# check reports anything larger, before libFuzzer's malloc limit would.
FUZZ_OPTS_server-route := -dict=tests/fuzz/dict/server-route.dict
FUZZ_OPTS_server-like := -max_len=512
FUZZ_OPTS_http-response := -dict=tests/fuzz/dict/http-response.dict -max_len=8192
FUZZ_OPTS_ipc-pipe := -malloc_limit_mb=8192 -rss_limit_mb=4096

# Our own header list: the Makefile's may change.
FUZZ_HEADERS := include/async.h $(wildcard include/async/*.h)
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_OBJ)/%.o) $(LIB_ASM:%.S=$(FUZZ_OBJ)/%.o)
FUZZ_LIB := $(FUZZ_DIR)/lib/libasync.a
FUZZ_BINS := $(FUZZ_ALL_TARGETS:%=$(FUZZ_DIR)/bin/fuzz-%)
FUZZ_REGRESS_BINS := $(FUZZ_ALL_TARGETS:%=$(OUT)/tests/bin/test-fuzz-%)
fuzz_empty :=
fuzz_space := $(fuzz_empty) $(fuzz_empty)
fuzz_demo_objs = $(patsubst %.c,$(1)/%.o,$(FUZZ_DEMO_$(2)))
# $(call fuzz_demo_lib,OBJ-DIR,TARGET): the archive, or nothing.
fuzz_demo_lib = $(if $(FUZZ_DEMO_$(2)),$(1)/tests/fuzz/libdemo-$(2).a)

.PHONY: fuzz fuzz-build fuzz-regress

$(FUZZ_OBJ)/lib/%.o: lib/%.c $(FUZZ_HEADERS) $(wildcard lib/*/*_internal.h lib/*/*/*_internal.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_LIB_CFLAGS) -c $< -o $@
$(FUZZ_OBJ)/lib/%.o: lib/%.S
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_LIB_CFLAGS) -c $< -o $@
$(FUZZ_OBJ)/demos/%.o: demos/%.c $(FUZZ_HEADERS) $(wildcard demos/*/common/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_APP_CFLAGS) -c $< -o $@
$(FUZZ_OBJ)/tests/fuzz/fuzz-common.o: tests/fuzz/fuzz-common.c tests/fuzz/fuzz.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_APP_CFLAGS) -c $< -o $@
$(FUZZ_OBJ)/tests/fuzz/fuzz-%.o: tests/fuzz/fuzz-%.c tests/fuzz/fuzz.h $(FUZZ_HEADERS) \
                                 $(wildcard demos/*/common/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_APP_CFLAGS) $(FUZZ_INC_$*) -c $< -o $@
$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(FUZZ_OBJ)/tests/fuzz/libdemo-%.a: $$(call fuzz_demo_objs,$(FUZZ_OBJ),$$*)
	rm -f $@ && ar rcs $@ $^
$(FUZZ_DIR)/bin/fuzz-%: $(FUZZ_OBJ)/tests/fuzz/fuzz-%.o $(FUZZ_OBJ)/tests/fuzz/fuzz-common.o \
                        $$(call fuzz_demo_lib,$(FUZZ_OBJ),$$*) $(FUZZ_LIB)
	@mkdir -p $(@D)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(FUZZ_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TIMEOUT=$(FUZZ_TIMEOUT) \
	    $(foreach t,$(FUZZ_ALL_TARGETS),FUZZ_OPTS_$(subst -,_,$(t))='$(FUZZ_OPTS_$(t))') \
	    tests/fuzz/run-fuzz $(FUZZ_DIR)/bin $(FUZZ_TARGETS)

# --- the replay, with the compiler and sanitizers of the build in use -------
# Header dependencies from the compiler's .d files, as for every other
# object of the build (scripts/check-deps checks these too).
FUZZ_REGRESS_DEPS := $(patsubst %.c,$(OBJ)/%.d,$(wildcard tests/fuzz/*.c))
$(FUZZ_REGRESS_DEPS): ;
-include $(wildcard $(FUZZ_REGRESS_DEPS))
$(OBJ)/tests/fuzz/fuzz-%.o: tests/fuzz/fuzz-%.c $(OBJ)/tests/fuzz/fuzz-%.d
	@mkdir -p $(@D)
	$(CC) $(APP_CFLAGS) $(FUZZ_INC_$*) -c $< -o $@
# Explicit, so that it never depends on how the Makefile's own pattern rules
# find their prerequisites.
$(OBJ)/tests/fuzz/regress.o: tests/fuzz/regress.c $(OBJ)/tests/fuzz/regress.d
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(APP_CFLAGS) -c $< -o $@
$(OBJ)/tests/fuzz/libdemo-%.a: $$(call fuzz_demo_objs,$(OBJ),$$*)
	rm -f $@ && ar rcs $@ $^
$(FUZZ_REGRESS_BINS): $(OUT)/tests/bin/test-fuzz-%: $(OBJ)/tests/fuzz/regress.o \
        $(OBJ)/tests/fuzz/fuzz-%.o $(OBJ)/tests/fuzz/fuzz-common.o \
        $$(call fuzz_demo_lib,$(OBJ),$$*) $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(APPLIBS) $(CRITERION_LIBS)

# The replays are test binaries like the others: built by `make tests`, kept
# (not pruned as stale) and run by `make test`.
tests: $(FUZZ_REGRESS_BINS)
TEST_BINS += $(FUZZ_REGRESS_BINS)

fuzz-regress: $(FUZZ_REGRESS_BINS)
	@scripts/run-tests $(OUT)/tests/bin $(subst $(fuzz_space),$(comma),$(FUZZ_ALL_TARGETS:%=fuzz-%))
