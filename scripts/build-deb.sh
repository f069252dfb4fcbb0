#!/usr/bin/env bash
# Builds the Debian package build/deb/poprelay_<version>_<arch>.deb from this
# checkout (npm run deb), after npm ci has built the addon. It builds dist/,
# lays out every file the package installs with the paths of a Debian
# system (programs run /usr/bin/node and live under /usr/lib/poprelay,
# linked from /usr/sbin), and runs dpkg-buildpackage with the debian/
# directory on that tree. docs/packaging.md says what the package does.
# Needs: debhelper, dpkg-dev (apt-get install debhelper dpkg-dev).
set -euo pipefail

die() { echo "build-deb.sh: $*" >&2; exit 1; }
say() { echo "build-deb.sh: $*"; }

src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
if ! command -v dpkg-buildpackage >/dev/null || ! command -v dh >/dev/null; then
  die "needs debhelper and dpkg-dev: apt-get install debhelper dpkg-dev"
fi
[[ -f build/Release/poprelay_native.node && -f build/Release/poprelay-login && -d node_modules ]] || die "the addon and the front are not built: run npm ci first"

say "building dist/ (npm run build)"
npm run --silent build

version=$(node -p 'require("./package.json").version')
arch=$(dpkg --print-architecture)
out=build/deb
deb=poprelay_${version}_$arch.deb

mkdir -p build
work=$(mktemp -d "$src/build/deb-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkg=$work/poprelay-$version
tree=$pkg/tree
lib=$tree/usr/lib/poprelay
mkdir -p "$pkg"
cp -R debian "$pkg/debian"

# 1. Under /usr/lib/poprelay: what the programs load at run time (as
#    scripts/install.sh copies it), with only the run-time modules, less
#    their type declarations, source maps, documents (their licences are in
#    debian/copyright) and development dotfiles.
mkdir -p "$lib/build/Release" "$lib/bin"
cp -R dist package.json "$lib/"
install -m 644 build/Release/poprelay_native.node "$lib/build/Release/"
mapfile -t modules < <(node scripts/runtime-modules.mjs "$src")
for m in "${modules[@]}"; do
  mkdir -p "$(dirname "$lib/$m")"
  cp -R "$m" "$lib/$m"
done
find "$lib/node_modules" -type f \( -name '*.d.ts' -o -name '*.map' -o -name '*.md' -o -name 'LICENSE*' -o -name '.*' \) -delete

# 2. The programs, with absolute paths: Dovecot runs the hook with no PATH.
#    The hook is the compiled front; it starts the recorder as recorder.conf
#    beside it says, which the postinst writes for the Node installed (and
#    again when it changes).
install -m 755 build/Release/poprelay-login "$lib/bin/poprelay-login"
for p in poprelay poprelay-sweep poprelayd; do
  { echo '#!/usr/bin/node'; tail -n +2 "bin/$p"; } >"$lib/bin/$p"
done
chmod 755 "$lib"/bin/*
mkdir -p "$tree/usr/sbin"
for p in poprelay-login poprelay-sweep poprelay poprelayd; do
  ln -s "../lib/poprelay/bin/$p" "$tree/usr/sbin/$p"
done

# 3. The configuration: the shipped files name /usr/local/sbin, the
#    package installs into /usr/sbin. poprelay.ini and the cron entry
#    become conffiles; the units go where debhelper enables them.
at_usr_sbin() { sed 's|/usr/local/sbin/|/usr/sbin/|g' "$1" >"$2"; }
while IFS= read -r f; do
  mkdir -p "$(dirname "$lib/etc/$f")"
  at_usr_sbin "etc/$f" "$lib/etc/$f"
done < <(cd etc && find . -type f)
install -d "$tree/etc/poprelay" "$tree/etc/cron.d" "$tree/lib/systemd/system"
install -m 644 etc/poprelay.ini "$tree/etc/poprelay/poprelay.ini"
at_usr_sbin etc/cron.d/poprelay "$tree/etc/cron.d/poprelay"
grep -q '^[^#]*/usr/sbin/poprelay-sweep' "$tree/etc/cron.d/poprelay" || die "etc/cron.d/poprelay does not run poprelay-sweep"
for u in poprelay-sweep.service poprelay-sweep.timer poprelayd.service; do
  at_usr_sbin "etc/systemd/$u" "$tree/lib/systemd/system/$u"
done
for v in 2.3 2.4; do
  mkdir -p "$tree/usr/share/poprelay/dovecot-conf/$v"
  at_usr_sbin "dovecot-conf/$v/95-poprelay.conf" "$tree/usr/share/poprelay/dovecot-conf/$v/95-poprelay.conf"
done
if grep -rl /usr/local "$tree/etc" "$tree/lib" "$tree/usr/share/poprelay"; then
  die "the files above still name /usr/local"
fi

# 4. Manual pages and documents.
for s in 5 8; do
  install -d "$tree/usr/share/man/man$s"
  install -m 644 "man/man$s/"*."$s" "$tree/usr/share/man/man$s/"
done
install -d "$tree/usr/share/doc/poprelay"
install -m 644 README.md docs/operating.md docs/cluster.md docs/security.md docs/packaging.md "$tree/usr/share/doc/poprelay/"

chmod -R u=rwX,go=rX "$tree"

# 5. debian/changelog from package.json's version, dated by the last commit
#    (so that a rebuild of the same commit is the same package).
maintainer=$(sed -n 's/^Maintainer: //p' debian/control)
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
cat >"$pkg/debian/changelog" <<EOF
poprelay ($version) unstable; urgency=medium

  * Built from the poprelay checkout at $commit.

 -- $maintainer  $date
EOF

say "running dpkg-buildpackage (log: build/deb-build.log)"
if ! (cd "$pkg" && dpkg-buildpackage -b --no-sign) >build/deb-build.log 2>&1; then
  tail -n 30 build/deb-build.log >&2
  die "dpkg-buildpackage failed; the whole log is build/deb-build.log"
fi
mkdir -p "$out"
rm -f "$out"/*.deb
mv "$work/$deb" "$out/$deb"
say "built $out/$deb"
dpkg-deb --field "$out/$deb" Depends
