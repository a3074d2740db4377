#!/usr/bin/env bash
# Copies the Kafka broker/tool jars named by infra/kafka/pom.xml from Maven Central (via mvn)
# into the cache (~/.cache/flywheel/kafka-<version>/libs). Idempotent: does nothing when the
# marker file says the cache is complete for the current pom.xml. --force refetches. Installs
# Debian's maven (and a JDK when java is missing) with apt-get if mvn is missing and we are root.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

force=0
infra_flags kafka_die "fetch.sh [--force]" "$@"

marker=$KAFKA_LIBS/.complete
pom_sum=$(sha256sum "$KAFKA_INFRA_DIR/pom.xml" | cut -d' ' -f1)
is_complete() { [[ -f "$marker" && "$(<"$marker")" == "$pom_sum" ]]; }

if [[ $force == 0 ]] && is_complete; then exit 0; fi

mkdir -p "$KAFKA_CACHE_DIR"
# Serialise concurrent fetches (parallel jobs sharing one cache).
exec 9>"$KAFKA_CACHE_DIR/.lock"
flock 9
if [[ $force == 0 ]] && is_complete; then exit 0; fi

if ! command -v mvn >/dev/null; then
  packages=(maven)
  command -v java >/dev/null || packages+=(default-jdk-headless)
  infra_apt_install kafka_die kafka_log Maven "${packages[@]}"
  command -v mvn >/dev/null || kafka_die "maven installed but mvn is not on PATH"
fi
tmp=$(mktemp -d "$KAFKA_CACHE_DIR/libs.tmp.XXXXXX")
mvn_log=$KAFKA_CACHE_DIR/fetch.log
trap 'rm -rf "$tmp"' EXIT
kafka_log "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS ..."
start=$SECONDS
if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_INFRA_DIR/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$tmp" -DincludeScope=runtime >"$mvn_log" 2>&1; then
  tail -n 40 "$mvn_log" >&2
  kafka_die "mvn dependency:copy-dependencies failed (full log: $mvn_log)"
fi
compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null ||
  kafka_die "kafka_2.13-$KAFKA_VERSION.jar missing after Maven copy (log: $mvn_log)"
echo "$pom_sum" >"$tmp/.complete"
rm -rf "$KAFKA_LIBS"
mv "$tmp" "$KAFKA_LIBS"
trap - EXIT
kafka_log "fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - start))s"
