#!/bin/sh
# tests/wolfssl-src.sh DIR: a wolfSSL source tree, Debian's (the same
# 5.5.4 with Debian's security patches), unpacked under DIR; prints its
# path.  Adds a deb-src entry and installs autoconf/automake/libtool when
# missing (Debian/Ubuntu, as root or with sudo that asks no password).
# Exit 3 with the reason when it cannot.
set -u
D=$1
mkdir -p "$D"
for d in "$D"/wolfssl-*/; do
    [ -f "$d/configure.ac" ] && { echo "${d%/}"; exit 0; }
done
SUDO=""
[ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo -n"; }
if { [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; } || ! command -v apt-get >/dev/null; then
    echo "cannot fetch the wolfSSL source (needs root or sudo, and apt-get)"; exit 3
fi
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
            $SUDO tee /etc/apt/sources.list.d/mtlslb-deb-src.sources >/dev/null
    else
        grep '^deb ' /etc/apt/sources.list 2>/dev/null | sed 's/^deb /deb-src /' |
            $SUDO tee /etc/apt/sources.list.d/mtlslb-deb-src.list >/dev/null
    fi
    $SUDO apt-get update -qq >/dev/null 2>&1
fi
need=""
for p in autoconf automake libtool dpkg-dev; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
[ -n "$need" ] && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1
(cd "$D" && apt-get source -qq wolfssl >/dev/null 2>&1) || { echo "apt-get source wolfssl failed"; exit 3; }
for d in "$D"/wolfssl-*/; do
    [ -f "$d/configure.ac" ] && { echo "${d%/}"; exit 0; }
done
echo "no wolfSSL source tree after apt-get source"
exit 3
