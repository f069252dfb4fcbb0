#!/usr/bin/env bash
# The demo: a real Dovecot login makes sendmail allow relaying, and the sweep
# takes it back. Installs what it needs (as root, on Debian 12), installs
# poprelay with scripts/install.sh into a temporary tree, runs everything on
# loopback, and removes the tree and the private Dovecot afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
log=$(mktemp /tmp/poprelay-demo-log.XXXXXX)
tree=
dovecot_pid=

step() { printf '\n[%s] %s\n' "$1" "$2"; }
unexpected() { echo "      UNEXPECTED: $*" >&2; exit 1; }
show() { sed 's/^/      /'; }
quietly() {
  if ! "$@" >>"$log" 2>&1; then
    echo "      failed: $*; the last lines of $log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
}
cleanup() {
  if [[ -n "$dovecot_pid" ]]; then kill "$dovecot_pid" 2>/dev/null || true; wait "$dovecot_pid" 2>/dev/null || true; fi
  if [[ -n "$tree" ]]; then rm -rf "$tree"; fi
}
trap cleanup EXIT

echo "poprelay demo: a real Dovecot login makes sendmail allow relaying, and the sweep takes it back."
[[ $(id -u) -eq 0 ]] || { echo "run the demo as root (it installs packages and starts Dovecot)" >&2; exit 1; }

step 1/8 "Installing Debian packages (Dovecot, sendmail, libdb) and building poprelay (npm ci)"
quietly bash scripts/install-deps.sh --demo
quietly npm ci --no-audit --no-fund
echo "      done (details in $log)"

# sendmail accepts maps only under directories that are not group- or
# world-writable, so the tree is under /var/lib, not /tmp.
tree=$(mktemp -d /var/lib/poprelay-demo.XXXXXX)
chmod 755 "$tree"
map=$tree/var/lib/poprelay/popip.db
ini=$tree/etc/mail/poprelay.ini
step 2/8 "Installing poprelay with scripts/install.sh into $tree"
quietly bash scripts/install.sh --prefix "$tree/usr" --map-dir "$tree/var/lib/poprelay" --config "$ini" \
  --dovecot-confdir "$tree/etc/dovecot/conf.d" --cron-dir "$tree/etc/cron.d" --systemd-dir "$tree/etc/systemd/system"
# Loopback is on the default ignore list; the demo's client comes from 127.0.0.42.
sed -i 's|^ignore = .*|ignore = ::1/128|' "$ini"
echo "      programs in $tree/usr/sbin, map $map (owner poprelay, mode 0644)"
echo "      Dovecot snippet $tree/etc/dovecot/conf.d/95-poprelay.conf; ignore list emptied of 127.0.0.0/8 for the demo"

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
step 3/8 "Starting a private Dovecot on 127.0.0.1:$port with poprelay-login as its pop3 post-login script"
mkdir -p "$tree/dovecot/run" "$tree/dovecot/state" "$tree/home/demo/Maildir/"{cur,new,tmp}
printf 'Subject: hello\r\n\r\nhello demo\r\n' > "$tree/home/demo/Maildir/new/1.demo"
chown -R nobody:nogroup "$tree/home/demo"
echo 'demo:{PLAIN}demo-password::::::' > "$tree/dovecot/passwd"
cat > "$tree/dovecot/dovecot.conf" <<EOF
base_dir = $tree/dovecot/run
state_dir = $tree/dovecot/state
log_path = $tree/dovecot/dovecot.log
listen = 127.0.0.1
protocols = pop3
ssl = no
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $tree/dovecot/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$tree/home/%u
}
service pop3-login {
  inet_listener pop3 {
    port = $port
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = 0
  }
}
!include $tree/etc/dovecot/conf.d/95-poprelay.conf
EOF
dovecot -F -c "$tree/dovecot/dovecot.conf" >>"$log" 2>&1 &
dovecot_pid=$!

# A POP3 client from a chosen source address (bash cannot bind one).
pop3_login() {
  node - "$port" "$1" <<'EOF'
const [port, from] = process.argv.slice(2);
const s = require('net').connect({ host: '127.0.0.1', port: Number(port), localAddress: from });
const say = ['USER demo', 'PASS demo-password', 'QUIT'];
let buf = '';
s.setEncoding('latin1');
s.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\r\n')) >= 0; buf = buf.slice(i + 2)) {
    const line = buf.slice(0, i);
    if (line.startsWith('+OK Logged in') || line.startsWith('-ERR')) console.log(`S: ${line}`);
    const next = say.shift();
    if (next !== undefined) s.write(`${next}\r\n`);
  }
});
s.on('error', (e) => { console.log(`connection failed: ${e.message}`); process.exit(1); });
EOF
}
greets() {
  node -e 'const s=require("net").connect(Number(process.argv[1]),"127.0.0.1");s.on("data",(d)=>{process.exit(String(d).startsWith("+OK")?0:1)});s.on("error",()=>process.exit(1))' "$port"
}
for _ in $(seq 100); do greets 2>/dev/null && break; sleep 0.1; done
greets || unexpected "Dovecot did not start; see $log"
echo "      ready ($(dovecot --version | cut -d' ' -f1))"

step 4/8 "POP3 login as demo from 127.0.0.42"
pop3_login 127.0.0.42 | show
for _ in $(seq 100); do grep -q 'poprelay: .*127.0.0.42' "$tree/dovecot/dovecot.log" && break; sleep 0.05; done
echo "      Dovecot's log says:"
grep 'poprelay: ' "$tree/dovecot/dovecot.log" | grep 127.0.0.42 | sed 's/^[A-Z][a-z][a-z] [ 0-9]* [0-9:]* //' | show
grep -q 'poprelay: recorded 127.0.0.42 ' "$tree/dovecot/dovecot.log" || unexpected "the login was not recorded"

step 5/8 "The map, as poprelay list shows it"
"$tree/usr/sbin/poprelay" list --config "$ini" | show

# sendmail.cf with the shipped FEATURE(`drac') line, pointed at the demo map.
{
  echo "include(\`/usr/share/sendmail/cf/m4/cf.m4')dnl"
  echo "OSTYPE(\`linux')dnl"
  echo "define(\`confDONT_PROBE_INTERFACES',\`True')dnl"
  sed "s|/var/lib/poprelay/popip|${map%.db}|" etc/mta/sendmail.mc
  echo "MAILER(\`local')dnl"
  echo "MAILER(\`smtp')dnl"
} > "$tree/sendmail.mc"
m4 "$tree/sendmail.mc" > "$tree/sendmail.cf" 2>>"$log"
relay() {
  local out
  out=$(printf '.D{client_addr}%s\nRelay_ok x\n' "$1" | unshare --uts sh -c "hostname demo.example.org && exec sendmail -C $tree/sendmail.cf -bt" 2>>"$log" | sed -n 's/^Relay_ok *returns: //p')
  if [[ "$out" == RELAY ]]; then echo "client $1: Relay_ok returns RELAY (may relay)"; else echo "client $1: Relay_ok returns $out (may not relay)"; fi
}

step 6/8 "sendmail -bt with FEATURE(\`drac', \`hash -o ${map%.db}')"
first=$(relay 127.0.0.42)
other=$(relay 127.0.0.43)
printf '%s\n%s\n' "$first" "$other" | show
[[ "$first" == *"(may relay)" ]] || unexpected "sendmail does not let the recorded address relay"
[[ "$other" == *"(may not relay)" ]] || unexpected "sendmail lets an unrecorded address relay"

later=$(( $(date +%s) + 16 * 60 ))
step 7/8 "poprelay-sweep --dry-run, now and with the clock 16 minutes ahead (timeout: 15 minutes)"
echo "      now:" && "$tree/usr/sbin/poprelay-sweep" --dry-run --config "$ini" | sed 's/^/  /' | show
echo "      in 16 minutes:" && "$tree/usr/sbin/poprelay-sweep" --dry-run --config "$ini" --now "$later" | sed 's/^/  /' | show

step 8/8 "poprelay-sweep with the clock 16 minutes ahead, then sendmail again"
"$tree/usr/sbin/poprelay-sweep" --verbose --config "$ini" --now "$later" | show
after=$(relay 127.0.0.42)
echo "$after" | show
[[ "$after" == *"(may not relay)" ]] || unexpected "the swept address may still relay"

echo
echo "All as expected. Cleaning up: stopping Dovecot, removing $tree (the system user poprelay stays)."
