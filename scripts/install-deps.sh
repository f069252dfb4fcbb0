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
#                flock/setpriv, iproute2, strace; Postfix's postmap and Exim,
#                unpacked (apt-get download, dpkg -x) into $PEERS rather than
#                installed, because Postfix conflicts with sendmail-bin; the
#                user "Debian-exim" (Exim refuses to run without it); Node.js
#                22 and 24 from the npm registry's node-linux-<arch> packages,
#                unpacked into $PEERS/node/<major>, in which the tests load the
#                addon built for this Node (one Node-API build must serve them
#                all); and a Debian 13 tree with Dovecot 2.4 in $PEERS/trixie
#                (debootstrap), in which the tests run Dovecot 2.4 chrooted,
#                since Debian 12 ships only 2.3.
set -euo pipefail

build_pkgs=(libdb-dev g++ make python3)
demo_pkgs=(db5.3-util sendmail-bin sendmail-cf m4 dovecot-core dovecot-pop3d dovecot-imapd redis-tools)
test_pkgs=(util-linux iproute2 strace debootstrap man-db libidn12 libgnutls-dane0 libnsl2 libpcre2-8-0)
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
