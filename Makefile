# shmnet: one non-recursive build.
#   make            build/shmnetd build/shmnetctl build/libshmnet.so build/libshmnet_preload.so
#                   build/shmnet-run
#   make SAN=1      the same with ASan+UBSan, in build/san/
#   make test       install what is missing (apt-get, as root), build, run the whole suite
#   make run        demo: daemon on a TAP, kernel side in a namespace
#   make install    PREFIX=/usr/local DESTDIR=

CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
SAN     ?= 0

ifeq ($(SAN),1)
BUILD   ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
BUILD   ?= build
SANFLAGS :=
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -fPIC -I. -MMD -MP \
           -D_GNU_SOURCE $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS_D := -luring -lev -lconfig -lxdp -lbpf -lpthread -lm

CORE_SRC   := $(wildcard core/*.c) $(wildcard stack/*.c) $(filter-out %.bpf.c,$(wildcard nic/*.c))
CONF_SRC   := $(wildcard conf/*.c)
SHM_SRC    := $(wildcard shm/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLIENT_SRC := $(filter-out libclient/preload%.c,$(wildcard libclient/*.c))
PRELOAD_SRC:= $(wildcard libclient/preload*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
TESTLIB_SRC:= $(wildcard tests/lib/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

CORE_LIB   := $(BUILD)/libshmnet_core.a
DAEMON_LIB := $(BUILD)/libshmnetd.a
UNIT_BINS  := $(patsubst tests/unit/test_%.c,$(BUILD)/tests/unit_%,$(UNIT_SRC))

BINS := $(BUILD)/shmnetd $(BUILD)/shmnetctl $(BUILD)/libshmnet.so $(BUILD)/libshmnet_preload.so \
        $(BUILD)/shmnet-run

.PHONY: all test test-xdp-w2 unit integration fuzz run install clean deps check-format cppcheck soak bench bench-backends
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The af_xdp steering program: BPF bytecode, embedded into the core library (xdp_steer_obj.S).
BPF_OBJ := $(BUILD)/bpf/xdp_steer.bpf.o
$(BPF_OBJ): nic/xdp_steer.bpf.c nic/xdp_steer.h
	@mkdir -p $(dir $@)
	clang -O2 -g -target bpf -I. -I/usr/include/$(shell $(CC) -dumpmachine) -Wall -Werror -c $< -o $@

$(BUILD)/obj/nic/xdp_steer_obj.o: nic/xdp_steer_obj.S $(BPF_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -c -DXDP_STEER_OBJ='"$(BPF_OBJ)"' $< -o $@

$(CORE_LIB): $(call obj,$(CORE_SRC) $(CONF_SRC) $(SHM_SRC)) $(BUILD)/obj/nic/xdp_steer_obj.o
	@rm -f $@
	ar rcs $@ $^

# The daemon minus main(): unit tests and fuzz targets link its parts too.
$(DAEMON_LIB): $(call obj,$(filter-out daemon/main.c,$(DAEMON_SRC)))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/shmnetd: $(call obj,daemon/main.c) $(DAEMON_LIB) $(CORE_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_D)

$(BUILD)/shmnetctl: $(call obj,tools/shmnetctl.c)
	$(CC) $(LDFLAGS) -o $@ $^

# The launcher sits beside the library and shmnetctl it uses (in the build, as installed).
$(BUILD)/shmnet-run: tools/shmnet-run
	@mkdir -p $(dir $@)
	install -m 755 $< $@

$(BUILD)/libshmnet.so: $(call obj,$(CLIENT_SRC) $(SHM_SRC))
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libshmnet.so -o $@ $^ -lpthread

# The interposer's copy of libshmnet calls libc directly, never the interposers around it:
# its parts are linked into one object whose libc calls are renamed to shmnet_sys_*
# (see libclient/preload.c).
$(BUILD)/obj/libclient/shmnet_preload.o: $(call obj,$(CLIENT_SRC)) libclient/preload.syms
	ld -r -o $@.tmp $(call obj,$(CLIENT_SRC))
	objcopy --redefine-syms=libclient/preload.syms $@.tmp $@
	@rm -f $@.tmp

$(BUILD)/libshmnet_preload.so: $(call obj,$(PRELOAD_SRC) $(SHM_SRC)) $(BUILD)/obj/libclient/shmnet_preload.o
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libshmnet_preload.so -o $@ $^ -ldl -lpthread

$(BUILD)/tests/unit_%: $(call obj,tests/unit/test_%.c $(TESTLIB_SRC)) $(DAEMON_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcriterion $(LDLIBS_D)

# libshmnet is not in the core archive: its test links the library's parts.
$(BUILD)/tests/unit_libclient: $(call obj,$(CLIENT_SRC))

# ---- tests ----
deps:
	@tests/lib/install-deps.sh

unit: $(UNIT_BINS) progs

# Test programs (tests/progs/<name>.c -> $(BUILD)/tests/progs/<name>) and benchmark
# programs (bench/<name>.c -> $(BUILD)/bench/<name>), linked against $(BUILD)/libshmnet.so
# (found through the rpath). Each bench/*_bench.c is built twice: against libshmnet and, as
# *_bench_kernel, against the kernel's sockets (-DBENCH_KERNEL).
PROG_SRC   := $(wildcard tests/progs/*.c)
PROG_BINS  := $(patsubst tests/progs/%.c,$(BUILD)/tests/progs/%,$(PROG_SRC))
BENCH_SRC  := $(wildcard bench/*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC)) \
              $(patsubst bench/%.c,$(BUILD)/bench/%_kernel,$(wildcard bench/*_bench.c))
PROG_FLAGS  = $(CFLAGS) -Ilibclient -I.
PROG_LIBS   = -L$(BUILD) -lshmnet -Wl,-rpath,'$$ORIGIN/../..' -Wl,-rpath,'$$ORIGIN/..' -lpthread

.PHONY: progs
progs: $(PROG_BINS) $(BENCH_BINS)

$(BUILD)/tests/progs/%: tests/progs/%.c $(BUILD)/libshmnet.so
	@mkdir -p $(dir $@)
	$(CC) $(PROG_FLAGS) $(LDFLAGS) -o $@ $< $(PROG_LIBS)

$(BUILD)/bench/%_kernel: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_FLAGS) -DBENCH_KERNEL $(LDFLAGS) -o $@ $< -lpthread

$(BUILD)/bench/%: bench/%.c $(BUILD)/libshmnet.so
	@mkdir -p $(dir $@)
	$(CC) $(PROG_FLAGS) $(LDFLAGS) -o $@ $< $(PROG_LIBS)

# Benchmarks against the kernel (root: namespaces, TAP); markdown table on stdout.
bench: all progs
	bench/run.sh $(BUILD)

# Both NIC backends (TAP, AF_XDP) side by side with the kernel: bench/run.sh and bench/apps.sh.
bench-backends: all progs
	bench/backends.sh $(BUILD)

# TCP loss recovery under the fault injector, shmnet sending against the kernel sending
# over the same faulty TAP (about 6 minutes; not part of `make bench`).
.PHONY: bench-fault
bench-fault: all
	bench/fault.sh $(BUILD)

# The whole suite: unit tests and integration tests under the sanitizer build, the fuzz
# smoke run, and a final "N passed, N failed" line.
test: deps
	$(MAKE) all unit
	$(MAKE) SAN=1 all unit
	$(MAKE) fuzz-build
	tests/run.sh

# The integration suite on af_xdp with two workers (kept out of `make test` for time).
test-xdp-w2: deps
	$(MAKE) all unit
	$(MAKE) SAN=1 all unit
	tests/run.sh integration-xdp-w2

FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,build/fuzz/fuzz_%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -std=gnu11 -g -O1 -I. -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined
.PHONY: fuzz-build
fuzz-build: $(FUZZ_TARGETS)
FUZZ_DAEMON_SRC := $(wildcard daemon/client*.c) daemon/log.c tests/lib/tcptest.c
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(CORE_SRC) $(SHM_SRC) $(FUZZ_DAEMON_SRC) $(wildcard */*.h) build/obj/nic/xdp_steer_obj.o
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(CORE_SRC) $(SHM_SRC) $(FUZZ_DAEMON_SRC) build/obj/nic/xdp_steer_obj.o -luring -lxdp -lbpf -lm

# Long fuzzing by hand: make fuzz FUZZ_SECONDS=3600
FUZZ_SECONDS ?= 600
fuzz: fuzz-build
	@for f in $(FUZZ_TARGETS); do mkdir -p build/fuzz/corpus-$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus-$$(basename $$f) tests/fuzz/seeds/$$(basename $$f) || exit 1; done

run: all
	tests/lib/demo.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib \
	  $(DESTDIR)$(PREFIX)/include $(DESTDIR)/etc/shmnet $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 $(BUILD)/shmnetd $(DESTDIR)$(PREFIX)/sbin/shmnetd
	install -m 755 $(BUILD)/shmnetctl $(BUILD)/shmnet-run $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(BUILD)/libshmnet.so $(BUILD)/libshmnet_preload.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 libclient/shmnet.h $(DESTDIR)$(PREFIX)/include/shmnet.h
	test -e $(DESTDIR)/etc/shmnet/shmnetd.conf || install -m 644 conf/shmnetd.conf $(DESTDIR)/etc/shmnet/shmnetd.conf
	sed 's|@PREFIX@|$(PREFIX)|g' systemd/shmnetd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/shmnetd.service

# nic/xdp_steer.bpf.c is BPF C (SEC() and map macros): clang -target bpf checks it.
cppcheck:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I. -D_GNU_SOURCE -i nic/xdp_steer.bpf.c \
	  core conf nic stack shm daemon libclient tools

check-format:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
