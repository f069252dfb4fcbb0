#!/usr/bin/env bash
# Installs the Debian packages poprelay needs: to build (libdb-dev, a C++
# toolchain) and, with --test, the real peers the test suite drives
# (Berkeley DB utilities, sendmail's makemap, Dovecot, flock/setpriv) and
# the system user "poprelay" the shipped Dovecot config runs the hook as.
# Idempotent: installs only what is missing. Needs root when anything is.
set -euo pipefail

build_pkgs=(libdb-dev g++ make python3)
test_pkgs=(db5.3-util sendmail-bin dovecot-core dovecot-pop3d dovecot-imapd util-linux iproute2 strace)

pkgs=("${build_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then pkgs+=("${test_pkgs[@]}"); fi

ensure_user() {
  if id -u poprelay >/dev/null 2>&1; then return; fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: the tests need a system user poprelay; run this script as root" >&2
    exit 1
  fi
  echo "install-deps: adding system user poprelay"
  useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin poprelay
}

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#pkgs[@]} Debian packages present"
  if [[ "${1:-}" == "--test" ]]; then ensure_user; fi
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing Debian packages: ${missing[*]}; run this script as root (or apt-get install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Service starts are not wanted here; a policy-rc.d that denies them may or may not exist.
apt-get install -y -q --no-install-recommends "${missing[@]}"
if [[ "${1:-}" == "--test" ]]; then ensure_user; fi
