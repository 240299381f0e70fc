#!/bin/sh
# Install what building and testing mtlslb needs, if it is missing
# (Debian/Ubuntu; run as root or with sudo available).
set -eu
need=""
for p in make gcc clang pkg-config libwolfssl-dev openssl curl python3 binutils libc6-dev valgrind musl-tools file; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
[ -z "$need" ] && exit 0
echo "installing:$need"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
