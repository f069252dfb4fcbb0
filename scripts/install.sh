#!/usr/bin/env bash
# Installs poprelay from this checkout: the programs, the map, the Dovecot
# snippet, the sweep schedule and poprelay.ini. Idempotent; never clobbers
# an existing map or poprelay.ini; never edits MTA configuration (it prints
# the lines to add). See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/install.sh [OPTIONS]

Installs poprelay under a prefix, creates the relay map, installs the Dovecot
snippet for the Dovecot found (2.3 or 2.4) and the sweep schedule (a cron.d
entry and a systemd timer, enabled where systemd runs; the cron entry then
does nothing), writes poprelay.ini if absent, and prints the lines to add
to sendmail, Postfix or Exim. Run it again at any time: it changes only what
differs. Run as root.

  --dry-run               print what would be done, change nothing
  --uninstall             remove what the installer installed; keep the map and poprelay.ini
  --prefix DIR            programs go to DIR/lib/poprelay and DIR/sbin (default /usr/local)
  --root DIR              prepend DIR to every path below (to install into a staging tree)
  --user NAME             the user the hook and the sweep run as, owner of the map (default poprelay)
  --map-dir DIR           the map's directory (default /var/lib/poprelay)
  --config FILE           poprelay.ini (default /etc/poprelay/poprelay.ini, or the
                          /etc/mail/poprelay.ini of an older install while that is
                          the only one)
  --dovecot-confdir DIR   Dovecot's conf.d (default /etc/dovecot/conf.d)
  --dovecot-version V     2.3 or 2.4 (default: from "dovecot --version")
  --cron-dir DIR          (default /etc/cron.d)
  --systemd-dir DIR       (default /etc/systemd/system)
  --node PATH             the Node.js interpreter the programs run with (default: the node on PATH)
  --no-user               do not create the user (it must exist)
  -h, --help              show this text

The same settings can be given as environment variables: POPRELAY_PREFIX,
POPRELAY_ROOT, POPRELAY_USER, POPRELAY_MAP_DIR, POPRELAY_INI,
POPRELAY_DOVECOT_CONFDIR, POPRELAY_DOVECOT_VERSION, POPRELAY_CRON_DIR,
POPRELAY_SYSTEMD_DIR, POPRELAY_NODE.
EOF
}

prefix=${POPRELAY_PREFIX:-/usr/local}
root=${POPRELAY_ROOT:-}
user=${POPRELAY_USER:-poprelay}
map_dir=${POPRELAY_MAP_DIR:-/var/lib/poprelay}
ini=${POPRELAY_INI:-}
dovecot_confdir=${POPRELAY_DOVECOT_CONFDIR:-/etc/dovecot/conf.d}
dovecot_version=${POPRELAY_DOVECOT_VERSION:-}
cron_dir=${POPRELAY_CRON_DIR:-/etc/cron.d}
systemd_dir=${POPRELAY_SYSTEMD_DIR:-/etc/systemd/system}
node=${POPRELAY_NODE:-}
dry_run=0
uninstall=0
make_user=1

die() { echo "install.sh: $*" >&2; exit 1; }
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --no-user) make_user=0 ;;
    --prefix) need_arg "$@"; prefix=$2; shift ;;
    --root) need_arg "$@"; root=$2; shift ;;
    --user) need_arg "$@"; user=$2; shift ;;
    --map-dir) need_arg "$@"; map_dir=$2; shift ;;
    --config) need_arg "$@"; ini=$2; shift ;;
    --dovecot-confdir) need_arg "$@"; dovecot_confdir=$2; shift ;;
    --dovecot-version) need_arg "$@"; dovecot_version=$2; shift ;;
    --cron-dir) need_arg "$@"; cron_dir=$2; shift ;;
    --systemd-dir) need_arg "$@"; systemd_dir=$2; shift ;;
    --node) need_arg "$@"; node=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

src=$(cd "$(dirname "$0")/.." && pwd)
# Programs read /etc/poprelay/poprelay.ini unless told otherwise. An older
# install's /etc/mail/poprelay.ini stays in use while it is the only one:
# the lines written below name it (say() below tells how to move it).
default_ini=/etc/poprelay/poprelay.ini
legacy_ini=/etc/mail/poprelay.ini
legacy=0
if [[ -z "$ini" ]]; then
  ini=$default_ini
  if [[ -e "$root$legacy_ini" && ! -e "$root$default_ini" ]]; then
    ini=$legacy_ini
    legacy=1
  fi
fi
config_arg=
[[ "$ini" == "$default_ini" ]] || config_arg=" --config $ini"
lib=$prefix/lib/poprelay
sbin=$prefix/sbin
man=$prefix/share/man
map=$map_dir/popip.db
programs=(poprelay-login poprelay-sweep poprelay poprelayd)

# Every change goes through run, so --dry-run shows exactly what would happen.
run() {
  if [[ $dry_run -eq 1 ]]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
say() { echo "install.sh: $*"; }
# How to reload Dovecot here: systemctl only where systemd runs.
if [[ -d /run/systemd/system ]]; then
  reload_dovecot='systemctl reload dovecot'
else
  reload_dovecot='doveadm reload'
fi

[[ -n "$node" ]] || node=$(command -v node || true)
[[ -n "$node" && "$node" == /* ]] || die "no Node.js found; give its absolute path with --node"
[[ $uninstall -eq 1 || $dry_run -eq 1 || $(id -u) -eq 0 ]] || die "run as root (or with --dry-run)"

# What an install ships: package.json's "files", copied into $lib (the
# manual pages and configuration installed below come from those folders).
mapfile -t shipped < <("$node" -e 'for (const f of require(process.argv[1]).files) console.log(f.replace(/\/$/, ""))' "$src/package.json")
manpages=()
for m in "$src"/man/man[58]/*.[58]; do manpages+=("${m#"$src/man/"}"); done

if [[ $uninstall -eq 1 ]]; then
  for p in "${programs[@]}"; do run rm -f "$root$sbin/$p"; done
  for m in "${manpages[@]}"; do run rm -f "$root$man/$m"; done
  run rm -rf "$root$lib"
  run rm -f "$root$dovecot_confdir/95-poprelay.conf" "$root$cron_dir/poprelay" \
    "$root$systemd_dir/poprelay-sweep.service" "$root$systemd_dir/poprelay-sweep.timer" "$root$systemd_dir/poprelayd.service"
  say "removed the programs, the manual pages, the Dovecot snippet and the sweep schedule"
  say "kept the map $root$map and $root$ini; remove them yourself if you want"
  say "now reload Dovecot ($reload_dovecot) so that logins no longer run the hook"
  exit 0
fi

# 1. Build, if this checkout is not built yet.
if [[ ! -f $src/dist/poprelay-login.cjs || ! -f $src/build/Release/poprelay_native.node ]]; then
  say "building (npm ci)"
  run bash -c "cd $(printf %q "$src") && npm ci --no-audit --no-fund"
fi

# 2. The user the hook and the sweep run as.
if [[ $make_user -eq 1 ]] && ! id -u "$user" >/dev/null 2>&1; then
  say "adding system user $user"
  run useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$user"
fi

# 3. The programs: a copy of what they load at run time, with absolute paths
#    written in (Dovecot runs the hook with no PATH), linked into sbin. The
#    hook is a compiled front: recorder.conf beside it gets the paths.
#    Besides "files": package.json (it makes dist/*.js ES modules) and the
#    run-time dependencies (scripts/runtime-modules.mjs).
mapfile -t modules < <("$node" "$src/scripts/runtime-modules.mjs" "$src")
say "installing programs into $root$lib, linked from $root$sbin"
run mkdir -p "$root$lib/node_modules" "$root$sbin"
for f in "${shipped[@]}" "${modules[@]}"; do
  run rm -rf "$root$lib/$f"
  run mkdir -p "$(dirname "$root$lib/$f")"
  run cp -R "$src/$f" "$root$lib/$f"
done
run cp "$src/package.json" "$root$lib/package.json"
# The hook's Node flags (recorder.conf): Node 24 refuses --no-expose-wasm.
hook_flags='--jitless --no-expose-wasm'
# shellcheck disable=SC2086 # $hook_flags is a list of words, here and below
"$node" $hook_flags -e 0 2>/dev/null || hook_flags='--jitless'
# Whether that Node starts within Dovecot's default vsz_limit (256M): Node 20
# and 22 do without the JIT; Node 24 reserves more, and its post-login
# services get vsz_limit = 0 (2.4: unlimited).
needs_vsz=0
# shellcheck disable=SC2086
MALLOC_ARENA_MAX=1 prlimit --as=268435456 --data=268435456 "$node" $hook_flags -e 0 >/dev/null 2>&1 || needs_vsz=1
for p in "${programs[@]}"; do
  if [[ $dry_run -eq 1 ]]; then
    echo "would write $root$lib/bin/$p running $node"
  else
    if [[ $p == poprelay-login ]]; then
      # The compiled front (bin/poprelay-login points at it) starts the recorder as recorder.conf beside it says.
      printf 'node=%s\nscript=%s\nflags=%s\n' "$node" "$lib/dist/poprelay-login.cjs" "$hook_flags" \
        > "$root$lib/build/Release/recorder.conf"
    else
      { echo "#!$node"; tail -n +2 "$src/bin/$p"; } > "$root$lib/bin/$p"
    fi
    chmod 755 "$root$lib/bin/$p"
  fi
  run ln -sfn "$lib/bin/$p" "$root$sbin/$p"
done

# 3b. The manual pages: poprelay(8), poprelay-login(8), poprelay-sweep(8), poprelayd(8), poprelay.ini(5).
say "installing the manual pages into $root$man"
run mkdir -p "$root$man/man5" "$root$man/man8"
for m in "${manpages[@]}"; do run install -m 644 "$src/man/$m" "$root$man/$m"; done

# 4. poprelay.ini, if absent: root's, readable by the hook's group (it may
#    hold the engine's password), in a directory only root can change.
group=$(id -gn "$user" 2>/dev/null || echo "$user")
if [[ -e "$root$ini" ]]; then
  say "keeping the existing $root$ini"
  if [[ $legacy -eq 1 ]]; then
    say "$root$ini is where older installs put it; the lines written below name it with --config. To move it to $default_ini:"
    say "  install -d -m 0755 $root/etc/poprelay && mv $root$legacy_ini $root$default_ini && chown root:$group $root$default_ini && chmod 0640 $root$default_ini"
    say "  then run this installer again (it drops --config $legacy_ini from those lines), and $reload_dovecot"
  fi
else
  say "writing $root$ini (root:$group, mode 0640)"
  if [[ "$ini" == "$default_ini" ]]; then
    run install -d -o root -g root -m 0755 "$root/etc/poprelay"
  else
    run mkdir -p "$(dirname "$root$ini")"
  fi
  if [[ $dry_run -eq 0 ]]; then
    (umask 077 && sed "s|^dbfile = .*|dbfile = $map|" "$src/etc/poprelay.ini" > "$root$ini")
    chown "root:$group" "$root$ini"
    chmod 0640 "$root$ini"
  fi
fi

# 5. The map's directory (the hook's user owns it: writers rename new copies
#    into place) and the map itself, created by that user.
say "preparing $root$map_dir (owner $user, mode 0755) and the map"
run mkdir -p "$root$map_dir"
run chown "$user:" "$root$map_dir"
run chmod 0755 "$root$map_dir"
if [[ $dry_run -eq 1 ]]; then
  echo "would run: $root$sbin/poprelay init as $user"
else
  ini_for_init=$root$ini
  if [[ -n "$root" ]]; then
    # Staged: the map path in the file is the live one; point init at the staged map.
    ini_for_init=$(mktemp)
    sed "s|^dbfile = .*|dbfile = $root$map|" "$root$ini" > "$ini_for_init"
    chown "root:$group" "$ini_for_init"
    chmod 0640 "$ini_for_init"
  fi
  setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups "$root$lib/bin/poprelay" init --config "$ini_for_init"
  [[ -z "$root" ]] || rm -f "$ini_for_init"
fi

# 6. The Dovecot snippet for the Dovecot found.
if [[ -z "$dovecot_version" ]]; then
  if command -v dovecot >/dev/null 2>&1; then
    dovecot_version=$(dovecot --version | cut -d. -f1,2)
  else
    dovecot_version=none
  fi
fi
case "$dovecot_version" in
  2.3|2.4)
    say "installing the Dovecot $dovecot_version snippet as $root$dovecot_confdir/95-poprelay.conf"
    run mkdir -p "$root$dovecot_confdir"
    if [[ $dry_run -eq 0 ]]; then
      unlimited=0
      [[ $dovecot_version == 2.3 ]] || unlimited=unlimited
      vsz_line=
      if [[ $needs_vsz -eq 1 ]]; then
        say "$node does not start within Dovecot's default vsz_limit: the post-login services get vsz_limit = $unlimited"
        vsz_line="\\n  vsz_limit = $unlimited"
      fi
      # The queue beside the map, named on the line: the front reads no poprelay.ini.
      sed -e "s|/usr/local/sbin/poprelay-login|$sbin/poprelay-login$config_arg --queue $map.queue|" -e "s|^\( *\)user = poprelay\$|\1user = $user$vsz_line|" \
        "$src/dovecot-conf/$dovecot_version/95-poprelay.conf" > "$root$dovecot_confdir/95-poprelay.conf"
      chmod 644 "$root$dovecot_confdir/95-poprelay.conf"
    fi
    if [[ -z "$root" && $dry_run -eq 0 ]] && command -v doveconf >/dev/null 2>&1; then
      doveconf -n >/dev/null || die "doveconf -n rejects the configuration with 95-poprelay.conf; see above"
      say "doveconf -n accepts it; now reload Dovecot: $reload_dovecot"
    fi
    ;;
  none) say "Dovecot not found: no Dovecot snippet installed (see dovecot-conf/)" ;;
  *) die "Dovecot $dovecot_version is not supported (2.3 or 2.4); give --dovecot-version" ;;
esac

# 7. The sweep, every minute: both a cron.d entry and a systemd timer, as
#    Debian ships them; the cron entry does nothing where systemd runs.
say "installing the cron entry $root$cron_dir/poprelay and the systemd timer into $root$systemd_dir"
run mkdir -p "$root$cron_dir" "$root$systemd_dir"
if [[ $dry_run -eq 0 ]]; then
  sed -e "s|/usr/local/sbin/poprelay-sweep --quiet|$sbin/poprelay-sweep --quiet$config_arg|" \
    -e "s|/usr/local/sbin/poprelay-sweep|$sbin/poprelay-sweep|g" "$src/etc/cron.d/poprelay" > "$root$cron_dir/poprelay"
  chmod 644 "$root$cron_dir/poprelay"
  sed -e "s|/usr/local/sbin/poprelay-sweep --quiet|$sbin/poprelay-sweep --quiet$config_arg|" \
    -e "s|^ReadWritePaths=/var/lib/poprelay\$|ReadWritePaths=$map_dir|" "$src/etc/systemd/poprelay-sweep.service" > "$root$systemd_dir/poprelay-sweep.service"
  cp "$src/etc/systemd/poprelay-sweep.timer" "$root$systemd_dir/poprelay-sweep.timer"
  # poprelayd serves several hosts from a shared engine; installed, not enabled (docs/cluster.md).
  sed -e "s|^ExecStart=/usr/local/sbin/poprelayd|ExecStart=$sbin/poprelayd${config_arg}|" \
    -e "s|^ReadWritePaths=/var/lib/poprelay\$|ReadWritePaths=$map_dir|" "$src/etc/systemd/poprelayd.service" > "$root$systemd_dir/poprelayd.service"
fi
# Enabled only where systemd looks for it: an install into another tree
# (--root, or --systemd-dir elsewhere, as the demo does) leaves that to you.
if [[ -z "$root" && "$systemd_dir" == /etc/systemd/system && -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
  run systemctl daemon-reload
  run systemctl enable --now poprelay-sweep.timer
fi

# 8. What the administrator adds to the MTA (never edited here).
mapbase=${map%.db}
cat <<EOF

poprelay is installed. Add the MTA side yourself ($lib/etc/mta/ has each with comments):

  sendmail, in sendmail.mc before the MAILER() lines, then rebuild sendmail.cf:
    FEATURE(\`drac', \`hash -o $mapbase')dnl

  Postfix, in main.cf, then postfix reload:
    smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated
        check_client_access hash:$mapbase reject_unauth_destination

  Exim, in acl_check_rcpt before the relay check, then reload:
    accept
      condition = \${lookup{\$sender_host_address}dbmnz{$map}{yes}{no}}

Several POP/IMAP hosts and SMTP relays sharing one relay set: set engine in
$ini and run poprelayd on each MTA host (systemctl enable --now poprelayd;
$lib/etc/mta/ has the MTA lines for it). See docs/cluster.md.

Check the whole installation with: $sbin/poprelay doctor$config_arg
EOF
