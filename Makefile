# libasync build.  `make` builds the libraries, demos, tests and benchmarks;
# `make demo` and `make test` first install missing Debian packages.
#
#   SANITIZE=address,undefined | thread   build and run everything under it
#   CORO=ucontext                         glibc ucontext instead of the asm switch
#   COVERAGE=1                            gcov instrumentation (see `make coverage`)
#   PREFIX=/usr/local DESTDIR=            for `make install`
#
# The plain build writes lib/libasync.{a,so}, demos/<job>/<prog>, tests/bin/;
# sanitizer, ucontext and coverage builds go to build/<variant>/ so they never
# mix.  Every compile writes a .d file beside its object (-MMD -MP), so
# touching a header rebuilds exactly the objects that include it.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
CORO    ?= asm
SANITIZE ?=
COVERAGE ?=
# The version lives in include/async/common.h; before 1.0 the ABI may change
# with every minor version, so the soname is libasync.so.MAJOR.MINOR.
VERSION := $(shell sed -n 's/^\#define ASYNC_VERSION "\(.*\)"/\1/p' include/async/common.h)
SOVERSION := $(basename $(VERSION))
ARCH    := $(shell uname -m)

comma := ,
VARIANT := $(subst $(comma),-,$(SANITIZE))$(if $(filter ucontext,$(CORO)),-ucontext)$(if $(COVERAGE),-coverage)
ifeq ($(VARIANT),)
OUT := .
OBJ := build/obj
else
OUT := build/$(patsubst -%,%,$(VARIANT))
OBJ := $(OUT)/obj
endif

PKGS      := libcurl openssl jansson libcares zlib libbrotlidec libzstd
DEMO_PKGS := libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
DEMO_PKG_LIBS := $(shell pkg-config --libs $(DEMO_PKGS) 2>/dev/null)
CRITERION_LIBS := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

WARN    := -Wall -Wextra -Wstrict-prototypes -Werror
ifneq ($(COVERAGE),)
# No optimisation, so that lines and branches map one to one onto the source.
OPT     ?= -O0 -g
else
OPT     ?= -O2 -g
endif
DEPFLAGS := -MMD -MP
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(DEPFLAGS) -Iinclude $(PKG_CFLAGS) $(CFLAGS)
LIB_CFLAGS := $(CFLAGS_ALL) -fPIC -fvisibility=hidden -DASYNC_BUILDING -Ilib
ifeq ($(CORO),ucontext)
LIB_CFLAGS += -DASYNC_CORO_UCONTEXT
CFLAGS_ALL += -DASYNC_CORO_UCONTEXT
endif
ifneq ($(SANITIZE),)
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
ifneq ($(findstring undefined,$(SANITIZE)),)
SAN_FLAGS += -fno-sanitize-recover=undefined
endif
CFLAGS_ALL += $(SAN_FLAGS)
LIB_CFLAGS += $(SAN_FLAGS)
LDFLAGS += $(SAN_FLAGS)
endif
ifneq ($(COVERAGE),)
# Atomic counter updates: the library's threads and forked workers update the
# same counters, and plain increments lose counts (gcov then reads negative
# branch counts and gcovr refuses the data).  ASYNC_COVERAGE lets code whose
# processes end with _exit() (pool workers, forked children) call
# __gcov_dump() first, or their counts are lost.
COV_FLAGS := --coverage -fprofile-update=atomic -DASYNC_COVERAGE
CFLAGS_ALL += $(COV_FLAGS)
LIB_CFLAGS += $(COV_FLAGS)
LDFLAGS += $(COV_FLAGS)
endif
LIBS    := -lev $(PKG_LIBS) -lpthread -lrt -lm
APPLIBS := $(LIBS) $(DEMO_PKG_LIBS) -lcsv

# --- the library -----------------------------------------------------------
# One folder per module (docs/architecture.md); lib/mpi/ is libasync-mpi.
LIB_SRCS := $(wildcard lib/core/*.c lib/exec/*.c lib/exec/procpool/*.c lib/http/*.c lib/ipc/*.c lib/net/*.c)
LIB_ASM  := $(if $(filter asm,$(CORO)),$(wildcard lib/core/coro_$(ARCH).S))
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJ)/%.o) $(LIB_ASM:%.S=$(OBJ)/%.o)
STATIC   := $(OUT)/lib/libasync.a
SHARED   := $(OUT)/lib/libasync.so

# --- demos: demos/<job>/<prog>.c is a program; demos/<job>/common/*.c and
# demos/common/*.c are linked into every program of that job. -------------
DEMO_MAINS := $(wildcard demos/*/*.c)
DEMO_SHARED := $(wildcard demos/common/*.c)
DEMO_BINS  := $(patsubst %.c,$(OUT)/%,$(filter-out demos/common/%,$(DEMO_MAINS)))
demo_common = $(patsubst %.c,$(OBJ)/%.o,$(wildcard demos/$(1)/common/*.c) $(DEMO_SHARED))

# --- tests and benchmarks --------------------------------------------------
TEST_SRCS := $(wildcard tests/test-*.c)
TEST_BINS := $(patsubst tests/%.c,$(OUT)/tests/bin/%,$(TEST_SRCS))
SUPPORT_OBJS := $(patsubst %.c,$(OBJ)/%.o,$(wildcard tests/support/*.c))
BENCH_SRCS := $(wildcard tests/bench/bench-*.c)
BENCH_BINS := $(patsubst tests/bench/%.c,$(OUT)/tests/bench/bin/%,$(BENCH_SRCS))
ABS_OUT := $(abspath $(OUT))
APP_CFLAGS := $(CFLAGS_ALL) -DASYNC_OUT_DIR='"$(ABS_OUT)"' -DASYNC_SRC_DIR='"$(CURDIR)"'
# Criterion cannot start under ThreadSanitizer (its issue #274): thread-
# sanitized tests build against tests/shim, a stand-in with the same API.
# Tests and benchmarks may reach the library's private headers (-Ilib);
# demos may not.
TEST_CFLAGS := -Ilib
ifneq ($(findstring thread,$(SANITIZE)),)
TEST_CFLAGS := -Itests/shim -Ilib
CRITERION_LIBS :=
endif

.PHONY: all lib demos tests benches test bench demo deps install uninstall clean check-aarch64 \
	coverage check-build
all: lib demos tests benches
lib: $(STATIC) $(SHARED)
demos: $(DEMO_BINS)
tests: $(TEST_BINS)
benches: $(BENCH_BINS)

# Header dependencies come from the .d files the compiler writes (included
# below), not from rules listing every header: a change to one header
# rebuilds only what includes it.  Each object also depends on its own .d, so
# an object built before its .d existed (or whose .d was deleted) is rebuilt
# rather than trusted with unknown headers.
DEP_FILES := $(patsubst %.o,%.d,$(LIB_OBJS) $(SUPPORT_OBJS) \
    $(patsubst %.c,$(OBJ)/%.o,$(TEST_SRCS) $(DEMO_MAINS) $(wildcard demos/*/common/*.c) $(BENCH_SRCS)))
$(DEP_FILES): ;
$(OBJ)/lib/%.o: lib/%.c $(OBJ)/lib/%.d
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@
$(OBJ)/lib/%.o: lib/%.S $(OBJ)/lib/%.d
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@
$(OBJ)/tests/%.o: tests/%.c $(OBJ)/tests/%.d
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(APP_CFLAGS) -c $< -o $@
$(OBJ)/%.o: %.c $(OBJ)/%.d
	@mkdir -p $(@D)
	$(CC) $(APP_CFLAGS) -c $< -o $@
-include $(wildcard $(DEP_FILES))

$(STATIC): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(SHARED): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared -Wl,-soname,libasync.so.$(SOVERSION) $(LDFLAGS) -o $@ $^ $(LIBS)

# Programs link the static library so that they run from the tree.
# Objects made through pattern chains are kept, not deleted as intermediates.
.PRECIOUS: $(OBJ)/lib/%.o $(OBJ)/tests/%.o $(OBJ)/%.o
.SECONDEXPANSION:
$(DEMO_BINS): $(OUT)/demos/%: $(OBJ)/demos/%.o $$(call demo_common,$$(firstword $$(subst /, ,$$*))) $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(APPLIBS)
$(OUT)/tests/bin/%: $(OBJ)/tests/%.o $(SUPPORT_OBJS) $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(APPLIBS) $(CRITERION_LIBS)
# Benchmarks share the tests' loopback port helpers (nothing else of
# tests/support: the rest links Criterion).
$(OUT)/tests/bench/bin/%: $(OBJ)/tests/bench/%.o $(OBJ)/tests/support/port.o $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(APPLIBS) $(BENCH_LIBS_$*)

BENCH_LIBS_bench-tasks :=
BENCH_LIBS_bench-executor := -luv
BENCH_LIBS_bench-net := -luv
# bench-map's OpenMP baseline: gcc's libgomp (Debian's libgcc-12-dev, which gcc depends on).
$(OBJ)/tests/bench/bench-map.o: APP_CFLAGS += -fopenmp
BENCH_LIBS_bench-map := -fopenmp

# --- MPI backend (owner: mpi) ------------------------------------------------
# libasync-mpi.{a,so} is libasync plus lib/mpi/ (the backend needs the
# executor's internals, which libasync.so hides), so programs that use MPI
# link it instead of libasync and the others never link MPI.  Open MPI's
# libevent goes before libev on every MPI link line: Debian's libev.so
# exports libevent-compatible symbols (event_add, ...) that would otherwise
# override Open MPI's own and crash MPI_Init (docs/mpi.md).
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
MPI_LINK   := $(MPI_LIBS) -Wl,--push-state,--no-as-needed -levent_core -levent_pthreads -Wl,--pop-state
MPI_SRCS   := $(wildcard lib/mpi/*.c)
MPI_OBJS   := $(MPI_SRCS:%.c=$(OBJ)/%.o)
MPI_STATIC := $(OUT)/lib/libasync-mpi.a
MPI_SHARED := $(OUT)/lib/libasync-mpi.so
# tests/mpi/work.c is no program: the work functions every MPI test
# program links (MPI_WORK).
MPI_PROGS  := $(patsubst tests/mpi/%.c,$(OUT)/tests/bin/mpi/%,$(filter-out tests/mpi/work.c,$(wildcard tests/mpi/*.c)))
MPI_WORK   := $(OBJ)/tests/mpi/work.o
# Named as a target so that the programs' pattern rule below applies (make
# takes a pattern rule only if its prerequisites exist or are targets).
$(MPI_WORK): tests/mpi/work.c
ifneq ($(MPI_LIBS),)
lib: $(MPI_STATIC) $(MPI_SHARED)
tests: $(MPI_PROGS)
endif
MPI_DEPS   := $(MPI_OBJS:.o=.d) $(patsubst tests/mpi/%.c,$(OBJ)/tests/mpi/%.d,$(wildcard tests/mpi/*.c))
$(MPI_DEPS): ;
-include $(wildcard $(MPI_DEPS))
$(OBJ)/lib/mpi/%.o: lib/mpi/%.c $(OBJ)/lib/mpi/%.d
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) $(MPI_CFLAGS) -c $< -o $@
# The MPI test programs may speak the backend's wire format (mpi_internal.h).
$(OBJ)/tests/mpi/%.o: tests/mpi/%.c $(OBJ)/tests/mpi/%.d
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(APP_CFLAGS) $(MPI_CFLAGS) -c $< -o $@
$(MPI_STATIC): $(LIB_OBJS) $(MPI_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^
$(MPI_SHARED): $(LIB_OBJS) $(MPI_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared -Wl,-soname,libasync-mpi.so.$(SOVERSION) $(LDFLAGS) -o $@ $^ $(MPI_LINK) $(LIBS)
# MPI test programs export their symbols so that an unregistered work
# function can be named in its error message (dladdr).
$(OUT)/tests/bin/mpi/%: $(OBJ)/tests/mpi/%.o $(MPI_WORK) $(MPI_STATIC)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $^ $(MPI_LINK) $(APPLIBS)
$(OUT)/tests/bin/test-mpi: | $(MPI_PROGS)
$(OUT)/tests/bin/test-mpi-hosts: | $(MPI_PROGS)
$(OUT)/tests/bin/test-mpi-failures: | $(MPI_PROGS)
$(OUT)/tests/bin/test-mpi-limits: | $(MPI_PROGS)
# The lab demo's --mode mpi: with Open MPI the lab links libasync-mpi (its
# mpi.c is built with LAB_WITH_MPI) and exports its symbols, as the MPI tests do;
# without, it links libasync alone and refuses the mode.  libasync-mpi.a
# holds the same objects as libasync.a, so both on the line is harmless.
LAB_BIN := $(OUT)/demos/lab/lab
ifneq ($(MPI_LIBS),)
$(OBJ)/demos/lab/common/mpi.o: APP_CFLAGS += -DLAB_WITH_MPI
$(LAB_BIN): $(MPI_STATIC)
$(LAB_BIN): APPLIBS := $(MPI_LINK) $(APPLIBS)
$(LAB_BIN): LDFLAGS += -rdynamic
$(OUT)/tests/bin/test-lab: | $(LAB_BIN)
endif
$(OUT)/tests/bench/bin/bench-mpi: $(OBJ)/tests/bench/bench-mpi.o $(MPI_STATIC)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $^ $(MPI_LINK) $(APPLIBS)
install-mpi: $(MPI_STATIC) $(MPI_SHARED)
	install -d $(DESTDIR)$(PREFIX)/include/async $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/async/mpi.h $(DESTDIR)$(PREFIX)/include/async/
	install -m 644 $(MPI_STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(MPI_SHARED) $(DESTDIR)$(PREFIX)/lib/libasync-mpi.so.$(VERSION)
	ln -sf libasync-mpi.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libasync-mpi.so.$(SOVERSION)
	ln -sf libasync-mpi.so.$(SOVERSION) $(DESTDIR)$(PREFIX)/lib/libasync-mpi.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' async-mpi.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/async-mpi.pc
clean: clean-mpi
clean-mpi:
	rm -f lib/libasync-mpi.a lib/libasync-mpi.so
.PHONY: install-mpi clean-mpi
# --- end of the MPI block -----------------------------------------------------

# --- the commands a user runs -----------------------------------------------
deps:
	@scripts/install-deps

# `make test` checks the system packages, builds everything, then runs each
# test binary; TESTS=name[,name] runs a subset.
# A binary whose source is gone (a test file split or renamed) is deleted
# first, so that run-tests never runs a stale copy.
test: deps
	@$(MAKE) --no-print-directory all
	@rm -f $(filter-out $(TEST_BINS),$(wildcard $(OUT)/tests/bin/test-*))
	@scripts/run-tests $(OUT)/tests/bin $(TESTS)

# The suite on a gcov build in build/coverage/, then line and branch coverage
# of lib/ (gcovr; the per-file table goes to build/coverage/coverage.txt).
# Exits with the suite's status once the figures are printed.
coverage: deps
	@$(MAKE) --no-print-directory COVERAGE=1 all
	@find build/coverage -name '*.gcda' -delete
	@rm -f $(filter-out $(patsubst $(OUT)/%,build/coverage/%,$(TEST_BINS)),$(wildcard build/coverage/tests/bin/test-*))
	@scripts/run-tests build/coverage/tests/bin $(TESTS); rc=$$?; \
	    scripts/coverage-report build/coverage || rc=1; exit $$rc

# Checks of the build itself: run-tests' accounting on a fixture, header
# dependencies that are exact (touch a header, only its includers rebuild),
# the architecture's arrows (docs/architecture.md: modules include and call
# only downward, no call cycle across modules), and an install that a program
# builds against with pkg-config (plain builds only).
check-build:
	@scripts/check-run-tests
	@$(MAKE) --no-print-directory -s lib
	@scripts/check-arrows $(OBJ)
	@$(if $(SANITIZE)$(COVERAGE),true,scripts/check-install)
	@scripts/check-deps $(if $(SANITIZE),SANITIZE=$(SANITIZE)) $(if $(filter ucontext,$(CORO)),CORO=ucontext)

# What make bench printed, for scripts/bench-table (build/bench-record.txt).
BENCH_RECORD := $(patsubst %/obj,%,$(OBJ))/bench-record.txt
bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-benches $(OUT)/tests/bench/bin "$(BENCHES)" $(BENCH_RECORD)

# The main job on the built-in data (writes async.json), the lab's CPU jobs
# (soln.json and charts), and the meeting at a tenth of its delays.
demo: deps
	@$(MAKE) --no-print-directory all
	$(OUT)/demos/brewery/brewery --json async.json
	$(OUT)/demos/lab/lab all --plot lab-charts --soln soln.json
	$(OUT)/demos/meeting/meeting --scale 0.1

# The aarch64 context switch, cross-compiled and run under qemu-user (needs
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user; not part of CI).
check-aarch64:
	@mkdir -p build/aarch64
	aarch64-linux-gnu-gcc -std=c11 -D_GNU_SOURCE -O2 $(WARN) -static -Iinclude -Ilib -idirafter /usr/include \
	    tests/cross/coro-check.c lib/core/coro.c lib/core/stack.c lib/core/common.c lib/core/coro_aarch64.S -o build/aarch64/coro-check
	qemu-aarch64 build/aarch64/coro-check

install: lib
	install -d $(DESTDIR)$(PREFIX)/include/async $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/async.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/async/*.h $(DESTDIR)$(PREFIX)/include/async/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/libasync.so.$(VERSION)
	ln -sf libasync.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libasync.so.$(SOVERSION)
	ln -sf libasync.so.$(SOVERSION) $(DESTDIR)$(PREFIX)/lib/libasync.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' async.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/async.pc

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/include/async $(DESTDIR)$(PREFIX)/include/async.h
	rm -f $(DESTDIR)$(PREFIX)/lib/libasync.* $(DESTDIR)$(PREFIX)/lib/pkgconfig/async.pc

clean:
	rm -rf build lib/libasync.a lib/libasync.so tests/bin tests/bench/bin
	rm -f $(patsubst %.c,%,$(filter-out demos/common/%,$(DEMO_MAINS)))

# Rules from other parts of the tree are included below this line (the fuzz
# targets: tests/fuzz/fuzz.mk).
-include tests/fuzz/fuzz.mk
