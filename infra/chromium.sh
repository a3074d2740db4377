#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's `chromium` package
# with apt-get when it is missing (as root; otherwise it says which command would). The
# drift report's tests render the HTML page in it. CHROMIUM overrides the binary.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

chromium_log() { echo "chromium.sh: $*" >&2; }
chromium_die() {
  chromium_log "$*"
  exit 1
}

infra_flags chromium_die "chromium.sh" "$@"

found=${CHROMIUM:-$(command -v chromium || true)}
if [[ -z $found ]]; then
  infra_apt_install chromium_die chromium_log Chromium chromium
  found=$(command -v chromium)
fi
echo "$found"
