#!/usr/bin/env bash
# Debian trixie root filesystems with python3.13 (Lambda's python3.13 runtime is Amazon Linux 2023;
# trixie is the nearest distribution whose own registry ships 3.13), one per Lambda architecture,
# for tests/test_lambda_runtime.py. Usage: .ci/rootfs.sh amd64|arm64 ... ; prints one root per line.
#
# Cached under ~/.cache/e5-onnx-ci/ (E5_ONNX_CI_CACHE), keyed by what it installs (suite, packages,
# mirror, build steps' version). Built into a temporary directory and renamed only when complete, under a lock,
# so a half-built root is never used. arm64 without emulating dpkg (debootstrap's second stage
# under qemu took 20-34 min): debootstrap's first stage natively, every downloaded package
# unpacked natively (dpkg-deb -x), then the only maintainer-script effects the tests need done by
# hand: passwd/group from base-passwd's masters, ld.so.cache by the root's own ldconfig under
# trixie's static qemu-aarch64 (copied into the root; the tests run it explicitly), and the
# stdlib's .pyc compiled by the amd64 root's python3.13 (.pyc do not depend on the CPU). The amd64 root also gets bin/python3.13 beside it: a wrapper that runs the root's
# interpreter on this machine's paths (through the root's own dynamic loader and libraries), which
# `e5-onnx bundle lambda --python-exe` compiles bytecode with.
# Needs root (debootstrap, chroot) and apt-get.
set -euo pipefail

SUITE=trixie
MIRROR=${E5_ONNX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# libstdc++6: onnxruntime's and awslambdaric's extensions link it (in Amazon Linux 2023 too)
PACKAGES=python3.13,libstdc++6
CACHE=${E5_ONNX_CI_CACHE:-$HOME/.cache/e5-onnx-ci}
STEPS=3  # bump when the build steps change
KEY=$(echo "$SUITE $PACKAGES $MIRROR $STEPS" | sha256sum | cut -c1-12)

log() { echo "rootfs.sh: $*" >&2; }

need_tools() {
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  fi
}

# trixie's qemu-user (10.x, static binaries) into DIR/qemu, with apt's own client and a private state
# directory (the machine's apt sources are not touched). Not this machine's qemu-user-static: before
# 8.x qemu showed aarch64 programs the host's x86 /proc/cpuinfo, and onnxruntime's CPU detection
# segfaults on it at import (measured with bookworm's 7.2).
fetch_qemu() {
  local d=$1/apt
  mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial"
  echo "deb $MIRROR $SUITE main" > "$d/sources.list"
  local o=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State=$d/state"
           -o Dir::State::status=/dev/null -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root)
  apt-get -q "${o[@]}" update >/dev/null
  (cd "$d" && apt-get -q "${o[@]}" download qemu-user >/dev/null)
  dpkg-deb -x "$d"/qemu-user_*.deb "$1/qemu"
  rm -rf "$d"
}

wrapper() {  # wrapper ROOT: ROOT/usr/lib/e5-onnx-ci/python3.13 runs ROOT's amd64 interpreter from this machine's paths
  local out=$1/usr/lib/e5-onnx-ci/python3.13
  mkdir -p "$(dirname "$out")"
  # the root's own loader and libraries; --argv0 makes sys.executable this script (subprocesses such as
  # compileall's workers come back through it) and Python finds ROOT/usr/lib/python3.13 by walking up from it
  cat > "$out" <<'EOF'
#!/bin/sh
self=$(readlink -f "$0"); root=${self%/usr/lib/e5-onnx-ci/python3.13}
exec "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --argv0 "$self" --library-path "$root/usr/lib/x86_64-linux-gnu" "$root/usr/bin/python3.13" "$@"
EOF
  chmod 755 "$out"
}

fail() { tail -20 "$1/debootstrap.log" >&2; rm -rf "$1"; }

build() {  # build() ARCH DEST: a complete root at DEST/root, or nothing
  local arch=$1 dest=$2 tmp
  tmp=$(mktemp -d "$CACHE/.building-$arch-XXXXXX")
  local t0=$SECONDS
  if [ "$arch" = amd64 ]; then
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp/root" "$MIRROR" > "$tmp/debootstrap.log" 2>&1 \
      || { fail "$tmp"; return 1; }
  else
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp/root" "$MIRROR" \
      > "$tmp/debootstrap.log" 2>&1 || { fail "$tmp"; return 1; }
    fetch_qemu "$tmp" || { fail "$tmp"; return 1; }
    log "arm64 first stage done in $((SECONDS - t0)) s; unpacking natively ..."
    local r=$tmp/root deb py
    for deb in "$r"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$r" || { fail "$tmp"; return 1; }; done
    cp "$r/usr/share/base-passwd/passwd.master" "$r/etc/passwd"
    cp "$r/usr/share/base-passwd/group.master" "$r/etc/group"
    cp "$tmp/qemu/usr/bin/qemu-aarch64" "$r/usr/bin/qemu-aarch64-static"  # the tests run it explicitly
    rm -rf "$tmp/qemu"
    chroot "$r" /usr/bin/qemu-aarch64-static /usr/sbin/ldconfig >> "$tmp/debootstrap.log" 2>&1 || { fail "$tmp"; return 1; }
    py=$(main amd64 | sed 's|/root$|/bin/python3.13|') || { fail "$tmp"; return 1; }
    "$py" -m compileall -q -j0 -s "$r" -p / -x 'lib2to3|test/|/tests?/' "$r/usr/lib/python3.13" \
      >> "$tmp/debootstrap.log" 2>&1 || { fail "$tmp"; return 1; }
    chroot "$r" /usr/bin/qemu-aarch64-static /usr/bin/python3.13 -c 'import json, ssl, zipfile' \
      >> "$tmp/debootstrap.log" 2>&1 || { fail "$tmp"; return 1; }
  fi
  rm -f "$tmp"/root/var/cache/apt/archives/*.deb
  mkdir -p "$tmp/root/var/task" "$tmp/root/var/runtime"  # mount points for the bundle and the runtime client
  if [ "$arch" = amd64 ]; then
    wrapper "$tmp/root"
    mkdir "$tmp/bin"; ln -s ../root/usr/lib/e5-onnx-ci/python3.13 "$tmp/bin/python3.13"
  fi
  echo "$((SECONDS - t0))" > "$tmp/build-seconds"
  mv -T "$tmp" "$dest"
  log "$arch root built in $((SECONDS - t0)) s: $dest/root"
}

main() {
  [ $# -gt 0 ] || { echo "usage: $0 amd64|arm64 ..." >&2; exit 2; }
  mkdir -p "$CACHE"
  for arch in "$@"; do
    case "$arch" in amd64|arm64) ;; *) echo "unknown arch $arch (amd64, arm64)" >&2; exit 2;; esac
    local dest="$CACHE/rootfs-$SUITE-$arch-$KEY"
    (
      flock 9
      if [ ! -x "$dest/root/usr/bin/python3.13" ]; then
        need_tools
        build "$arch" "$dest"
      fi
    ) 9>"$CACHE/.lock-$arch"
    echo "$dest/root"
  done
}

main "$@"
