#!/bin/sh
# Install clang with its libFuzzer runtime (Debian/Ubuntu; run as root or
# with sudo available), as tests/deps.sh installs the rest.  run.sh fuzz
# calls it only when clang cannot link a libFuzzer target.
set -eu
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
need="clang"
# Newer Debian/Ubuntu ship libFuzzer apart from clang, in libclang-rt-dev.
apt-cache show libclang-rt-dev >/dev/null 2>&1 && need="$need libclang-rt-dev"
echo "installing: $need"
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
