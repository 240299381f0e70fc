# mtlslb - see README.  Targets: all (default), static, test, demo, bench,
# install, clean.  Variables: CC, CROSS_COMPILE, WOLFSSL_PREFIX (an installed
# wolfSSL), WOLFSSL_SRC (a wolfSSL source tree to build the fast static one
# from; SMALL=1 builds it size first), PREFIX, DESTDIR, SAN=1
# (AddressSanitizer + UBSan), BIN.  Smallest: make static WOLFSSL_SRC=DIR
# SMALL=1 CC=musl-gcc.

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
# A wolfSSL source tree: build one with only what mtlslb needs, single-
# threaded, and link it in statically (SPEC 10).  Built once per target and
# flavour in build/: fast (default) with the single-precision maths in
# assembly for the target; SMALL=1 size first (-Os, the single-precision
# maths for P-256 and RSA-2048 only, other sizes through the generic maths).
# A musl CC (musl-gcc, or a specs file naming musl) gets its own build.
WOLFSSL_FLAVOUR := $(if $(findstring musl,$(WOLFSSL_TRIPLET)),,$(if $(findstring musl,$(CC)),-musl))$(if $(filter 1,$(SMALL)),-small)
WOLFSSL_BUILD ?= build/wolfssl-$(or $(WOLFSSL_TRIPLET),native)$(WOLFSSL_FLAVOUR)
WOLFSSL_LIB := $(abspath $(WOLFSSL_BUILD))/prefix/lib/libwolfssl.a
WOLFSSL_CFLAGS := -I$(abspath $(WOLFSSL_BUILD))/prefix/include
WOLFSSL_LIBS := $(WOLFSSL_LIB)
# The OpenSSL layer without --enable-opensslall: HAVE_STUNNEL gives the
# servername callback and wolfSSL_set_SSL_CTX, and the peer certificate is
# kept without its key decoded into EVP/EC_KEY/BIGNUM objects (opensslall
# did that: 18 KB per connection, for the connection's life).
WOLFSSL_CONFIGURE := --enable-static --disable-shared --enable-singlethreaded \
	--enable-tls13 --disable-oldtls --enable-crl --enable-sni --enable-session-ticket \
	--enable-opensslextra --enable-alpn --enable-altcertchains \
	--disable-examples --disable-crypttests --disable-benchmark
# No finite-field DH (mtlslb's suites are ECDHE; its log() and pow() were
# the only reason to link libm: 0.3 MB of idle RSS) and no SHA-3.
WOLFSSL_CONFIGURE += --disable-dh --disable-sha3
# What Debian's --enable-distro build has and mtlslb relies on: SAN parsing,
# per-SSL data, v1 certificates with extensions.  getrandom() seeds its
# random generators: one system call, no descriptor.  KEEP_PEER_CERT is not
# wanted (mtlslb keeps the client certificate's DER itself as it is
# verified), but the OpenSSL layer turns it on whatever was asked: a decoded
# copy of the client certificate (its names, its DER) held by every
# connection for its life, 3.2 KB of the 12.7 per idle connection measured
# here.  The copy in build/ of a 5.5.4 tree is therefore edited so that
# MTLSLB_NO_KEEP_PEER_CERT keeps it off: the forcing #if in settings.h gets
# that condition, and the one function that needs the kept certificate
# (wolfSSL_cmp_peer_cert_to_file, unused) is left out without it.  Other
# versions are built unedited (the macro then does nothing).
WOLFSSL_SRC_CFLAGS := -DHAVE_STUNNEL -DWOLFSSL_ALT_NAMES -DHAVE_EX_DATA \
	-DALLOW_V1_EXTENSIONS -DWOLFSSL_GETRANDOM -DMTLSLB_NO_KEEP_PEER_CERT \
	-ffunction-sections -fdata-sections
# Only the wolfSSL functions mtlslb reaches are linked in.
LDFLAGS += -Wl,--gc-sections
ifeq ($(SMALL),1)
# The P-256 and RSA-2048 assembly costs ~230 KB and makes handshakes ~1.7 x
# faster than its C (measured on x86_64: 616 -> 850 KB, 766 -> 449 us in
# tests/hsloop.c); sp=small (no tables) would be 575 KB and 2,660 us.
WOLFSSL_CONFIGURE += --enable-sp=ec256,rsa2048 --enable-curve25519 --enable-aesgcm=small
WOLFSSL_SRC_CFLAGS := -Os $(WOLFSSL_SRC_CFLAGS)
ifneq ($(filter x86_64-% aarch64-%,$(WOLFSSL_TRIPLET)),)
WOLFSSL_CONFIGURE += --enable-sp-asm
endif
else
WOLFSSL_CONFIGURE += --enable-sp=yes --enable-curve25519
WOLFSSL_SRC_CFLAGS := -O2 $(WOLFSSL_SRC_CFLAGS)
# x86_64: AES-NI (whose GCM makes its own H, so the per-key 4-bit table,
# 512 bytes per direction and connection, is never used: aesgcm=small).
# aarch64: SP assembly only; wolfSSL 5.5.4's --enable-armasm needs the
# ARMv8 crypto extensions without checking for them (SIGILL on a Pi 3 or 4).
ifneq ($(filter x86_64-%,$(WOLFSSL_TRIPLET)),)
WOLFSSL_CONFIGURE += --enable-sp-asm --enable-aesni --enable-intelasm --enable-aesgcm=small
else ifneq ($(filter aarch64-%,$(WOLFSSL_TRIPLET)),)
WOLFSSL_CONFIGURE += --enable-sp-asm
endif
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
# own); the language level and warnings are always added.  No unwind
# tables (.eh_frame, 11 KB of a 150 KB binary): C without exceptions never
# unwinds; with -g, debuggers and valgrind read .debug_frame instead.
ifeq ($(SMALL),1)
CFLAGS ?= -Os -g -fno-asynchronous-unwind-tables
else
CFLAGS ?= -O2 -g -fno-asynchronous-unwind-tables
endif
MTLSLB_CFLAGS := -std=c99 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(SAN),1)
MTLSLB_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

.PHONY: all static test demo bench install clean

all: $(BIN)

# The binary is rebuilt when how it is built changes (CC, CROSS_COMPILE,
# CFLAGS, WOLFSSL_PREFIX, WOLFSSL_SRC, ...), not only when its sources do:
# one stamp per BIN holds the command's flags.
BUILD_FLAGS := $(CC) $(CPPFLAGS) $(CFLAGS) $(MTLSLB_CFLAGS) $(WOLFSSL_CFLAGS) $(LDFLAGS) $(WOLFSSL_LIBS)
FLAGS_STAMP := build/flags/$(subst /,_,$(BIN))
.PHONY: build-flags
build-flags:
$(FLAGS_STAMP): build-flags
	@mkdir -p $(dir $@); echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' >$@

$(BIN): mtlslb.c mtlslb.h Makefile $(WOLFSSL_LIB) $(FLAGS_STAMP)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(MTLSLB_CFLAGS) $(WOLFSSL_CFLAGS) -o $@ mtlslb.c $(LDFLAGS) $(WOLFSSL_LIBS)

# wolfSSL and libc linked in: one file to copy onto a board.
# -lm: a libwolfssl.a with DH (Debian's) needs log() and pow().
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
	cd $(WOLFSSL_BUILD)/src && ! grep -q '"5\.5\.4"' wolfssl/version.h || { \
		sed -i '/^#if defined(HAVE_EX_DATA) && !defined(NO_FILESYSTEM)$$/{N;s/)\nint wolfSSL_cmp_peer_cert_to_file(/) \&\& defined(KEEP_PEER_CERT)\nint wolfSSL_cmp_peer_cert_to_file(/}' src/ssl.c && \
		sed -i '/^#if defined(OPENSSL_EXTRA) && !defined(NO_CERTS)$$/{N;s/)\n    #undef  KEEP_PEER_CERT$$/) \&\& !defined(MTLSLB_NO_KEEP_PEER_CERT)\n    #undef  KEEP_PEER_CERT/}' wolfssl/wolfcrypt/settings.h; }
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

# Keeps what was downloaded (build/src, build/sysroot: the README's
# places for the wolfSSL source and a target's libwolfssl); rm -rf build
# for those too.
clean:
	rm -rf mtlslb mtlslb-san mtlslb-static *.o demo build/wolfssl-* build/flags tests/work

# libFuzzer targets (tests/fuzz/run.sh; clang): each runs FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	tests/fuzz/run.sh fuzz $(FUZZ_SECONDS)
