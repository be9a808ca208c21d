# SPDX-License-Identifier: GPL-2.0 OR MIT
#
# mpq: kernel module, library, tests, examples and benchmarks.
#
#   make              library, module and programs
#   make lib selftests  the library and its tests, native (build/)
#   make kmod-vm      the module for the test VM's kernel
#   make check        every test: native, under ASan+UBSan, and in the VM
#   make check-debug  the VM tests in a KASAN/lockdep/kmemleak kernel
#   make fuzz         the ABI fuzzer in the VM (SECONDS=600, SEED=N)
#   make demo         the seed's producer/consumer, then queue vs pipe
#   make tools        the eBPF tools and mpqstat, in build/tools
#   make bench        the benchmark suite (QUICK=1: under a minute)
#   make bench-vm     the same inside the test VM, with /dev/mpq
#   make deps         install what is missing (Debian packages, VM kernel)
#   make vm CMD=...   run a command in the test VM with mpq.ko loaded
#   make vm-shell     a shell in the test VM
#   make install      DESTDIR, PREFIX honoured (LIBDIR, SBINDIR, DEVMODE...)
#   make install-dkms the module's source for DKMS, built for every kernel
#   make install-autoload  load the module at boot (modules-load.d)
#   make uninstall    remove what make install put there (same variables)
#   make check-6.12   the VM tests on Debian 12's newer kernel (6.12)
#   make deb          the Debian packages and lintian, in build/deb
#   make checkpatch   the module's style (checkpatch --strict)
#   make clean        build/'s outputs, not the cached VM kernel
#   make help         this list
#
# The kernel side builds with Kbuild against KDIR: the running kernel's
# build tree if there is one, else the Debian headers the test VM uses,
# and then make says so: that module loads only on that kernel.

VERSION     := 0.2.0
SOVERSION   := 0
B           := build
VM_KVER      = $(shell scripts/deps.sh --kver 2>/dev/null)
VM_KDIR      = /usr/src/linux-headers-$(VM_KVER)
RUNNING_KVER := $(shell uname -r)
KDIR        ?= $(if $(wildcard /lib/modules/$(RUNNING_KVER)/build),/lib/modules/$(RUNNING_KVER)/build,$(VM_KDIR))

PREFIX      ?= /usr/local
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR      ?= $(PREFIX)/share/man
# Where udev, systemd-sysusers and systemd-modules-load look, whatever
# PREFIX is; DESTDIR still applies.
UDEVDIR     ?= $(or $(shell pkg-config --variable=udevdir udev 2>/dev/null),/lib/udev)
SYSUSERSDIR ?= $(or $(shell pkg-config --variable=sysusersdir systemd 2>/dev/null),/usr/lib/sysusers.d)
MODULESLOADDIR ?= $(or $(shell pkg-config --variable=modulesloaddir systemd 2>/dev/null),/usr/lib/modules-load.d)
DKMSDIR     ?= /usr/src
# /dev/mpq's mode in the udev rule: 0666 (the module's own default: any
# user, each with a budget) or 0660 (root and group mpq only).
DEVMODE     ?= 0666

CC          ?= cc
# Debian's CPython: the one the benchmarks compare with, in the VM too.
PYTHON      ?= /usr/bin/python3
CFLAGS      ?= -O2 -g
WARN        := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
               -Wno-unused-parameter
CPPFLAGS    += -Iinclude -Iinclude/uapi -D_GNU_SOURCE
LIB_CFLAGS  := $(CFLAGS) $(WARN) -Werror -std=gnu11 -fPIC -fvisibility=hidden
LIBS        := -luring
SAN         := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

LIB_SRCS    := $(wildcard lib/*.c)
LIB_OBJS    := $(LIB_SRCS:lib/%.c=$(B)/lib/%.o)
ASAN_OBJS   := $(LIB_SRCS:lib/%.c=$(B)/asan/lib/%.o)
LIB_HDRS    := include/mpq.h include/mpq_ext.h include/uapi/linux/mpq.h $(wildcard lib/*.h)
SO          := $(B)/lib/libmpq.so.$(VERSION)

# libmpq-net (net/): Listener/Client and Managers, a library of its own so
# that libmpq links no socket, crypto or Redis code (include/mpq_net.h).
NET_SRCS    := $(wildcard net/*.c net/*/*.c)
NET_OBJS    := $(NET_SRCS:%.c=$(B)/%.o)
ASAN_NET_OBJS := $(NET_SRCS:%.c=$(B)/asan/%.o)
NET_HDRS    := include/mpq.h include/mpq_ext.h include/mpq_net.h $(wildcard net/*.h net/*/*.h)
NET_SO      := $(B)/lib/libmpq-net.so.$(VERSION)
NET_LIBS    := -lcrypto -lhiredis
NET_CFLAGS  := $(LIB_CFLAGS) -Inet -DMPQ_NET_VERSION='"$(VERSION)"'

TESTS       := $(patsubst selftests/%.c,%,$(wildcard selftests/*_test.c))
HARNESS     := $(B)/kselftest/kselftest_harness.h
TEST_BINS   := $(TESTS:%=$(B)/selftests/%)
# Not tools_test: it runs only in the VM, against the tools.
ASAN_BINS   := $(filter-out %/tools_test,$(TESTS:%=$(B)/asan/selftests/%))
TEST_CFLAGS := $(CFLAGS) $(WARN) -Wno-missing-prototypes -Wno-shadow -Wno-sign-compare -std=gnu11 -I$(B)/kselftest -Iselftests
EXAMPLES    := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))
BENCHES     := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))

.PHONY: install-kmod install-dkms uninstall-dkms install-autoload kmod-6.12 check-6.12
.PHONY: all lib net kmod kmod-vm examples bench-bin tools selftests check demo deps bench bench-vm \
        vm vm-shell install uninstall deb help clean checkpatch debug-kernel kmod-debug check-debug fuzz
.DELETE_ON_ERROR:

all: lib kmod examples bench-bin tools

lib: $(SO) $(B)/lib/libmpq.a $(B)/lib/mpq.pc net

net: $(NET_SO) $(B)/lib/libmpq-net.a $(B)/lib/mpq-net.pc

$(B)/net/%.o: net/%.c $(NET_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(NET_CFLAGS) -c -o $@ $<

$(NET_SO): $(NET_OBJS) net/mpq-net.map $(SO)
	$(CC) -shared -o $@ $(NET_OBJS) -Wl,-soname,libmpq-net.so.$(SOVERSION) \
		-Wl,--version-script=net/mpq-net.map -Wl,-z,defs $(LDFLAGS) \
		-L$(B)/lib -lmpq $(NET_LIBS)
	ln -sf libmpq-net.so.$(VERSION) $(B)/lib/libmpq-net.so.$(SOVERSION)
	ln -sf libmpq-net.so.$(SOVERSION) $(B)/lib/libmpq-net.so

$(B)/lib/libmpq-net.a: $(NET_OBJS) net/mpq-net.map
	$(call static_lib,$(NET_OBJS),net/mpq-net.map)

$(B)/lib/mpq-net.pc: net/mpq-net.pc.in Makefile
	$(PC_SUBST) $< > $@

$(B)/lib/%.o: lib/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) -c -o $@ $<

$(SO): $(LIB_OBJS) lib/mpq.map
	$(CC) -shared -o $@ $(LIB_OBJS) -Wl,-soname,libmpq.so.$(SOVERSION) \
		-Wl,--version-script=lib/mpq.map -Wl,-z,defs $(LDFLAGS) $(LIBS)
	ln -sf libmpq.so.$(VERSION) $(B)/lib/libmpq.so.$(SOVERSION)
	ln -sf libmpq.so.$(SOVERSION) $(B)/lib/libmpq.so

$(B)/lib/libmpq.a: $(LIB_OBJS) lib/mpq.map
	$(call static_lib,$(LIB_OBJS),lib/mpq.map)

# A static archive hides what the version script hides from the shared
# object: its objects are prelinked into one (ld -r), in which every
# global that is not one of the script's names becomes local. Internal
# names (pool_check, mpq_block_new...) can then neither clash with a
# program's own nor be replaced by them. The one exception is sdt.h's
# _.stapsdt.base, weak and hidden, which every object with USDT probes
# shares by design. The cost: a program that uses any of the library
# links all of it (--gc-sections still trims it).
MAP_SYMS     = sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);.*/\1/p'
OBJCOPY     ?= objcopy
define static_lib
	$(CC) -r -nostdlib -o $@.o $(1)
	$(MAP_SYMS) $(2) > $@.syms
	$(OBJCOPY) --keep-global-symbols=$@.syms --keep-global-symbol=_.stapsdt.base $@.o
	rm -f $@ && $(AR) rcs $@ $@.o
	rm -f $@.o $@.syms
endef

PC_SUBST     = sed -e 's|@prefix@|$(PREFIX)|' -e 's|@libdir@|$(LIBDIR)|' \
               -e 's|@includedir@|$(INCLUDEDIR)|' -e 's|@version@|$(VERSION)|'

$(B)/lib/mpq.pc: lib/mpq.pc.in Makefile
	$(PC_SUBST) $< > $@

# The module. W=1 keeps it clean of the extra warnings too. Built for a
# kernel this machine does not run, it says so, and what to install.
kmod:
	@[ -d /lib/modules/$(RUNNING_KVER)/build ] || [ "$(origin KDIR)" != file ] || \
		{ echo "*** mpq: no headers for the running kernel $(RUNNING_KVER):"; \
		  echo "*** building mpq.ko for $(VM_KVER) instead; it will not load on this kernel."; \
		  echo "*** For this kernel: apt-get install linux-headers-$(RUNNING_KVER) (or use make install-dkms)."; } >&2
	$(MAKE) -C $(KDIR) M=$(CURDIR) W=1 modules

# The module for the test VM's kernel, whatever the host runs.
kmod-vm: deps
	$(MAKE) -C $(VM_KDIR) M=$(CURDIR) W=1 modules

# The kselftest harness, from Debian's linux-source (GPL-2.0, not copied
# into this tree).
$(HARNESS):
	@mkdir -p $(B)/kselftest
	tar -xJf /usr/src/linux-source-6.1.tar.xz -C $(B)/kselftest --strip-components=4 \
		linux-source-6.1/tools/testing/selftests/kselftest_harness.h \
		linux-source-6.1/tools/testing/selftests/kselftest.h
	touch $@

$(B)/selftests/%: selftests/%.c selftests/helpers.h selftests/kmod_helpers.h selftests/kill_points.h $(HARNESS) $(B)/lib/libmpq.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) -o $@ $< $(B)/lib/libmpq.a $(LIBS) -lpthread

# The distributed pool's tests (net_pool_test: deaths, a manager
# restarted mid-map, namespaces) RUNS times in a row (10), stopping at
# the first failure: for what fails one run in many. Not in check.
RUNS ?= 10
.PHONY: net-pool-stress
net-pool-stress: $(B)/selftests/net_pool_test
	@i=0; while [ $$i -lt $(RUNS) ]; do i=$$((i + 1)); \
		echo "net-pool-stress: run $$i of $(RUNS)"; \
		$(B)/selftests/net_pool_test || exit 1; done

# The distributed pool across a partition lasting longer than the
# manager's timeout (12 s cuts), not in check: net_pool_partition_test.c
# built with NET_POOL_PARTITION_LONG.
.PHONY: net-pool-partition
net-pool-partition: $(B)/selftests/net_pool_partition_long
	$(B)/selftests/net_pool_partition_long
$(B)/selftests/net_pool_partition_long: selftests/net_pool_partition_test.c selftests/helpers.h selftests/net_helpers.h $(HARNESS) $(B)/lib/libmpq.a $(B)/lib/libmpq-net.a
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) -DNET_POOL_PARTITION_LONG -o $@ $< $(B)/lib/libmpq-net.a $(B)/lib/libmpq.a $(NET_LIBS) $(LIBS) -lpthread

# The distributed pool through Redis Sentinel failovers, measured: three
# sentinels, ten failovers with the replica frozen behind, ten with it as
# replication left it, ten manual ones (~4 minutes), not in check:
# net_pool_failover_test.c built with NET_POOL_FAILOVER_LONG.
.PHONY: net-pool-failover
net-pool-failover: $(B)/selftests/net_pool_failover_long
	$(B)/selftests/net_pool_failover_long
$(B)/selftests/net_pool_failover_long: selftests/net_pool_failover_test.c selftests/helpers.h selftests/net_helpers.h $(HARNESS) $(B)/lib/libmpq.a $(B)/lib/libmpq-net.a
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) -DNET_POOL_FAILOVER_LONG -o $@ $< $(B)/lib/libmpq-net.a $(B)/lib/libmpq.a $(NET_LIBS) $(LIBS) -lpthread

# The network library's tests (selftests/net_*_test.c) link it too.
$(B)/selftests/net_%_test: selftests/net_%_test.c selftests/helpers.h selftests/net_helpers.h $(HARNESS) $(B)/lib/libmpq.a $(B)/lib/libmpq-net.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) -o $@ $< $(B)/lib/libmpq-net.a $(B)/lib/libmpq.a $(NET_LIBS) $(LIBS) -lpthread

# tools_test links libmpq.so, the library the tools trace by default.
$(B)/selftests/tools_test: selftests/tools_test.c selftests/helpers.h tools/mpq_tp.h $(HARNESS) $(SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) -o $@ $< -L$(B)/lib -lmpq -Wl,-rpath,$(CURDIR)/$(B)/lib $(LIBS) -lpthread

$(B)/asan/lib/%.o: lib/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) $(SAN) -c -o $@ $<

$(B)/asan/libmpq.a: $(ASAN_OBJS)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/asan/net/%.o: net/%.c $(NET_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(NET_CFLAGS) $(SAN) -c -o $@ $<

$(B)/asan/libmpq-net.a: $(ASAN_NET_OBJS)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/asan/selftests/net_%_test: selftests/net_%_test.c selftests/helpers.h selftests/net_helpers.h $(HARNESS) $(B)/asan/libmpq.a $(B)/asan/libmpq-net.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) $(SAN) -o $@ $< $(B)/asan/libmpq-net.a $(B)/asan/libmpq.a $(NET_LIBS) $(LIBS) -lpthread

$(B)/asan/selftests/%: selftests/%.c selftests/helpers.h selftests/kmod_helpers.h selftests/kill_points.h $(HARNESS) $(B)/asan/libmpq.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) $(SAN) -o $@ $< $(B)/asan/libmpq.a $(LIBS) -lpthread

# The module's ABI fuzzer (selftests/kmod_fuzz.c): no harness, its own TAP.
$(B)/selftests/kmod_fuzz: selftests/kmod_fuzz.c include/uapi/linux/mpq.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -Werror -std=gnu11 -o $@ $< $(LIBS) -lpthread

selftests: $(TEST_BINS) $(ASAN_BINS) $(B)/selftests/kmod_fuzz

$(B)/examples/%: examples/%.c $(SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< -L$(B)/lib -lmpq -Wl,-rpath,$(CURDIR)/$(B)/lib

# Programs of the Manager (examples/manager_*.c, bench/manager_*.c) link
# libmpq-net too. libmpq stays NEEDED by the program even when it calls
# none of libmpq's functions itself (the toolchain links --as-needed):
# libmpq-net's own need of it is not looked up in the program's RUNPATH,
# so in the tree it would not be found.
NET_LDLIBS  := -L$(B)/lib -lmpq-net -Wl,--push-state,--no-as-needed -lmpq \
               -Wl,--pop-state -Wl,-rpath,$(CURDIR)/$(B)/lib
$(B)/examples/manager_%: examples/manager_%.c $(SO) $(NET_SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(NET_LDLIBS)

# hiredis: manager_pool_bench measures the floor of an exchange with it.
$(B)/bench/manager_%: bench/manager_%.c $(SO) $(NET_SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(NET_LDLIBS) -lhiredis -lm

$(B)/bench/%: bench/%.c bench/*.h $(SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< -L$(B)/lib -lmpq -Wl,-rpath,$(CURDIR)/$(B)/lib -lm

# The libraries a C programmer would pick instead of mpq, one program per
# library (bench/peers/, Debian packages from scripts/deps.sh): bench/run.py
# runs them in the same interleaved run as mpqbench.
PEERS       := $(B)/bench/peers/ck $(B)/bench/peers/boost $(B)/bench/peers/zeromq \
               $(B)/bench/peers/iceoryx
PEER_DEPS   := bench/peers/peer.h bench/bench.h
# The C binding's headers sit under a versioned directory (no pkg-config).
IOX_INC     := $(firstword $(wildcard /usr/include/iceoryx/v*))
# The Listener/Client benchmark links libmpq-net too.
$(B)/bench/listener_bench: bench/listener_bench.c bench/*.h $(SO) $(NET_SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(NET_LDLIBS) -lm

examples: $(EXAMPLES)
bench-bin: $(BENCHES) $(B)/noprobes/libmpq.so.$(SOVERSION) $(PEERS)

$(B)/bench/peers/ck: bench/peers/ck.c $(PEER_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -std=gnu11 -o $@ $< -lck
$(B)/bench/peers/zeromq: bench/peers/zeromq.c $(PEER_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -std=gnu11 -o $@ $< -lzmq
$(B)/bench/peers/iceoryx: bench/peers/iceoryx.c $(PEER_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -Wno-strict-prototypes -std=gnu11 \
		-I$(IOX_INC) -o $@ $< -liceoryx_binding_c
$(B)/bench/peers/boost: bench/peers/boost.cpp $(PEER_DEPS)
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CFLAGS) -Wall -Wextra -Wno-unused-parameter \
		-Wno-missing-field-initializers -o $@ $< -lrt -lpthread

# libmpq with its USDT probes compiled out, for the benchmark row that
# prices them: the same mpqbench runs with LD_LIBRARY_PATH pointing here.
NOPROBE_OBJS := $(LIB_SRCS:lib/%.c=$(B)/noprobes/lib/%.o)

$(B)/noprobes/lib/%.o: lib/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) -DMPQ_NO_PROBES -c -o $@ $<

$(B)/noprobes/libmpq.so.$(SOVERSION): $(NOPROBE_OBJS) lib/mpq.map
	$(CC) -shared -o $@ $(NOPROBE_OBJS) -Wl,-soname,libmpq.so.$(SOVERSION) \
		-Wl,--version-script=lib/mpq.map -Wl,-z,defs $(LDFLAGS) $(LIBS)

# The tools (tools/): libbpf CO-RE programs, their skeletons from bpftool,
# and mpqstat, which needs no BPF. vmlinux.h comes from this machine's
# kernel BTF; CO-RE relocates it to the kernel that runs the tool.
TB          := $(B)/tools
BPF_TOOLS   := mpqlat mpqwait mpqtop mpqsnoop
TOOLS       := $(BPF_TOOLS:%=$(TB)/%) $(TB)/mpqstat
CLANG       ?= clang
BPFTOOL     ?= bpftool
BPF_ARCH    := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
# usdt.bpf.h includes <errno.h>, whose asm/ lives in the multiarch dir.
BPF_CFLAGS  := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -I$(TB) -Itools \
               -idirafter /usr/include/$(shell $(CC) -print-multiarch) \
               -Wall -Wno-unused-function
TOOL_CFLAGS := $(CFLAGS) $(WARN) -Werror -std=gnu11 -I$(TB) -Itools
TOOL_HDRS   := tools/tool.h tools/mpq_tp.h include/uapi/linux/mpq.h

tools: $(TOOLS)

# Keep the skeletons and objects: they are inputs, not leftovers.
.SECONDARY: $(BPF_TOOLS:%=$(TB)/%.skel.h) $(BPF_TOOLS:%=$(TB)/%.bpf.o) $(BPF_TOOLS:%=$(TB)/%.o)

$(TB)/vmlinux.h:
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	mv $@.tmp $@

$(TB)/%.bpf.o: tools/%.bpf.c tools/%.h tools/bits.bpf.h tools/mpq_tp.h $(TB)/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(TB)/%.skel.h: $(TB)/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $*_bpf > $@.tmp
	mv $@.tmp $@

$(TB)/tool.o: tools/tool.c $(TOOL_HDRS)
	$(CC) $(CPPFLAGS) $(TOOL_CFLAGS) -c -o $@ $<

$(TB)/%.o: tools/%.c tools/%.h $(TB)/%.skel.h $(TOOL_HDRS)
	$(CC) $(CPPFLAGS) $(TOOL_CFLAGS) -c -o $@ $<

# rpath $ORIGIN/../lib: in the tree, build/lib's libmpq.so.0 is the
# library a tool traces unless told otherwise (see mpq_tool_find_lib()).
# (TOOL_RPATH= for a package, whose libmpq is on the system's path.)
TOOL_RPATH  ?= -Wl,-rpath,'$$ORIGIN/../lib'
$(TB)/mpq%: $(TB)/mpq%.o $(TB)/tool.o
	$(CC) -o $@ $^ $(LDFLAGS) -lbpf -lelf -lz -ldl $(TOOL_RPATH)

$(TB)/mpqstat: tools/mpqstat.c include/uapi/linux/mpq.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TOOL_CFLAGS) -o $@ $< $(LDFLAGS)

# The list at the top of this file, which is the one place it is kept.
help:
	@sed -n '/^#   make /s/^#   //p' $(firstword $(MAKEFILE_LIST))

deps:
	@scripts/deps.sh

# Build with every CPU: a serial build took 4.5 of CI's 20 minutes.
CHECK_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

check: deps
	$(MAKE) -j$(CHECK_JOBS) lib examples bench-bin tools selftests
	$(MAKE) -j$(CHECK_JOBS) kmod-vm
	@# One TAP stream, checked by Perl's TAP::Parser (build/check.tap).
	@selftests/run_tests.sh; rc=$$?; selftests/tap_check.pl $(B)/check.tap && exit $$rc

# The debug kernel (scripts/debug-kernel.sh: KASAN, lockdep, kmemleak,
# UBSAN), cached under build/debug-kernel, and the module built against it
# in a copy of the sources (kmod/mpq.ko stays the VM kernel's), itself
# instrumented by UBSAN. Far too slow for every check: its own target.
DEBUG_KDIR  := $(B)/debug-kernel/linux-source-6.1
DEBUG_MOD   := $(B)/debug-kmod

debug-kernel: deps
	@scripts/deps.sh --debug-kernel
	nice scripts/debug-kernel.sh $(B)/debug-kernel

kmod-debug: debug-kernel
	rm -rf $(DEBUG_MOD) && mkdir -p $(DEBUG_MOD)/include/uapi
	cp -r Kbuild kmod $(DEBUG_MOD)/ && cp -r include/uapi/linux $(DEBUG_MOD)/include/uapi/
	rm -f $(DEBUG_MOD)/kmod/*.o $(DEBUG_MOD)/kmod/*.ko $(DEBUG_MOD)/kmod/.*.cmd
	$(MAKE) -C $(DEBUG_KDIR) M=$(CURDIR)/$(DEBUG_MOD) W=1 UBSAN_SANITIZE=y \
		MPQ_VERSION=$(VERSION) modules

check-debug: kmod-debug
	$(MAKE) lib examples bench-bin tools selftests
	MPQ_VM_KERNEL=$(DEBUG_KDIR)/arch/x86/boot/bzImage MPQ_MODULE=$(DEBUG_MOD)/kmod/mpq.ko \
		MPQ_VM_TIMEOUT=$(or $(TIMEOUT),7200) selftests/run_tests.sh --vm-only; \
		rc=$$?; selftests/tap_check.pl $(B)/check.tap && exit $$rc

# The VM tests on Debian 12's other kernel, 6.12 (bookworm's newer one):
# its headers and image unpacked into the VM cache (scripts/deps.sh, not
# installed, so the host keeps building for 6.1), the module built in a
# copy of the sources (kmod/mpq.ko stays 6.1's). make check stays on 6.1.
K612_MOD    := $(B)/kmod-6.12

kmod-6.12: deps
	MPQ_KSERIES=6.12 scripts/deps.sh
	rm -rf $(K612_MOD) && mkdir -p $(K612_MOD)/include/uapi
	cp -r Kbuild kmod $(K612_MOD)/ && cp -r include/uapi/linux $(K612_MOD)/include/uapi/
	rm -f $(K612_MOD)/kmod/*.o $(K612_MOD)/kmod/*.ko $(K612_MOD)/kmod/.*.cmd
	$(MAKE) -C $$(MPQ_KSERIES=6.12 scripts/deps.sh --kdir) M=$(CURDIR)/$(K612_MOD) W=1 \
		MPQ_VERSION=$(VERSION) modules

check-6.12: kmod-6.12
	$(MAKE) lib examples bench-bin tools selftests
	@MPQ_KSERIES=6.12 MPQ_MODULE=$(K612_MOD)/kmod/mpq.ko selftests/run_tests.sh --vm-only; \
		rc=$$?; selftests/tap_check.pl $(B)/check.tap && exit $$rc

# The ABI fuzzer alone, in the VM, for longer than make check runs it.
SECONDS ?= 600
fuzz: kmod-vm
	$(MAKE) $(B)/selftests/kmod_fuzz
	selftests/vm/run-vm.sh -t $$(($(SECONDS) + 600)) -- \
		$(CURDIR)/$(B)/selftests/kmod_fuzz --seconds $(SECONDS) $(if $(SEED),--seed $(SEED))

demo: deps
	$(MAKE) lib examples bench-bin
	$(B)/examples/producer_consumer
	$(B)/bench/queue_vs_pipe

BENCH_ARGS = $(if $(QUICK),--quick) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(ONLY),--only '$(ONLY)') \
	     $(if $(BASELINE),--baseline '$(BASELINE)')

bench: deps
	$(MAKE) lib bench-bin
	$(PYTHON) bench/run.py --out $(B)/bench $(BENCH_ARGS)

# Inside one boot of the test VM: both backends, and the /dev/mpq wake
# paths. Times under TCG are not comparable with the host's; the ratios
# within the boot are what it reports.
bench-vm: kmod-vm
	$(MAKE) lib bench-bin
	selftests/vm/run-vm.sh -t 3000 -o $(B)/bench-vm -- \
		$(PYTHON) bench/run.py --out /tmp/out/export $(BENCH_ARGS)

vm: kmod-vm
	selftests/vm/run-vm.sh -- sh -c '$(CMD)'

vm-shell: kmod-vm
	selftests/vm/run-vm.sh -s

checkpatch: $(B)/checkpatch/checkpatch.pl
	$(B)/checkpatch/checkpatch.pl --strict --no-tree --show-types --terse \
		-f $(filter-out %.mod.c,$(wildcard kmod/*.c kmod/*.h)) include/uapi/linux/mpq.h

$(B)/checkpatch/checkpatch.pl:
	@mkdir -p $(@D)
	tar -xJf /usr/src/linux-source-6.1.tar.xz -C $(@D) --strip-components=2 \
		linux-source-6.1/scripts/checkpatch.pl \
		linux-source-6.1/scripts/spelling.txt \
		linux-source-6.1/scripts/const_structs.checkpatch
	touch $@

# Every man page, by its section; and the links a page's NAME section asks
# for (man mpq_lock_acquire opens mpq_lock.3). Install and uninstall both
# use these lists, so that uninstall leaves nothing behind.
MAN_PAGES   := $(wildcard man/*.[1-9])
MAN_LINKS    = $(shell for page in man/*.3; do base=$$(basename $$page); \
		for fn in $$(sed -n '/^\.SH NAME/,/\\-/p' $$page | sed 's/\\-.*//' | \
			     grep -o 'mpq_[a-z_0-9]*'); do \
			[ "$$fn.3" = "$$base" ] || echo "$$fn.3:$$base"; done; done)
SBINDIR     ?= $(PREFIX)/sbin

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/linux $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/mpq.h $(DESTDIR)$(INCLUDEDIR)/mpq.h
	install -m 644 include/mpq_ext.h $(DESTDIR)$(INCLUDEDIR)/mpq_ext.h
	install -m 644 include/uapi/linux/mpq.h $(DESTDIR)$(INCLUDEDIR)/linux/mpq.h
	install -m 755 $(SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libmpq.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmpq.so.$(SOVERSION)
	ln -sf libmpq.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libmpq.so
	install -m 644 $(B)/lib/libmpq.a $(DESTDIR)$(LIBDIR)/
	$(PC_SUBST) lib/mpq.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/mpq.pc
	install -m 644 include/mpq_net.h $(DESTDIR)$(INCLUDEDIR)/mpq_net.h
	install -m 755 $(NET_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libmpq-net.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmpq-net.so.$(SOVERSION)
	ln -sf libmpq-net.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libmpq-net.so
	install -m 644 $(B)/lib/libmpq-net.a $(DESTDIR)$(LIBDIR)/
	$(PC_SUBST) net/mpq-net.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/mpq-net.pc
	@for page in $(MAN_PAGES); do \
		sec=$${page##*.}; \
		echo install -D -m 644 $$page $(DESTDIR)$(MANDIR)/man$$sec/$${page#man/}; \
		install -D -m 644 $$page $(DESTDIR)$(MANDIR)/man$$sec/$${page#man/} || exit; \
	done
	@# A link per function named in a page's NAME section: man mpq_lock_acquire.
	@for l in $(MAN_LINKS); do \
		ln -sf $${l#*:} $(DESTDIR)$(MANDIR)/man3/$${l%%:*} || exit; \
	done
	@if [ -x $(TB)/mpqstat ]; then \
		install -d $(DESTDIR)$(SBINDIR); \
		echo install -m 755 $(TOOLS) $(DESTDIR)$(SBINDIR)/; \
		install -m 755 $(TOOLS) $(DESTDIR)$(SBINDIR)/; \
	fi
	@# /dev/mpq's group and mode (udev), and the group (systemd-sysusers).
	install -d $(DESTDIR)$(UDEVDIR)/rules.d $(DESTDIR)$(SYSUSERSDIR)
	sed 's/^\(KERNEL.*MODE="\)[0-7]*"/\1$(DEVMODE)"/' dist/60-mpq.rules \
		> $(DESTDIR)$(UDEVDIR)/rules.d/60-mpq.rules
	install -m 644 dist/mpq.sysusers $(DESTDIR)$(SYSUSERSDIR)/mpq.conf
	@if [ -z "$(DESTDIR)" ]; then \
		getent group mpq >/dev/null || systemd-sysusers mpq.conf 2>/dev/null || \
			groupadd --system mpq; \
		udevadm control --reload 2>/dev/null || true; \
	fi
	@$(MAKE) -s install-kmod

# The module, for the kernel it was built for. Into a staging DESTDIR as
# it is; on this machine, not silently for a kernel it does not run: it
# says why not and what to do, and the rest of install stands.
install-kmod:
	@if [ -f kmod/mpq.ko ]; then \
		kv=$$(modinfo -F vermagic kmod/mpq.ko | cut -d' ' -f1); \
		if [ -z "$(DESTDIR)" ] && [ "$$kv" != "$(RUNNING_KVER)" ] && [ "$(KVER)" != "$$kv" ]; then \
			{ echo "*** mpq: kmod/mpq.ko is built for $$kv, not the running kernel $(RUNNING_KVER): not installed."; \
			  echo "*** apt-get install linux-headers-$(RUNNING_KVER), then make and make install;"; \
			  echo "*** or make install-dkms (every kernel with headers); or make install KVER=$$kv"; \
			  echo "*** to install it for $$kv on purpose."; } >&2; \
		else \
			echo "install kmod/mpq.ko for $$kv"; \
			install -D -m 644 kmod/mpq.ko $(DESTDIR)/lib/modules/$$kv/updates/mpq.ko; \
			if [ -z "$(DESTDIR)" ]; then depmod -a $$kv; fi; \
		fi; \
	fi

# DKMS: the module's source under $(DKMSDIR)/mpq-$(VERSION) with dkms.conf,
# then (not staging) dkms builds and installs it for each kernel that has
# headers, and again for each kernel installed later (AUTOINSTALL).
DKMS_SRC     = $(DESTDIR)$(DKMSDIR)/mpq-$(VERSION)
install-dkms:
	install -d $(DKMS_SRC)/kmod $(DKMS_SRC)/include/uapi/linux
	sed 's/#MODULE_VERSION#/$(VERSION)/' dkms.conf > $(DKMS_SRC)/dkms.conf
	install -m 644 Kbuild $(DKMS_SRC)/
	install -m 644 kmod/Kbuild $(filter-out %.mod.c,$(wildcard kmod/*.c kmod/*.h)) $(DKMS_SRC)/kmod/
	install -m 644 include/uapi/linux/mpq.h $(DKMS_SRC)/include/uapi/linux/
	@if [ -z "$(DESTDIR)" ]; then \
		command -v dkms >/dev/null || { echo "*** mpq: dkms is not installed: apt-get install dkms" >&2; exit 1; }; \
		dkms status -m mpq -v $(VERSION) | grep -q . || dkms add -m mpq -v $(VERSION); \
		n=0; for b in /lib/modules/*/build; do \
			[ -d "$$b" ] || continue; k=$$(basename $$(dirname $$b)); \
			dkms install -m mpq -v $(VERSION) -k $$k && n=$$((n + 1)); \
		done; \
		[ $$n -gt 0 ] || echo "*** mpq: no kernel has headers: apt-get install linux-headers-$(RUNNING_KVER)" >&2; \
	fi

# Load the module at every boot: modules-load.d. Not part of install: a
# first open of /dev/mpq loads it anyway (its devname alias).
install-autoload:
	install -d $(DESTDIR)$(MODULESLOADDIR)
	install -m 644 dist/mpq.modules-load $(DESTDIR)$(MODULESLOADDIR)/mpq.conf

uninstall-dkms:
	@if [ -z "$(DESTDIR)" ] && command -v dkms >/dev/null && dkms status -m mpq -v $(VERSION) | grep -q .; then \
		dkms remove -m mpq -v $(VERSION) --all; \
	fi
	rm -rf $(DKMS_SRC)

# Everything install puts down, whatever was built since: the module of
# every kernel release it went to.
uninstall: uninstall-dkms
	rm -f $(DESTDIR)$(UDEVDIR)/rules.d/60-mpq.rules $(DESTDIR)$(SYSUSERSDIR)/mpq.conf \
		$(DESTDIR)$(MODULESLOADDIR)/mpq.conf
	@# The group mpq stays, as Debian leaves a removed package's groups.
	rm -f $(DESTDIR)$(INCLUDEDIR)/mpq.h $(DESTDIR)$(INCLUDEDIR)/linux/mpq.h \
		$(DESTDIR)$(INCLUDEDIR)/mpq_ext.h \
		$(DESTDIR)$(LIBDIR)/libmpq.so* $(DESTDIR)$(LIBDIR)/libmpq.a \
		$(DESTDIR)$(PKGCONFIGDIR)/mpq.pc $(DESTDIR)$(INCLUDEDIR)/mpq_net.h \
		$(DESTDIR)$(LIBDIR)/libmpq-net.so* $(DESTDIR)$(LIBDIR)/libmpq-net.a \
		$(DESTDIR)$(PKGCONFIGDIR)/mpq-net.pc \
		$(foreach p,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p))) \
		$(foreach l,$(MAN_LINKS),$(DESTDIR)$(MANDIR)/man3/$(firstword $(subst :, ,$(l)))) \
		$(foreach t,$(TOOLS),$(DESTDIR)$(SBINDIR)/$(notdir $(t)))
	@for ko in $(DESTDIR)/lib/modules/*/updates/mpq.ko; do \
		[ -e "$$ko" ] || continue; \
		echo rm -f $$ko; rm -f $$ko; \
		kv=$${ko%/updates/mpq.ko}; kv=$${kv##*/}; \
		if [ -z "$(DESTDIR)" ]; then depmod -a $$kv; fi; \
	done

# The Debian packages (debian/) with the standard tools, built in a copy
# of the tree's files (tracked, and new ones not ignored) under build/deb,
# where the .deb files land; then lintian, which fails on any E: or W:.
DEB_DIR     := $(B)/deb
DEB_SRC     := $(DEB_DIR)/mpq-$(VERSION)

deb:
	@scripts/deps.sh --deb
	@v=$$(dpkg-parsechangelog -S Version); [ "$$v" = "$(VERSION)" ] || \
		{ echo "debian/changelog is at $$v, the Makefile at $(VERSION)" >&2; exit 1; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_SRC)
	git ls-files -z -c -o --exclude-standard | \
		tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(DEB_SRC)
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --info $(DEB_DIR)/mpq_$(VERSION)_*.changes

# Not kbuild's "clean" with M=: it deletes every *.o, *.a and *.ko below
# the tree, the test VM's kernel modules in build/vm among them.
clean:
	rm -rf $(B)/lib $(B)/net $(B)/asan $(B)/selftests $(B)/examples $(B)/bench \
		$(B)/vm/runs $(B)/kselftest $(B)/checkpatch $(B)/tools $(B)/noprobes $(B)/debug-kmod \
		$(K612_MOD) $(B)/check.tap
	rm -f kmod/*.o kmod/*.ko kmod/*.mod kmod/*.mod.c kmod/.*.cmd \
		kmod/modules.order modules.order Module.symvers .*.cmd
