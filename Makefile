# SPDX-License-Identifier: GPL-2.0 OR MIT
#
# mpq: kernel module, library, tests, examples and benchmarks.
#
#   make              library, module and programs
#   make check        every test: native, under ASan+UBSan, and in the VM
#   make demo         the seed's producer/consumer, then queue vs pipe
#   make bench        the benchmark suite (QUICK=1: under a minute)
#   make bench-vm     the same inside the test VM, with /dev/mpq
#   make deps         install what is missing (Debian packages, VM kernel)
#   make vm CMD=...   run a command in the test VM with mpq.ko loaded
#   make vm-shell     a shell in the test VM
#   make install      DESTDIR, PREFIX honoured
#
# The kernel side builds with Kbuild against KDIR: the running kernel's
# build tree if there is one, else the Debian headers the test VM uses.

VERSION     := 0.2.0
SOVERSION   := 0
B           := build
VM_KVER      = $(shell scripts/deps.sh --kver 2>/dev/null)
VM_KDIR      = /usr/src/linux-headers-$(VM_KVER)
KDIR        ?= $(if $(wildcard /lib/modules/$(shell uname -r)/build),/lib/modules/$(shell uname -r)/build,$(VM_KDIR))

PREFIX      ?= /usr/local
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR      ?= $(PREFIX)/share/man

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
LIB_HDRS    := include/mpq.h include/uapi/linux/mpq.h lib/internal.h lib/pool.h
SO          := $(B)/lib/libmpq.so.$(VERSION)

TESTS       := $(patsubst selftests/%.c,%,$(wildcard selftests/*_test.c))
HARNESS     := $(B)/kselftest/kselftest_harness.h
TEST_BINS   := $(TESTS:%=$(B)/selftests/%)
ASAN_BINS   := $(TESTS:%=$(B)/asan/selftests/%)
TEST_CFLAGS := $(CFLAGS) $(WARN) -Wno-missing-prototypes -Wno-shadow -Wno-sign-compare -std=gnu11 -I$(B)/kselftest -Iselftests
EXAMPLES    := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))
BENCHES     := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))

.PHONY: all lib kmod kmod-vm examples bench-bin selftests check demo deps bench bench-vm \
        vm vm-shell install uninstall clean checkpatch
.DELETE_ON_ERROR:

all: lib kmod examples bench-bin

lib: $(SO) $(B)/lib/libmpq.a $(B)/lib/mpq.pc

$(B)/lib/%.o: lib/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) -c -o $@ $<

$(SO): $(LIB_OBJS) lib/mpq.map
	$(CC) -shared -o $@ $(LIB_OBJS) -Wl,-soname,libmpq.so.$(SOVERSION) \
		-Wl,--version-script=lib/mpq.map -Wl,-z,defs $(LDFLAGS) $(LIBS)
	ln -sf libmpq.so.$(VERSION) $(B)/lib/libmpq.so.$(SOVERSION)
	ln -sf libmpq.so.$(SOVERSION) $(B)/lib/libmpq.so

$(B)/lib/libmpq.a: $(LIB_OBJS)
	rm -f $@ && $(AR) rcs $@ $^

PC_SUBST     = sed -e 's|@prefix@|$(PREFIX)|' -e 's|@libdir@|$(LIBDIR)|' \
               -e 's|@includedir@|$(INCLUDEDIR)|' -e 's|@version@|$(VERSION)|'

$(B)/lib/mpq.pc: lib/mpq.pc.in Makefile
	$(PC_SUBST) $< > $@

# The module. W=1 keeps it clean of the extra warnings too.
kmod:
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

$(B)/selftests/%: selftests/%.c selftests/helpers.h $(HARNESS) $(B)/lib/libmpq.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) -o $@ $< $(B)/lib/libmpq.a $(LIBS) -lpthread

$(B)/asan/lib/%.o: lib/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) $(SAN) -c -o $@ $<

$(B)/asan/libmpq.a: $(ASAN_OBJS)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/asan/selftests/%: selftests/%.c selftests/helpers.h $(HARNESS) $(B)/asan/libmpq.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(TEST_CFLAGS) $(SAN) -o $@ $< $(B)/asan/libmpq.a $(LIBS) -lpthread

selftests: $(TEST_BINS) $(ASAN_BINS)

$(B)/examples/%: examples/%.c $(SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< -L$(B)/lib -lmpq -Wl,-rpath,$(CURDIR)/$(B)/lib

$(B)/bench/%: bench/%.c bench/*.h $(SO)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< -L$(B)/lib -lmpq -Wl,-rpath,$(CURDIR)/$(B)/lib -lm

examples: $(EXAMPLES)
bench-bin: $(BENCHES)

deps:
	@scripts/deps.sh

check: deps
	$(MAKE) lib examples bench-bin selftests
	$(MAKE) kmod-vm
	selftests/run_tests.sh

demo: deps
	$(MAKE) lib examples bench-bin
	$(B)/examples/producer_consumer
	$(B)/bench/queue_vs_pipe

BENCH_ARGS = $(if $(QUICK),--quick) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(ONLY),--only '$(ONLY)')

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
		-f kmod/main.c kmod/region.c kmod/queue.c kmod/pipe.c kmod/internal.h include/uapi/linux/mpq.h

$(B)/checkpatch/checkpatch.pl:
	@mkdir -p $(@D)
	tar -xJf /usr/src/linux-source-6.1.tar.xz -C $(@D) --strip-components=2 \
		linux-source-6.1/scripts/checkpatch.pl \
		linux-source-6.1/scripts/spelling.txt \
		linux-source-6.1/scripts/const_structs.checkpatch
	touch $@

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/mpq.h $(DESTDIR)$(INCLUDEDIR)/mpq.h
	install -m 755 $(SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libmpq.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmpq.so.$(SOVERSION)
	ln -sf libmpq.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libmpq.so
	install -m 644 $(B)/lib/libmpq.a $(DESTDIR)$(LIBDIR)/
	$(PC_SUBST) lib/mpq.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/mpq.pc
	install -d $(DESTDIR)$(MANDIR)/man3
	install -m 644 man/*.3 $(DESTDIR)$(MANDIR)/man3/
	@if [ -f kmod/mpq.ko ]; then \
		kv=$$(modinfo -F vermagic kmod/mpq.ko | cut -d' ' -f1); \
		install -D -m 644 kmod/mpq.ko $(DESTDIR)/lib/modules/$$kv/updates/mpq.ko; \
		if [ -z "$(DESTDIR)" ]; then depmod -a $$kv; fi; \
	fi

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/mpq.h $(DESTDIR)$(LIBDIR)/libmpq.* \
		$(DESTDIR)$(PKGCONFIGDIR)/mpq.pc

# Not kbuild's "clean" with M=: it deletes every *.o, *.a and *.ko below
# the tree, the test VM's kernel modules in build/vm among them.
clean:
	rm -rf $(B)/lib $(B)/asan $(B)/selftests $(B)/examples $(B)/bench \
		$(B)/vm/runs $(B)/kselftest $(B)/checkpatch
	rm -f kmod/*.o kmod/*.ko kmod/*.mod kmod/*.mod.c kmod/.*.cmd \
		kmod/modules.order modules.order Module.symvers .*.cmd
