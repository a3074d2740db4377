#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's `chromium` package
# with apt-get when it is missing (infra/command.sh). The drift report's tests render the
# HTML page in it. CHROMIUM overrides the binary.
set -euo pipefail
if [[ -n ${CHROMIUM:-} ]]; then
  echo "$CHROMIUM"
else
  exec "$(dirname "${BASH_SOURCE[0]}")/command.sh" chromium
fi
