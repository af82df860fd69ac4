# carehub — build, test and run.
#
#   make            build bin/carehubd (release: -O2 -g)
#   make run        install missing build/run Debian packages, build, start carehubd on
#                   config/carehub.yaml (no test tool, no npm: scripts/deps.sh run)
#   make check      the whole test suite: unit tests (cmocka) and end-to-end tests (pytest),
#                   everything built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      intake against a minimal baseline server; escalation timing; intake ->
#                   webhook against Alertmanager; an escalation storm; agency replies; the child
#                   register with 100,000 children; 1,000 phone links at once (docs/bench.md)
#   make deps       install missing build/run Debian packages (as root) or print the apt-get command
#   make deps-test  the same for the test tools (make check, fuzz, memcheck and soak run it)
#   make install    PREFIX (default /usr/local) and DESTDIR: programs, libcarehub, schemas,
#                   man pages, the systemd unit, the config (never overwritten); docs/install.md
#   make uninstall  remove what install installed, except the config
#
# Objects go under build/<variant>/, programs under bin/ (release) or build/san/bin (sanitized).

SAN ?= 0
CC  ?= gcc
PKGS := libzmq lmdb msgpack libcurl yaml-0.1 jansson libsodium libmicrohttpd libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wno-format-nonliteral
BASE_CFLAGS := -std=c11 -pthread -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Ibroker -Icommon -Iinclude -Iagents/lib $(WARN) $(PKG_CFLAGS) \
        -DCAREHUB_SCHEMAS_DIR='"$(CURDIR)/schemas"' -DCAREHUB_SOURCE_DIR='"$(CURDIR)"'

ifeq ($(SAN),1)
  VARIANT := san
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
  BIN := build/san/bin
else
  VARIANT := rel
  OPT := -O2 -g
  BIN := bin
endif
OUT := build/$(VARIANT)
CFLAGS_ALL := $(BASE_CFLAGS) -I$(OUT)/gen $(OPT) $(CFLAGS)
LDFLAGS_ALL := $(OPT) -pthread $(LDFLAGS)

# common/: what the broker and the agents both link (the wire's msgpack guard and
# msgpack<->JSON, helpers, UTF-8); neither side includes the other's files.
COMMON_SRC  := $(sort $(wildcard common/*.c))
BROKER_SRC  := $(sort $(wildcard broker/*.c)) $(COMMON_SRC)
BROKER_OBJ  := $(BROKER_SRC:%.c=$(OUT)/%.o)
LIB_OBJ     := $(filter-out $(OUT)/broker/main.o,$(BROKER_OBJ))
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(OUT)/tests/%)
# The agent programs' runtime (internal, not installed): agents/lib plus common/,
# every symbol visible to the programs that link it.
AGENT_LIB_SRC  := $(sort $(wildcard agents/lib/*.c))
AGENT_LIB_OBJ  := $(AGENT_LIB_SRC:%.c=$(OUT)/%.o) $(COMMON_SRC:%.c=$(OUT)/%.o)
AGENT_LIB      := $(OUT)/libcarehub-agent.a
# libcarehub, the public library for integrators (include/carehub.h): the same code
# compiled position-independent with hidden visibility, so that it exports carehub_*
# and nothing else; a shared object with a soname, an archive and a pkg-config file.
PUBLIB_SRC     := agents/lib/carehub.c agents/lib/carehub_conn.c agents/lib/spool.c $(COMMON_SRC)
PUBLIB_OBJ     := $(PUBLIB_SRC:%.c=$(OUT)/pic/%.o)
PUBLIB_DIR     := $(OUT)/lib
PUBLIB_VERSION := $(shell sed -n 's/^\#define CAREHUB_VERSION_STR "\(.*\)"/\1/p' agents/lib/carehub.c)
PUBLIB_SONAME  := libcarehub.so.$(firstword $(subst ., ,$(PUBLIB_VERSION)))
PUBLIB         := $(PUBLIB_DIR)/libcarehub.a $(PUBLIB_DIR)/libcarehub.so.$(PUBLIB_VERSION) \
                  $(PUBLIB_DIR)/libcarehub-uninstalled.pc
PUBLIB_PKGS    := libzmq lmdb msgpack jansson libsodium
AGENT_PROG_SRC := $(sort $(wildcard agents/carehub-*.c agents/carehub.c))
AGENT_PROGS    := $(AGENT_PROG_SRC:agents/%.c=$(BIN)/%)
# A program's own further files, if it has any: agents/PROGRAM/*.c (one program's
# parts, not a library: agents/carehub/ for bin/carehub).
AGENT_PART_SRC := $(sort $(filter-out agents/lib/%,$(wildcard agents/*/*.c)))
agent_parts     = $(patsubst %.c,$(OUT)/%.o,$(wildcard agents/$(1)/*.c))
# The schemas' enums and limits as C macros for the agent programs (the programs take
# them from schemas/ instead of restating them): build/VARIANT/gen/schema_tables.h, by a small
# generator (jansson) built first, again whenever a schema or the generator changes.
SCHEMA_JSON    := $(sort $(wildcard schemas/*.json))
SCHEMA_GEN     := $(OUT)/gen/gen-schema-tables
SCHEMA_TABLES  := $(OUT)/gen/schema_tables.h
BENCH_SRC   := $(sort $(wildcard bench/*.c))
BENCH_BIN   := $(BENCH_SRC:bench/%.c=$(BIN)/%)

PY := /usr/bin/python3
CONFIG ?= config/carehub.yaml

.PHONY: all deps deps-test run check layers unit e2e libcheck opscheck lib bench clean san-build demo fuzz \
	memcheck soak install uninstall
all: $(BIN)/carehubd $(AGENT_PROGS) lib
lib: $(PUBLIB)

# V=1 shows the full compiler command lines.
ifeq ($(V),1)
  Q :=
  say := @true
else
  Q := @
  say := @echo
endif

$(OUT)/%.o: %.c
	@mkdir -p $(dir $@)
	$(say) "  CC [$(VARIANT)]  $<"
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(SCHEMA_GEN): scripts/gen-schema-tables.c
	@mkdir -p $(dir $@)
	$(say) "  CC [$(VARIANT)]  $<"
	$(Q)$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(shell pkg-config --libs jansson 2>/dev/null)

$(SCHEMA_TABLES): $(SCHEMA_GEN) $(SCHEMA_JSON)
	$(say) "  GEN [$(VARIANT)] $@"
	$(Q)$(SCHEMA_GEN) $@ $(SCHEMA_JSON)

# The agent programs' objects need the header before their first compile; after it,
# their .d files name it, so that a schema's change recompiles those that include it.
$(AGENT_PROG_SRC:%.c=$(OUT)/%.o) $(AGENT_PART_SRC:%.c=$(OUT)/%.o): | $(SCHEMA_TABLES)

$(BIN)/carehubd: $(BROKER_OBJ)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

$(AGENT_LIB): $(AGENT_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(say) "  AR [$(VARIANT)]  $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUT)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(say) "  CC [$(VARIANT) pic]  $<"
	$(Q)$(CC) $(CFLAGS_ALL) -fPIC -fvisibility=hidden -MMD -MP -c $< -o $@

# The archive holds one object in which everything not exported is made local, so
# that its internal names (frame_*, spool_*, util_*) cannot clash with a program's.
$(PUBLIB_DIR)/libcarehub.a: $(PUBLIB_OBJ)
	@mkdir -p $(dir $@)
	$(say) "  AR [$(VARIANT)]  $@"
	$(Q)ld -r -o $(PUBLIB_DIR)/carehub-all.o $^ && objcopy --localize-hidden $(PUBLIB_DIR)/carehub-all.o \
		&& rm -f $@ && ar rcs $@ $(PUBLIB_DIR)/carehub-all.o && rm -f $(PUBLIB_DIR)/carehub-all.o

$(PUBLIB_DIR)/libcarehub.so.$(PUBLIB_VERSION): $(PUBLIB_OBJ) agents/lib/libcarehub.map
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)rm -f $(PUBLIB_DIR)/libcarehub.so.*   # an earlier version's object would be found first
	$(Q)$(CC) $(LDFLAGS_ALL) -shared -Wl,-soname,$(PUBLIB_SONAME) -Wl,--no-undefined \
		-Wl,--version-script,agents/lib/libcarehub.map -o $@ $(PUBLIB_OBJ) \
		$(shell pkg-config --libs $(PUBLIB_PKGS) 2>/dev/null)
	$(Q)ln -sf libcarehub.so.$(PUBLIB_VERSION) $(PUBLIB_DIR)/$(PUBLIB_SONAME)
	$(Q)ln -sf $(PUBLIB_SONAME) $(PUBLIB_DIR)/libcarehub.so

# The pc file's body after its variables, the same for the tree and the installed library.
PUBLIB_PC_BODY := '' 'Name: libcarehub' \
	'Description: carehub agent library: events to a carehub broker, store-and-forward' \
	'Version: $(PUBLIB_VERSION)' 'Requires.private: $(PUBLIB_PKGS)' \
	'Libs: -L$${libdir} -lcarehub' 'Cflags: -I$${includedir}'
# pkg-config finds libcarehub-uninstalled.pc before an installed libcarehub.pc when
# PKG_CONFIG_PATH names this directory: programs build against the tree as is.
# (its Version is carehub.c's CAREHUB_VERSION_STR)
$(PUBLIB_DIR)/libcarehub-uninstalled.pc: Makefile agents/lib/carehub.c
	@mkdir -p $(dir $@)
	$(Q)printf '%s\n' 'libdir=$${pcfiledir}' 'includedir=$(CURDIR)/include' $(PUBLIB_PC_BODY) > $@

.SECONDEXPANSION:
$(BIN)/carehub-%: $(OUT)/agents/carehub-%.o $$(call agent_parts,carehub-$$*) $(AGENT_LIB)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

$(BIN)/carehub: $(OUT)/agents/carehub.o $(call agent_parts,carehub) $(AGENT_LIB)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

$(OUT)/tests/%: $(OUT)/tests/unit/%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

# The agent library's tests link the agent programs' runtime, not the broker.
$(OUT)/tests/test_libcarehub: $(OUT)/tests/unit/test_libcarehub.o $(AGENT_LIB)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS) -lm

# What people read (agents/lib/cli_local.c, welcome's extensions) with the agents' runtime.
$(OUT)/tests/test_cli_local: $(OUT)/tests/unit/test_cli_local.o $(AGENT_LIB)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS) -lm

# carehub-school's own parts (rows, encodings) with the agents' runtime.
$(OUT)/tests/test_school: $(OUT)/tests/unit/test_school.o $(call agent_parts,carehub-school) $(AGENT_LIB)
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS) -lm

$(OUT)/tests/unit/test_school.o: | $(SCHEMA_TABLES)

$(BIN)/%: $(OUT)/bench/%.o
	@mkdir -p $(dir $@)
	$(say) "  LD [$(VARIANT)]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

-include $(BROKER_OBJ:.o=.d) $(UNIT_SRC:%.c=$(OUT)/%.d) $(BENCH_SRC:%.c=$(OUT)/%.d) \
         $(AGENT_LIB_SRC:%.c=$(OUT)/%.d) $(AGENT_PROG_SRC:%.c=$(OUT)/%.d) $(PUBLIB_OBJ:.o=.d) \
         $(AGENT_PART_SRC:%.c=$(OUT)/%.d)

# What a target needs from Debian (scripts/deps.sh names the sets): building and running
# only for make, run, install; the test tools only for the test targets.
deps:
	@sh scripts/deps.sh run

deps-test:
	@sh scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/run.sh $(CONFIG)

# The sanitized build used by the test suite.
san-build:
	@$(MAKE) --no-print-directory SAN=1 build/san/bin/carehubd $(AGENT_PROG_SRC:agents/%.c=build/san/bin/%) \
		$(patsubst build/rel/%,build/san/%,$(UNIT_BIN:$(OUT)/%=build/san/%))

unit: san-build
	@sh scripts/run-unit.sh build/san/tests

# The end-to-end tests run in E2E_JOBS processes (pytest-xdist; default 2, the machine's
# cores): each test starts its own brokers on ephemeral ports in its own directory, and
# mostly waits on them. E2E_JOBS=1 runs them in one process, in order.
E2E_JOBS ?= 2
e2e: san-build
	CAREHUB_BIN=$(CURDIR)/build/san/bin/carehubd CAREHUB_BIN_DIR=$(CURDIR)/build/san/bin \
		$(PY) -m pytest -q -rs $(if $(filter-out 1,$(E2E_JOBS)),-n $(E2E_JOBS)) tests/e2e

check: deps-test
	@$(MAKE) --no-print-directory layers
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory libcheck
	@$(MAKE) --no-print-directory opscheck
	@$(MAKE) --no-print-directory e2e

# libcarehub as an integrator gets it: only carehub_* exported (archive and shared
# object), and a program outside the tree built with pkg-config against both.
# Who may include whom (docs/architecture.md, "Layers"); shown a planted violation first.
layers:
	@sh scripts/check-layers.sh

libcheck:
	@$(MAKE) --no-print-directory SAN=0 lib
	@sh scripts/check-lib.sh build/rel/lib

# Running carehub as a service (docs/install.md): make install/uninstall into a staging
# root and a prefix, the unit through systemd-analyze verify, the alert rules through
# promtool, and sd_notify and the journal format against the sanitized broker.
opscheck:
	@$(MAKE) --no-print-directory SAN=0 all
	@sh scripts/check-install.sh
	@promtool check rules contrib/carehub-alerts.yml
	@promtool test rules tests/ops/carehub-alerts.test.yml
	@$(MAKE) --no-print-directory san-build
	CAREHUB_BIN=$(CURDIR)/build/san/bin/carehubd CAREHUB_BIN_DIR=$(CURDIR)/build/san/bin \
		$(PY) -m pytest -q -rs tests/ops

bench:
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@sh bench/run.sh
	@$(PY) bench/escalation.py
	@$(PY) bench/egress.py
	@$(PY) bench/storm.py
	@$(PY) bench/desks.py
	@$(PY) bench/register.py
	@$(PY) bench/phone_links.py

# libFuzzer targets for every reader of outside input (tests/fuzz; FUZZ_SECONDS each).
fuzz: deps-test
	@sh tests/fuzz/run.sh

# The end-to-end suite against the release carehubd under valgrind: a memory error or a
# leak definitely lost makes the broker exit 1, which fails the test that stopped it.
# Every carehubd process of the run logs to $(VG_LOG_DIR)/vg.PID.TIME.log; after the run
# scripts/valgrind-scan.py fails on an error in any of them, also of a broker a test
# killed (SIGKILL: no exit code, no summary; the errors it made until then are logged).
# Under valgrind the crash loop runs fewer cycles and the flood is smaller (the same
# code paths; `make check` runs the full counts against the sanitized build).
VG_LOG_DIR := build/memcheck
memcheck: deps-test
	@$(MAKE) --no-print-directory all
	@rm -rf $(VG_LOG_DIR) && mkdir -p $(VG_LOG_DIR)
	CAREHUB_BIN=$(CURDIR)/scripts/valgrind-carehubd CAREHUB_BIN_DIR=$(CURDIR)/bin \
	CAREHUB_VALGRIND_LOG_DIR=$(CURDIR)/$(VG_LOG_DIR) \
	CAREHUB_E2E_READY_TIMEOUT=60 CAREHUB_E2E_REPLY_TIMEOUT=20 CAREHUB_E2E_STOP_TIMEOUT=60 \
	CAREHUB_CRASH_CYCLES=$${CAREHUB_CRASH_CYCLES:-5} CAREHUB_FLOOD_EVENTS=$${CAREHUB_FLOOD_EVENTS:-40000} \
		$(PY) -m pytest -q -rs tests/e2e; rc=$$?; \
		$(PY) scripts/valgrind-scan.py $(VG_LOG_DIR) || rc=1; exit $$rc

# Long runs, not in check: SOAK_MINUTES (default 30) of load at half the measured
# maximum rate with escalations and webhooks, then the crash loop for 200 cycles.
soak: deps-test
	@$(MAKE) --no-print-directory all $(BENCH_BIN) san-build
	@$(PY) bench/soak.py
	CAREHUB_BIN=$(CURDIR)/build/san/bin/carehubd CAREHUB_BIN_DIR=$(CURDIR)/build/san/bin \
	CAREHUB_CRASH_CYCLES=$${CAREHUB_CRASH_CYCLES:-200} \
		$(PY) -m pytest -q -s tests/e2e/test_crash_loop.py

# A day at the hub, narrated (scripts/demo.py): under a minute; data left in var/demo.
demo:
	@sh scripts/deps.sh demo
	@$(MAKE) --no-print-directory all
	@$(PY) scripts/demo.py

# ---------------------------------------------------------------------------------------
# make install / uninstall (docs/install.md). PREFIX (default /usr/local) and DESTDIR (a
# staging root, for packages and the test) as usual; the config goes to
# $(DESTDIR)$(SYSCONFDIR)/carehub (SYSCONFDIR: /etc), the unit to $(SYSTEMDUNITDIR).
PREFIX         ?= /usr/local
SYSCONFDIR     ?= /etc
BINDIR         ?= $(PREFIX)/bin
SBINDIR        ?= $(PREFIX)/sbin
LIBDIR         ?= $(PREFIX)/lib
INCLUDEDIR     ?= $(PREFIX)/include
DATADIR        ?= $(PREFIX)/share
MANDIR         ?= $(DATADIR)/man
PKGCONFIGDIR   ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL        ?= install
LDCONFIG       ?= ldconfig
SHAREDIR       := $(DATADIR)/carehub
SCHEMADIR      := $(SHAREDIR)/schemas
CONFDIR        := $(SYSCONFDIR)/carehub
# Whatever pages man/ holds when make runs (written by their own change).
MAN_PAGES      := $(sort $(wildcard man/*.1 man/*.5 man/*.8))
PUBLIB_HEADERS := include/carehub.h include/carehub_wire.h
# The installed carehubd differs from bin/carehubd in one string: where the schemas
# are (broker.schemas still overrides it). Its main.o is compiled again whenever
# SCHEMADIR changes (the stamp holds the last one).
INST_DIR       := $(OUT)/inst
# The installed config: the shipped one with its data under the unit's StateDirectory.
INST_CONFIG_SED := -e 's|^\(  data_dir: *\)\.\./var/carehub |\1/var/lib/carehub/data|' \
	-e 's|^\(  key_file: *\)\.\./var/keys/data\.key |\1/var/lib/carehub/keys/data.key|'

.PHONY: FORCE
$(INST_DIR)/schemadir: FORCE
	@mkdir -p $(dir $@)
	@echo '$(SCHEMADIR)' | cmp -s - $@ || echo '$(SCHEMADIR)' > $@

$(INST_DIR)/main.o: broker/main.c $(INST_DIR)/schemadir
	$(say) "  CC [$(VARIANT) inst]  $<"
	$(Q)$(CC) $(CFLAGS_ALL) -UCAREHUB_SCHEMAS_DIR -DCAREHUB_SCHEMAS_DIR='"$(SCHEMADIR)"' \
		-MMD -MP -c $< -o $@

$(INST_DIR)/carehubd: $(INST_DIR)/main.o $(LIB_OBJ)
	$(say) "  LD [$(VARIANT) inst]  $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS)

-include $(INST_DIR)/main.d

install: all $(INST_DIR)/carehubd
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(SCHEMADIR) \
		$(DESTDIR)$(SHAREDIR)/prometheus $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(CONFDIR)
	$(INSTALL) -m 755 $(INST_DIR)/carehubd $(DESTDIR)$(SBINDIR)/carehubd
	$(INSTALL) -m 755 $(AGENT_PROGS) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 644 $(PUBLIB_DIR)/libcarehub.a $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 755 $(PUBLIB_DIR)/libcarehub.so.$(PUBLIB_VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libcarehub.so.$(PUBLIB_VERSION) $(DESTDIR)$(LIBDIR)/$(PUBLIB_SONAME)
	ln -sf $(PUBLIB_SONAME) $(DESTDIR)$(LIBDIR)/libcarehub.so
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' $(PUBLIB_PC_BODY) \
		> $(DESTDIR)$(PKGCONFIGDIR)/libcarehub.pc
	$(INSTALL) -m 644 $(PUBLIB_HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 644 $(SCHEMA_JSON) $(DESTDIR)$(SCHEMADIR)/
	$(INSTALL) -m 644 contrib/carehub-alerts.yml $(DESTDIR)$(SHAREDIR)/prometheus/
	set -e; for m in $(MAN_PAGES); do s=$${m##*.}; $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$s; \
		$(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	sed -e 's|/usr/local/sbin/carehubd|$(SBINDIR)/carehubd|' -e 's|/etc/carehub/|$(CONFDIR)/|g' \
		contrib/carehubd.service > $(DESTDIR)$(SYSTEMDUNITDIR)/carehubd.service
	sed $(INST_CONFIG_SED) config/carehub.yaml > $(DESTDIR)$(SHAREDIR)/carehub.yaml.dist
	@grep -q '^  data_dir: /var/lib/carehub/data' $(DESTDIR)$(SHAREDIR)/carehub.yaml.dist && \
		grep -q '^  key_file: /var/lib/carehub/keys/data.key' $(DESTDIR)$(SHAREDIR)/carehub.yaml.dist || \
		{ echo "install: config/carehub.yaml's data_dir or key_file line changed: update INST_CONFIG_SED"; exit 1; }
	@if [ -e $(DESTDIR)$(CONFDIR)/carehub.yaml ]; then \
		echo "install: kept $(DESTDIR)$(CONFDIR)/carehub.yaml (yours); the shipped one is $(DESTDIR)$(SHAREDIR)/carehub.yaml.dist"; \
	else $(INSTALL) -m 644 $(DESTDIR)$(SHAREDIR)/carehub.yaml.dist $(DESTDIR)$(CONFDIR)/carehub.yaml && \
		echo "install: wrote $(DESTDIR)$(CONFDIR)/carehub.yaml"; fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then $(LDCONFIG); fi

# Everything install wrote but the configuration, which is the operator's.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/carehubd $(AGENT_PROGS:$(BIN)/%=$(DESTDIR)$(BINDIR)/%) \
		$(DESTDIR)$(LIBDIR)/libcarehub.a $(DESTDIR)$(LIBDIR)/libcarehub.so.$(PUBLIB_VERSION) \
		$(DESTDIR)$(LIBDIR)/$(PUBLIB_SONAME) $(DESTDIR)$(LIBDIR)/libcarehub.so \
		$(DESTDIR)$(PKGCONFIGDIR)/libcarehub.pc $(PUBLIB_HEADERS:include/%=$(DESTDIR)$(INCLUDEDIR)/%) \
		$(SCHEMA_JSON:schemas/%=$(DESTDIR)$(SCHEMADIR)/%) $(DESTDIR)$(SHAREDIR)/carehub.yaml.dist \
		$(DESTDIR)$(SHAREDIR)/prometheus/carehub-alerts.yml $(DESTDIR)$(SYSTEMDUNITDIR)/carehubd.service \
		$(foreach m,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)))
	@rmdir $(DESTDIR)$(SCHEMADIR) $(DESTDIR)$(SHAREDIR)/prometheus $(DESTDIR)$(SHAREDIR) 2>/dev/null || :
	@echo "uninstall: left $(DESTDIR)$(CONFDIR) in place (your configuration) and any data in" \
		"/var/lib/carehub; remove them yourself if they should go too"

clean:
	rm -rf build bin
