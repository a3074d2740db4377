#!/usr/bin/env bash
# Runs the pinned kustomize with the given arguments (`kustomize.sh build overlays/prod`),
# building it first from the Go module proxy into ~/.cache/flywheel/kustomize-<version>/
# when that copy is missing (about a minute on 2 cores, once per machine). Needs Go.
# `kustomize.sh --path` prints the binary's path instead of running it.
#
# Environment overrides:
#   FLYWHEEL_CACHE_DIR  cache root (default: ~/.cache/flywheel)
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
cache=${FLYWHEEL_CACHE_DIR:-$HOME/.cache/flywheel}/kustomize-$KUSTOMIZE_VERSION
binary=$cache/kustomize

die() { echo "kustomize: error: $*" >&2; exit 1; }

if [[ ! -x $binary ]]; then
  command -v go >/dev/null || die "Go is needed to build kustomize $KUSTOMIZE_VERSION (apt-get install golang-go, or https://go.dev/doc/install)"
  mkdir -p "$cache"
  # Serialise concurrent builds sharing one cache.
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -x $binary ]]; then
    echo "kustomize: building $KUSTOMIZE_VERSION into $cache (once per machine) ..." >&2
    start=$SECONDS
    tmp=$(mktemp -d "$cache/bin.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    GOBIN=$tmp GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2 ||
      die "go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION failed"
    mv "$tmp/kustomize" "$binary"
    echo "kustomize: built in $((SECONDS - start))s" >&2
  fi
fi

if [[ ${1:-} == --path ]]; then
  echo "$binary"
  exit 0
fi
exec "$binary" "$@"
