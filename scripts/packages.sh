#!/usr/bin/env bash
# Builds vaultd and vaultctl and packs them as .deb and .rpm into dist/.
#
#   scripts/packages.sh            # version from `git describe --tags --always --dirty`
#   VERSION=1.2.3 scripts/packages.sh
#   SKIP_BUILD=1 scripts/packages.sh   # re-pack the binaries already in dist/build
#
# nfpm is installed from its own module graph (`go install ...@v2.33.1`, cached
# in ~/.cache/vaultd-tools), so the project's go.mod carries no packaging
# dependencies. Needs go, gcc, objdump (binutils) and git.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1

NFPM_VERSION=v2.33.1
MODULE=github.com/vaultd/vaultd
DIST=dist   # fixed: packaging/nfpm.yaml names dist/build/...
BUILD="$DIST/build"
ARCH=$(go env GOARCH)

# pkg_version turns `git describe` output into a version both dpkg and rpm
# accept and order sensibly: digits first; only [0-9A-Za-z.+~]; no '-'
# (it separates the Debian revision and the RPM release).
#   v1.2.3                -> 1.2.3
#   v1.2.3-4-gabc1234     -> 1.2.3+4.gabc1234
#   v1.2.3-rc1            -> 1.2.3~rc1   (pre-releases sort before 1.2.3)
#   abc1234 (no tag)      -> 0.0.0+<commit count>.gabc1234
#   ...-dirty             -> ...+dirty / .dirty
pkg_version() {
  local d count
  # Tagged: describe --tags; untagged: the abbreviated commit.
  d=$(git describe --tags --dirty 2>/dev/null || true)
  local tagged=1
  if [[ -z $d ]]; then
    tagged=0
    d=$(git describe --always --dirty 2>/dev/null || echo unknown)
  fi
  local dirty=""
  if [[ $d == *-dirty ]]; then dirty=dirty; d=${d%-dirty}; fi
  if [[ $tagged == 1 && $d =~ ^v?([0-9][0-9A-Za-z.]*)(-([0-9A-Za-z.]+))?(-([0-9]+)-g([0-9a-f]+))?$ ]]; then
    local v=${BASH_REMATCH[1]} pre=${BASH_REMATCH[3]} n=${BASH_REMATCH[5]} g=${BASH_REMATCH[6]}
    [[ -n $pre ]] && v+="~$pre"
    [[ -n $n ]] && v+="+$n.g$g"
    if [[ -n $dirty ]]; then
      if [[ $v == *+* ]]; then v+=".$dirty"; else v+="+$dirty"; fi
    fi
    echo "$v"
    return
  fi
  count=$(git rev-list --count HEAD 2>/dev/null || echo 0)
  local v="0.0.0+$count.g${d//[^0-9A-Za-z]/}"
  [[ -n $dirty ]] && v+=".$dirty"
  echo "$v"
}

VERSION=${VERSION:-$(pkg_version)}
# A release (a plain tagged version) must have its changelog entry.
if [[ $VERSION =~ ^[0-9][0-9.]*(~[0-9A-Za-z.]+)?$ ]] && ! grep -qx -- "- semver: ${VERSION/\~/-}" packaging/changelog.yml; then
  echo "packages.sh: release $VERSION has no entry in packaging/changelog.yml" >&2
  exit 1
fi
if ! [[ $VERSION =~ ^[0-9][0-9A-Za-z.+~]*$ ]]; then
  echo "packages.sh: version $VERSION is not valid for deb and rpm" >&2
  exit 1
fi
echo "== vaultd $VERSION ($ARCH)"

mkdir -p "$BUILD/man"
if [[ ${SKIP_BUILD:-} != 1 ]]; then
  # -buildmode=pie and the linker flags give the hardening lintian checks for
  # (PIE, full RELRO, BIND_NOW); -s -w strips: Go keeps what it needs for
  # stack traces in pclntab.
  ldflags="-s -w -X $MODULE/vaultd/daemon.Version=$VERSION -X $MODULE/internal/ctl.Version=$VERSION"
  ldflags+=" -linkmode=external -extldflags=-Wl,-z,relro,-z,now"
  echo "== go build"
  # Fortify and stack-protect the cgo glue too (lintian: hardening-*).
  CGO_CFLAGS="-O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong" \
  go build -trimpath -buildvcs=false -buildmode=pie -ldflags "$ldflags" -o "$BUILD/" ./cmd/vaultd ./cmd/vaultctl
  # .comment only names the C compiler; Debian strips it too (dh_strip).
  objcopy --remove-section=.comment "$BUILD/vaultd" "$BUILD/vaultd"
  objcopy --remove-section=.comment "$BUILD/vaultctl" "$BUILD/vaultctl"
fi
"$BUILD/vaultd" -version | grep -qx "vaultd $VERSION" || {
  echo "packages.sh: $BUILD/vaultd does not report version $VERSION (rebuild without SKIP_BUILD)" >&2; exit 1; }

# Man pages: gzip -n keeps the archive reproducible (no name, no time).
for m in vaultd.8 vaultctl.1; do
  gzip -9 -n -c "packaging/man/$m" > "$BUILD/man/$m.gz"
done

# glibc: the highest symbol version the binaries need, for Depends/Requires.
glibc=$(objdump -T "$BUILD/vaultd" "$BUILD/vaultctl" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

# Cached outside the work tree so fresh clones (CI) do not rebuild it.
NFPM_DIR=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vaultd-tools
NFPM="$NFPM_DIR/nfpm-$NFPM_VERSION"
if [[ ! -x $NFPM ]]; then
  echo "== installing nfpm $NFPM_VERSION"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
  mkdir -p "$NFPM_DIR"
  mv "$tmp/nfpm" "$NFPM"
  rmdir "$tmp"
fi

export VERSION ARCH GLIBC_VERSION="$glibc" MAINTAINER="${MAINTAINER:-vaultd maintainers <maintainers@vaultd.invalid>}"
rm -f "$DIST"/vaultd_*.deb "$DIST"/vaultd-*.rpm
for p in deb rpm; do
  "$NFPM" package --config packaging/nfpm.yaml --packager "$p" --target "$DIST/"
done
ls -l "$DIST"/*.deb "$DIST"/*.rpm
