#!/usr/bin/env bash
# Installs what poprelay needs. Idempotent: installs only what is missing;
# needs root when anything is.
#
#   (no option)  to build: libdb-dev and a C++ toolchain
#   --demo       also what scripts/demo.sh runs: Berkeley DB utilities,
#                sendmail (makemap, sendmail -bt with a .cf built by m4),
#                Dovecot, redis-tools (whose redis-check-rdb is the Redis
#                server: run under the name redis-server, as the tests and
#                npm run demo:cluster do, it serves without a system service
#                starting on port 6379), and the system user "poprelay" (the
#                shipped Dovecot config runs the hook as it)
#   --test       also the rest of the real peers the test suite drives:
#                flock/setpriv/unshare/nsenter/pivot_root, iproute2, strace;
#                the packaging tools for npm run deb (dpkg-dev, debhelper,
#                lintian, fakeroot, the shell linter, and systemd for
#                systemd-analyze);
#                Postfix's postmap and Exim, unpacked (apt-get download,
#                dpkg -x) into $PEERS rather than installed, because Postfix
#                conflicts with sendmail-bin; the user "Debian-exim" (Exim
#                refuses to run without it); Node.js 22 and 24 from the npm
#                registry's node-linux-<arch> packages, unpacked into
#                $PEERS/node/<major>, in which the tests load the addon built
#                for this Node (one Node-API build must serve them all); and
#                a Debian 13 tree in $PEERS/trixie (debootstrap), in which the
#                tests run Dovecot 2.4 chrooted, since Debian 12 ships only
#                2.3, and which test/system.test.ts boots with systemd as
#                PID 1 (test/support/systemd.ts): the tree also holds systemd,
#                dbus, nodejs, libdb, db5.3-util, redis-server and
#                valkey-server (the engine tests run on Valkey too: Debian 13
#                is the first to ship it), and its apt
#                cache holds sendmail, Postfix and Exim (they conflict with
#                one another: the test installs each in turn with apt, in a
#                booted system that has no network). An existing tree is
#                upgraded in place; $PEERS/trixie/.boot-packages names what
#                it was last given.
set -euo pipefail

build_pkgs=(libdb-dev g++ make python3)
demo_pkgs=(db5.3-util sendmail-bin sendmail-cf m4 dovecot-core dovecot-pop3d dovecot-imapd redis-tools)
test_pkgs=(util-linux iproute2 strace debootstrap man-db libidn12 libgnutls-dane0 libnsl2 libpcre2-8-0
  dpkg-dev debhelper lintian fakeroot shellcheck systemd dpkg-repack)
PEERS=/var/cache/poprelay-test-peers

mode=${1:-}
pkgs=("${build_pkgs[@]}")
case "$mode" in
  '') ;;
  --demo) pkgs+=("${demo_pkgs[@]}") ;;
  --test) pkgs+=("${demo_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: install-deps.sh [--demo | --test]" >&2; exit 2 ;;
esac

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: $1; run this script as root" >&2
    exit 1
  fi
}

ensure_user() {
  if id -u "$1" >/dev/null 2>&1; then return; fi
  need_root "the tests need a system user $1"
  echo "install-deps: adding system user $1"
  useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$1"
}

# Postfix and Exim, unpacked where the tests look for them.
ensure_peers() {
  if [[ -x $PEERS/root/usr/sbin/postmap && -x $PEERS/root/usr/sbin/exim4 ]]; then return; fi
  need_root "the tests need Postfix and Exim unpacked in $PEERS"
  echo "install-deps: unpacking postfix and exim4-daemon-light into $PEERS"
  rm -rf "$PEERS" && mkdir -p "$PEERS/debs" "$PEERS/root"
  chown _apt "$PEERS/debs" 2>/dev/null || true
  # The package lists may be empty on a fresh machine whose packages were all present.
  (cd "$PEERS/debs" && { apt-get download postfix exim4-daemon-light || { apt-get update -q && apt-get download postfix exim4-daemon-light; }; })
  for deb in "$PEERS"/debs/*.deb; do dpkg -x "$deb" "$PEERS/root"; done
}

# Other Node.js majors, for the addon's ABI test; not put on any PATH.
ensure_nodes() {
  local arch major
  case $(uname -m) in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) echo "install-deps: no Node.js package for $(uname -m); the Node 22/24 tests will fail" >&2; return ;; esac
  for major in 22 24; do
    if [[ -x $PEERS/node/$major/bin/node ]]; then continue; fi
    need_root "the tests need Node.js $major unpacked in $PEERS/node/$major"
    echo "install-deps: unpacking node-linux-$arch@$major into $PEERS/node/$major"
    rm -rf "$PEERS/node/$major" && mkdir -p "$PEERS/node/$major"
    local tgz
    tgz=$(cd "$PEERS/node" && npm pack --silent "node-linux-$arch@$major")
    tar -xzf "$PEERS/node/$tgz" -C "$PEERS/node/$major" --strip-components=1
    rm -f "$PEERS/node/$tgz"
  done
}

# Dovecot 2.4, with the user poprelay under the same uid and gid as here.
# A machine that cannot reach Debian 13's archive gets $t.unavailable with
# the reason instead, and the tests skip Dovecot 2.4, saying why.
ensure_trixie() {
  local t=$PEERS/trixie
  if [[ ! -x $t/usr/sbin/dovecot ]]; then
    need_root "the tests need Dovecot 2.4 in a Debian 13 tree in $t"
    echo "install-deps: debootstrap of Debian 13 with Dovecot 2.4 into $t"
    rm -rf "$t"
    if ! debootstrap --variant=minbase --include=dovecot-core,dovecot-pop3d,dovecot-imapd trixie "$t" http://deb.debian.org/debian >"$PEERS/trixie.log" 2>&1; then
      tail -5 "$PEERS/trixie.log" >&2
      echo "debootstrap of Debian 13 failed: $(grep -m1 -E '^E:' "$PEERS/trixie.log" || tail -1 "$PEERS/trixie.log") (log: $PEERS/trixie.log)" >"$t.unavailable"
      echo "install-deps: WARNING: $(cat "$t.unavailable"); the Dovecot 2.4 tests will be skipped" >&2
      rm -rf "$t"
      return
    fi
  fi
  rm -f "$t.unavailable"
  if ! chroot "$t" id -u poprelay >/dev/null 2>&1; then
    need_root "the tests need the user poprelay in $t"
    chroot "$t" groupadd --system -g "$(id -g poprelay)" poprelay
    chroot "$t" useradd --system -u "$(id -u poprelay)" -g poprelay --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin poprelay
  fi
  ensure_trixie_boot "$t"
}

# What test/system.test.ts needs in a tree it boots: systemd, and every
# package it installs, so that its apt runs offline. Installed: what
# conflicts with nothing else run there (in the Debian 13 tree, the
# chrooted Dovecot 2.4 tests). Only downloaded into the tree's apt cache
# (/var/cache/apt/archives), with their dependencies: the MTAs, which
# exclude one another.
# shellcheck disable=SC2034 # read through namerefs in boot_ready and ensure_boot
trixie_installed=(systemd systemd-sysv dbus nodejs libdb5.3t64 db5.3-util redis-server valkey-server)
# shellcheck disable=SC2034
trixie_cached=(sendmail postfix exim4-daemon-light)
bookworm_installed=(systemd systemd-sysv dbus dovecot-core dovecot-pop3d dovecot-imapd libdb5.3 db5.3-util redis-server
  python3 ca-certificates)
# shellcheck disable=SC2034
bookworm_cached=(sendmail)

# In the tree, in a mount namespace of its own with /proc; no service starts.
in_tree() {
  # shellcheck disable=SC2016 # the inner sh expands them
  unshare -m sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"' "$1" "${@:2}"
}

# boot_ready TREE INSTALLED CACHED (the names of two arrays): whether the
# tree has it all, the packages installed and nothing for apt to fetch for
# the cached ones (--print-uris lists what it would).
boot_ready() {
  local t=$1 p uris
  local -n inst=$2 cached=$3
  [[ -x $t/usr/lib/systemd/systemd && $(cat "$t/.boot-packages" 2>/dev/null) == "${inst[*]} / ${cached[*]}" ]] || return 1
  for p in "${inst[@]}"; do
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    chroot "$t" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
  for p in "${cached[@]}"; do
    uris=$(chroot "$t" apt-get install -q -y --no-install-recommends --download-only --print-uris "$p" 2>/dev/null) || return 1
    if grep -q "^'" <<<"$uris"; then return 1; fi
  done
}

# ensure_boot TREE LOG INSTALLED CACHED: installs and downloads what is
# missing (the tree's .boot-packages names what it was given); 1 on failure.
ensure_boot() {
  local t=$1 log=$2 p ok=1
  local -n inst=$3 cached=$4
  if boot_ready "$t" "$3" "$4"; then return 0; fi
  need_root "test/system.test.ts needs systemd and its packages in $t"
  echo "install-deps: adding ${inst[*]} to $t, and ${cached[*]} to its apt cache"
  rm -f "$t/.boot-packages"
  # No service starts in the chroot (redis-server would listen on the host).
  printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"
  chmod 755 "$t/usr/sbin/policy-rc.d"
  in_tree "$t" apt-get update -q >>"$log" 2>&1 || ok=0
  [[ $ok -eq 0 ]] || in_tree "$t" apt-get install -y -q --no-install-recommends "${inst[@]}" >>"$log" 2>&1 || ok=0
  for p in "${cached[@]}"; do
    [[ $ok -eq 0 ]] || in_tree "$t" apt-get install -y -q --no-install-recommends --download-only "$p" >>"$log" 2>&1 || ok=0
  done
  rm -f "$t/usr/sbin/policy-rc.d"
  if [[ $ok -eq 0 ]]; then
    tail -5 "$log" >&2
    echo "install-deps: WARNING: could not add systemd and its packages to $t (log: $log); test/system.test.ts will fail" >&2
    return 1
  fi
  echo "${inst[*]} / ${cached[*]}" >"$t/.boot-packages"
}

ensure_trixie_boot() {
  ensure_boot "$1" "$PEERS/trixie.log" trixie_installed trixie_cached || true
  # valkey-server is there for the engine tests, which run it themselves: its unit would take
  # 127.0.0.1:6379 from redis-server's when test/system.test.ts boots the tree.
  if [[ -L $1/etc/systemd/system/multi-user.target.wants/valkey-server.service ]]; then
    chroot "$1" systemctl disable valkey-server.service >>"$PEERS/trixie.log" 2>&1 ||
      rm -f "$1/etc/systemd/system/multi-user.target.wants/valkey-server.service"
  fi
}

# A Debian 12 tree for test/system.test.ts, with the Node.js >= 20 that
# this machine runs: Debian 12's own nodejs is 18, so an administrator
# installs another (NodeSource's); this machine's package of it, repacked
# with dpkg-repack, is installed in the tree. A machine whose Node.js is no
# such package, or that cannot make the tree, gets $t.unavailable with the
# reason, and the test of Debian 12 is skipped, saying why.
ensure_bookworm() {
  local t=$PEERS/bookworm log=$PEERS/bookworm.log v d
  unavailable() {
    echo "$1" >"$t.unavailable"
    echo "install-deps: WARNING: $1; the Debian 12 system test will be skipped" >&2
  }
  if [[ ! -x $t/usr/sbin/dovecot ]]; then
    need_root "test/system.test.ts needs a Debian 12 tree in $t"
    echo "install-deps: debootstrap of Debian 12 into $t"
    rm -rf "$t"
    if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${bookworm_installed[*]}")" bookworm "$t" http://deb.debian.org/debian >"$log" 2>&1; then
      tail -5 "$log" >&2
      rm -rf "$t"
      unavailable "debootstrap of Debian 12 failed: $(grep -m1 -E '^E:' "$log" || tail -1 "$log") (log: $log)"
      return
    fi
  fi
  if ! chroot "$t" /usr/bin/node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
    v=$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null) || v=
    if [[ -z $v ]] || ! dpkg --compare-versions "$v" ge 20; then
      unavailable "this machine's Node.js is not a Debian package of version 20 or later (nodejs: ${v:-not installed}), and Debian 12's own is 18"
      return
    fi
    need_root "test/system.test.ts needs Node.js $v in $t"
    echo "install-deps: installing this machine's nodejs $v (dpkg-repack) into $t"
    d=$(mktemp -d)
    if ! (cd "$d" && dpkg-repack --deb-option=-Zgzip nodejs) >>"$log" 2>&1 ||
      ! cp "$d"/nodejs_*.deb "$t/tmp/nodejs.deb" || ! in_tree "$t" dpkg -i /tmp/nodejs.deb >>"$log" 2>&1; then
      rm -rf "$d" "$t/tmp/nodejs.deb"
      unavailable "could not install this machine's nodejs $v in $t (log: $log)"
      return
    fi
    rm -rf "$d" "$t/tmp/nodejs.deb"
  fi
  if ensure_boot "$t" "$log" bookworm_installed bookworm_cached; then rm -f "$t.unavailable"; fi
}

extras() {
  case "$mode" in
    --demo) ensure_user poprelay ;;
    --test)
      ensure_user poprelay
      ensure_user Debian-exim
      ensure_peers
      ensure_nodes
      ensure_trixie
      ensure_bookworm
      ;;
  esac
}

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#pkgs[@]} Debian packages present"
  extras
  exit 0
fi
need_root "missing Debian packages: ${missing[*]}"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Service starts are not wanted here; a policy-rc.d that denies them may or may not exist.
apt-get install -y -q --no-install-recommends "${missing[@]}"
extras
