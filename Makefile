# mtlslb - see README.  Targets: all (default), static, test, demo, bench,
# install, clean.  Variables: CC, CROSS_COMPILE, WOLFSSL_PREFIX (an installed
# wolfSSL), WOLFSSL_SRC (a wolfSSL source tree to build the fast static one
# from), PREFIX, DESTDIR, SAN=1 (AddressSanitizer + UBSan), BIN.

CROSS_COMPILE ?=
ifeq ($(origin CC),default)
CC := $(CROSS_COMPILE)cc
ifneq ($(CROSS_COMPILE),)
CC := $(CROSS_COMPILE)gcc
endif
endif
STRIP ?= $(CROSS_COMPILE)strip
PKG_CONFIG ?= pkg-config
PREFIX ?= /usr/local
DESTDIR ?=
ifeq ($(SAN),1)
BIN ?= mtlslb-san
else
BIN ?= mtlslb
endif

WOLFSSL_TRIPLET := $(shell $(CC) -dumpmachine 2>/dev/null)

ifneq ($(WOLFSSL_SRC),)
# A wolfSSL source tree: build one with only what mtlslb needs, the fast
# single-precision maths with assembly for the target, single-threaded, and
# link it in statically (SPEC 10).  Built once per target in build/.
WOLFSSL_BUILD ?= build/wolfssl-$(or $(WOLFSSL_TRIPLET),native)
WOLFSSL_LIB := $(abspath $(WOLFSSL_BUILD))/prefix/lib/libwolfssl.a
WOLFSSL_CFLAGS := -I$(abspath $(WOLFSSL_BUILD))/prefix/include
WOLFSSL_LIBS := $(WOLFSSL_LIB) -lm
WOLFSSL_CONFIGURE := --enable-static --disable-shared --enable-singlethreaded \
	--enable-tls13 --disable-oldtls --enable-crl --enable-sni --enable-session-ticket \
	--enable-opensslall --enable-opensslextra --enable-sp=yes \
	--enable-curve25519 --enable-alpn --enable-altcertchains \
	--disable-examples --disable-crypttests --disable-benchmark
# What Debian's --enable-distro build has and mtlslb relies on: SAN parsing,
# per-SSL data, the peer certificate kept, v1 certificates with extensions.
# getrandom() seeds its random generators: one system call, no descriptor.
WOLFSSL_SRC_CFLAGS := -O2 -DWOLFSSL_ALT_NAMES -DHAVE_EX_DATA -DKEEP_PEER_CERT -DALLOW_V1_EXTENSIONS \
	-DWOLFSSL_GETRANDOM -ffunction-sections -fdata-sections
# Only the wolfSSL functions mtlslb reaches are linked in.
LDFLAGS += -Wl,--gc-sections
ifneq ($(filter x86_64-%,$(WOLFSSL_TRIPLET)),)
WOLFSSL_CONFIGURE += --enable-sp-asm --enable-aesni --enable-intelasm
else ifneq ($(filter aarch64-%,$(WOLFSSL_TRIPLET)),)
WOLFSSL_CONFIGURE += --enable-sp-asm --enable-armasm
endif
ifneq ($(CROSS_COMPILE),)
WOLFSSL_CONFIGURE += --host=$(WOLFSSL_TRIPLET)
endif
else ifneq ($(WOLFSSL_PREFIX),)
WOLFSSL_CFLAGS := -I$(WOLFSSL_PREFIX)/include
# Debian-style sysroots keep libraries in lib/<triplet> (apt-get download + dpkg -x).
WOLFSSL_LIBS := -L$(WOLFSSL_PREFIX)/lib $(if $(WOLFSSL_TRIPLET),-L$(WOLFSSL_PREFIX)/lib/$(WOLFSSL_TRIPLET)) -lwolfssl
else
WOLFSSL_CFLAGS := $(shell $(PKG_CONFIG) --cflags wolfssl 2>/dev/null)
WOLFSSL_LIBS := $(shell $(PKG_CONFIG) --libs wolfssl 2>/dev/null || echo -lwolfssl)
endif

# CFLAGS is the caller's (optimisation, target flags: OpenWrt passes its
# own); the language level and warnings are always added.
CFLAGS ?= -O2 -g
MTLSLB_CFLAGS := -std=c99 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(SAN),1)
MTLSLB_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

.PHONY: all static test demo bench install clean

all: $(BIN)

$(BIN): mtlslb.c mtlslb.h Makefile $(WOLFSSL_LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(MTLSLB_CFLAGS) $(WOLFSSL_CFLAGS) -o $@ mtlslb.c $(LDFLAGS) $(WOLFSSL_LIBS)

# wolfSSL and libc linked in: one file to copy onto a board.
static: mtlslb.c mtlslb.h $(WOLFSSL_LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(MTLSLB_CFLAGS) $(WOLFSSL_CFLAGS) -static -o $(BIN) mtlslb.c $(LDFLAGS) \
		$(WOLFSSL_LIBS) -lm

# Both install what is missing first (Debian/Ubuntu, tests/deps.sh).
# The library is rebuilt when the options it is built with change.
ifneq ($(WOLFSSL_LIB),)
WOLFSSL_STAMP := $(WOLFSSL_BUILD).options
WOLFSSL_OPTIONS := $(WOLFSSL_CONFIGURE) CC=$(CC) CFLAGS=$(WOLFSSL_SRC_CFLAGS)
.PHONY: wolfssl-options
wolfssl-options:
$(WOLFSSL_STAMP): wolfssl-options
	@mkdir -p $(dir $@); echo '$(WOLFSSL_OPTIONS)' | cmp -s - $@ || echo '$(WOLFSSL_OPTIONS)' >$@
$(WOLFSSL_LIB): $(WOLFSSL_STAMP)
	rm -rf $(WOLFSSL_BUILD) && mkdir -p $(WOLFSSL_BUILD)
	cp -a $(WOLFSSL_SRC) $(WOLFSSL_BUILD)/src
	cd $(WOLFSSL_BUILD)/src && ./autogen.sh >/dev/null 2>&1 && \
		./configure -q --prefix=$(abspath $(WOLFSSL_BUILD))/prefix $(WOLFSSL_CONFIGURE) \
			CC="$(CC)" CFLAGS="$(WOLFSSL_SRC_CFLAGS)" >../configure.log 2>&1 && \
		$(MAKE) >../make.log 2>&1 && $(MAKE) install >../install.log 2>&1 || \
		{ echo "wolfSSL build failed: see $(WOLFSSL_BUILD)/*.log" >&2; exit 1; }
endif

test:
	sh tests/deps.sh
	$(MAKE) $(BIN)
	MTLSLB_BIN=$(BIN) MTLSLB_SAN=$(SAN) ./test.sh

demo:
	sh tests/deps.sh
	$(MAKE) $(BIN)
	tests/demo.sh

# The comparison with haproxy and stunnel (tests/bench.sh; installs them as root).
bench:
	sh tests/deps.sh
	tests/bench.sh

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/mtlslb
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/mtlslb
	install -m 644 sample.conf $(DESTDIR)$(PREFIX)/share/mtlslb/sample.conf

clean:
	rm -rf mtlslb mtlslb-san mtlslb-static *.o demo build

# libFuzzer targets (tests/fuzz/run.sh; clang): each runs FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	tests/fuzz/run.sh fuzz $(FUZZ_SECONDS)
