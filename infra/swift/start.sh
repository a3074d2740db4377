#!/usr/bin/env bash
# Starts a local OpenStack Swift (Debian's packages; installs them with apt-get if missing)
# whose S3 API (s3api + tempauth) listens on 127.0.0.1:$SWIFT_PORT (18080), creates bucket
# $SWIFT_BUCKET (flywheel) and prints the endpoint on stdout; .run/swift.env holds the
# registry settings that use it. State lives in .run/swift; a running Swift is left alone.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

infra_flags swift_die "start.sh" "$@"

start=$SECONDS

if ! swift_installed; then
  # Where systemd runs, the packages' own services may start on Swift's default ports:
  # this instance runs beside them on its own.
  infra_apt_install swift_die swift_log Swift swift swift-proxy swift-account swift-container \
    swift-object memcached
  swift_installed || swift_die "swift packages installed but /usr/bin/swift-*-server missing"
fi

swift_lock
if [[ ! -e "$SWIFT_HOME" ]]; then
  if swift_has_xattrs "$SWIFT_RUN_ROOT"; then
    mkdir -p "$SWIFT_HOME"
  else
    swift_log "$SWIFT_RUN_ROOT keeps no user xattrs (Swift's object server needs them): state in $SWIFT_FALLBACK_HOME"
    mkdir -p "$SWIFT_FALLBACK_HOME"
    swift_has_xattrs "$SWIFT_FALLBACK_HOME" || swift_die "$SWIFT_FALLBACK_HOME keeps no user xattrs either"
    ln -s "$SWIFT_FALLBACK_HOME" "$SWIFT_HOME"
  fi
fi
mkdir -p "$SWIFT_ETC" "$SWIFT_DEVICES/d1" "$SWIFT_HOME/run" "$SWIFT_HOME/logs"

running=0
for server in "${SWIFT_SERVERS[@]}"; do
  swift_server_pid "$server" >/dev/null && running=$((running + 1))
done
if ((running == ${#SWIFT_SERVERS[@]})); then
  swift_log "already running (state $SWIFT_HOME)"
else
  ((running == 0)) || swift_die "only part of Swift runs: run infra/swift/stop.sh first"
  for server in "${SWIFT_SERVERS[@]}"; do
    port=$(swift_server_port "$server")
    swift_port_open "$port" && swift_die "port $SWIFT_HOST:$port is in use by another process; set SWIFT_PORT"
  done
  swift_configure
  # All at once: each takes a second or two to import Swift, and none needs another to start.
  for server in "${SWIFT_SERVERS[@]}"; do swift_launch "$server"; done
  for server in "${SWIFT_SERVERS[@]}"; do swift_wait_for_port "$server"; done
fi

swift_wait_until_healthy
swift_ensure_bucket "$SWIFT_BUCKET"

cat >"$SWIFT_RUN_ROOT/swift.env" <<EOF
FLYWHEEL_REGISTRY_ARTIFACT_STORE=s3
FLYWHEEL_REGISTRY_S3__BUCKET=$SWIFT_BUCKET
FLYWHEEL_REGISTRY_S3__ENDPOINT_URL=$SWIFT_ENDPOINT
FLYWHEEL_REGISTRY_S3__REGION=$SWIFT_REGION
FLYWHEEL_REGISTRY_S3__ADDRESSING_STYLE=path
FLYWHEEL_REGISTRY_S3__ACCESS_KEY_ID=$SWIFT_ACCESS_KEY_ID
FLYWHEEL_REGISTRY_S3__SECRET_ACCESS_KEY=$SWIFT_SECRET_ACCESS_KEY
EOF
swift_log "ready in $((SECONDS - start))s"
echo "$SWIFT_ENDPOINT"
