#!/usr/bin/env bash
# cargo deny for `make lint` (deny.toml says what each check allows and why). Licenses,
# bans and sources are checked offline, from Cargo.lock and the crates cargo has fetched.
# Advisories need RustSec's advisory database, a git repository on GitHub: it is fetched
# (a machine without GitHub fails at once, and the lint goes on), and advisories are
# checked against the copy on this machine; without one they are not checked, and this
# says so on every run rather than failing the lint for lack of network.
set -euo pipefail
cd "$(dirname "$0")/.."
deny=.tools/bin/cargo-deny

# Every platform's crates (the graph holds Windows and macOS ones too) into cargo's cache,
# so that the offline checks can read each crate's manifest.
cargo fetch --locked --quiet
"$deny" --offline check bans licenses sources

if ! timeout 120 "$deny" fetch db >/dev/null 2>&1; then
  echo "cargo deny: the advisory database could not be fetched (it is on GitHub)" >&2
fi
# cargo-deny clones each database into a folder of its own under advisory-dbs.
dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if compgen -G "$dbs/advisory-db-*/crates" >/dev/null; then
  "$deny" --offline check advisories
else
  echo "cargo deny: advisories NOT checked: no copy of the advisory database on this" \
    "machine (run 'cargo deny fetch db' where GitHub can be reached)" >&2
fi
