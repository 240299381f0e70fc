#!/bin/sh
# tests/cross.sh DIR: make the cross toolchains, qemu-user and a Debian
# wolfSSL sysroot per target ready for test.sh: DIR/arm64/usr and
# DIR/armhf/usr (apt-get download + dpkg -x, so no multiarch clash with
# the host's packages), and DIR/arm64-musl (musl's libc for arm64, with a
# gcc specs file).  Installs what is missing (Debian/Ubuntu, as root or
# with sudo that asks no password).
# Exit 0 when ready; otherwise prints why on stdout and exits 3.
set -u
D=$1
mkdir -p "$D"
need=""
for p in gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross \
         libc6-dev-armhf-cross qemu-user binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
arches=$(dpkg --print-foreign-architectures 2>/dev/null)
if [ -n "$need" ] || ! echo "$arches" | grep -q arm64 || ! echo "$arches" | grep -q armhf; then
    SUDO=""
    [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo -n"; }
    if { [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; } || ! command -v apt-get >/dev/null; then
        echo "cannot install the cross toolchain (needs root or sudo, and apt-get):$need"
        exit 3
    fi
    $SUDO dpkg --add-architecture arm64 && $SUDO dpkg --add-architecture armhf
    # A mirror mid-sync can fail one index; what is needed usually still comes.
    $SUDO apt-get update -qq >/dev/null 2>&1
    if [ -n "$need" ] && ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $need >"$D/apt.log" 2>&1; then
        echo "cannot install the cross toolchain: $(tail -1 "$D/apt.log")"
        exit 3
    fi
fi
for a in arm64 armhf; do
    [ -e "$D/$a/.done" ] && continue
    mkdir -p "$D/$a/debs"
    if ! (cd "$D/$a/debs" && apt-get download "libwolfssl-dev:$a" "libwolfssl35:$a" >/dev/null 2>&1); then
        apt-get update -qq >/dev/null 2>&1
        if ! (cd "$D/$a/debs" && apt-get download "libwolfssl-dev:$a" "libwolfssl35:$a" >/dev/null 2>&1); then
            echo "cannot download the $a wolfSSL packages"
            exit 3
        fi
    fi
    for f in "$D/$a/debs"/*.deb; do dpkg -x "$f" "$D/$a"; done
    : >"$D/$a/.done"
done
# musl for arm64 (the size-first static build): its libc and headers under
# DIR/arm64-musl, and DIR/arm64-musl/musl.specs pointing gcc at them
# (aarch64-linux-gnu-gcc -specs=...; Debian's specs name /usr paths).
M=$(cd "$D" && pwd)/arm64-musl
if [ ! -e "$M/.done" ]; then
    mkdir -p "$M/debs"
    if ! (cd "$M/debs" && apt-get download musl:arm64 musl-dev:arm64 >/dev/null 2>&1); then
        echo "cannot download the arm64 musl packages"
        exit 3
    fi
    for f in "$M/debs"/*.deb; do dpkg -x "$f" "$M"; done
    : >"$M/.done"
fi
sed "s|/usr/include/aarch64-linux-musl|$M/usr/include/aarch64-linux-musl|g; s|/usr/lib/aarch64-linux-musl|$M/usr/lib/aarch64-linux-musl|g" \
    "$M/usr/lib/aarch64-linux-musl/musl-gcc.specs" >"$M/musl.specs" || exit 3
exit 0
