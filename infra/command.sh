#!/usr/bin/env bash
# Prints the path of a command, installing the Debian package that provides it with apt-get
# when it is missing (as root; otherwise it says which command would).
# Usage: infra/command.sh COMMAND [PACKAGE]   (PACKAGE defaults to COMMAND)
# The tests find their outside tools through it: Chromium for the drift report's page,
# curl for the gateway's REST API.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

command_log() { echo "command.sh: $*" >&2; }
command_die() {
  command_log "$*"
  exit 1
}

(($# >= 1 && $# <= 2)) || command_die "usage: infra/command.sh COMMAND [PACKAGE]"
name=$1 package=${2:-$1}
found=$(command -v "$name" || true)
if [[ -z $found ]]; then
  infra_apt_install command_die command_log "$name" "$package"
  found=$(command -v "$name")
fi
echo "$found"
