# mtlslb - see README.  Targets: all (default), static, test, demo, bench,
# install, clean.  Variables: CC, CROSS_COMPILE, WOLFSSL_PREFIX, PREFIX,
# DESTDIR, SAN=1 (AddressSanitizer + UndefinedBehaviorSanitizer), BIN.

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

ifneq ($(WOLFSSL_PREFIX),)
WOLFSSL_CFLAGS := -I$(WOLFSSL_PREFIX)/include
# Debian-style sysroots keep libraries in lib/<triplet> (apt-get download + dpkg -x).
WOLFSSL_TRIPLET := $(shell $(CC) -dumpmachine 2>/dev/null)
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

$(BIN): mtlslb.c mtlslb.h Makefile
	$(CC) $(CPPFLAGS) $(CFLAGS) $(MTLSLB_CFLAGS) $(WOLFSSL_CFLAGS) -o $@ mtlslb.c $(LDFLAGS) $(WOLFSSL_LIBS)

# wolfSSL and libc linked in: one file to copy onto a board.
static: mtlslb.c mtlslb.h
	$(CC) $(CPPFLAGS) $(CFLAGS) $(MTLSLB_CFLAGS) $(WOLFSSL_CFLAGS) -static -o $(BIN) mtlslb.c $(LDFLAGS) \
		$(WOLFSSL_LIBS) -lm

# Both install what is missing first (Debian/Ubuntu, tests/deps.sh).
test:
	sh tests/deps.sh
	$(MAKE) $(BIN)
	MTLSLB_BIN=$(BIN) MTLSLB_SAN=$(SAN) ./test.sh

demo:
	sh tests/deps.sh
	$(MAKE) $(BIN)
	tests/demo.sh

bench:
	@echo "make bench: not available yet (the load generator and peer comparison are a later release)" >&2
	@exit 1

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/mtlslb
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/mtlslb
	install -m 644 sample.conf $(DESTDIR)$(PREFIX)/share/mtlslb/sample.conf

clean:
	rm -rf mtlslb mtlslb-san mtlslb-static *.o demo
