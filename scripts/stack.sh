#!/usr/bin/env bash
# The observability stack without Docker: Jaeger v2 and a Collector built from
# their published Go modules (versions in scripts/stack.env), cached per
# version outside the repo, run on loopback as the invoking user.
#
#   scripts/stack.sh build    build the binaries, or reuse the cached ones
#   scripts/stack.sh paths    print jaeger=PATH and otelcol=PATH (built or not)
#   scripts/stack.sh up       build if needed, start both, wait until healthy
#   scripts/stack.sh status   say what runs, and where
#   scripts/stack.sh down     stop what `up` started
#
# Environment: PFLOW_STACK_CACHE (default ~/.cache/pflow-stack) holds the
# binaries; PFLOW_STACK_RUN (default $PFLOW_STACK_CACHE/run) the pid files,
# logs, the file exporter's output and the replay offsets; PFLOW_HOME (default
# ~/.pflow) is where pflow saves the traces the Collector replays.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=stack.env
source "$repo/scripts/stack.env"

cache="${PFLOW_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pflow-stack}"
run_dir="${PFLOW_STACK_RUN:-$cache/run}"
manifest="$repo/stack/otelcol-builder.yaml"
# The Collector is keyed by its release and by the manifest's content, so
# adding a component rebuilds it.
manifest_key="$(sha256sum "$manifest" | cut -c1-12)"
jaeger_bin="$cache/jaeger-$JAEGER_MODULE_VERSION/jaeger"
otelcol_bin="$cache/otelcol-v$OTELCOL_VERSION-$manifest_key/pflow-otelcol"
builder_bin="$cache/builder-v$OTELCOL_VERSION/builder"

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 || die "Go is needed to build the stack (go not on PATH)"
}

# Jaeger's module carries a replace directive, so `go install pkg@version`
# refuses it: build it as a tool of a small throwaway module instead,
# repeating Jaeger's one replace.
build_jaeger() {
  [[ -x "$jaeger_bin" ]] && { log "jaeger $JAEGER_MODULE_VERSION: cached ($jaeger_bin)"; return; }
  need_go
  local src="$cache/build/jaeger-$JAEGER_MODULE_VERSION" t0=$SECONDS
  log "jaeger $JAEGER_MODULE_VERSION: building (several minutes on a cold machine)"
  rm -rf "$src" && mkdir -p "$src" "$(dirname "$jaeger_bin")"
  (
    cd "$src"
    go mod init pflow-stack/jaeger >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_MODULE_VERSION"
    go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
    go mod tidy
    nice -n 10 go build -o "$jaeger_bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
  )
  mv "$jaeger_bin.tmp" "$jaeger_bin"
  log "jaeger $JAEGER_MODULE_VERSION: built in $((SECONDS - t0))s"
}

build_otelcol() {
  [[ -x "$otelcol_bin" ]] && { log "collector v$OTELCOL_VERSION: cached ($otelcol_bin)"; return; }
  need_go
  local t0=$SECONDS
  if [[ ! -x "$builder_bin" ]]; then
    log "builder v$OTELCOL_VERSION: installing"
    GOBIN="$(dirname "$builder_bin")" nice -n 10 \
      go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
  fi
  local src="$cache/build/otelcol-v$OTELCOL_VERSION-$manifest_key"
  log "collector v$OTELCOL_VERSION: building from $manifest"
  rm -rf "$src" && mkdir -p "$src" "$(dirname "$otelcol_bin")"
  (cd "$src" && nice -n 10 "$builder_bin" --config "$manifest")
  mv "$src/dist/pflow-otelcol" "$otelcol_bin"
  log "collector v$OTELCOL_VERSION: built in $((SECONDS - t0))s"
}

# Loopback addresses `up` uses (each overridable from the environment).
export_addresses() {
  export PFLOW_STACK_OTLP_GRPC="${PFLOW_STACK_OTLP_GRPC:-127.0.0.1:4317}"
  export PFLOW_STACK_OTLP_HTTP="${PFLOW_STACK_OTLP_HTTP:-127.0.0.1:4318}"
  export PFLOW_STACK_PROMETHEUS="${PFLOW_STACK_PROMETHEUS:-127.0.0.1:8889}"
  export PFLOW_STACK_HEALTH="${PFLOW_STACK_HEALTH:-127.0.0.1:13133}"
  export PFLOW_STACK_JAEGER_OTLP_GRPC="${PFLOW_STACK_JAEGER_OTLP_GRPC:-127.0.0.1:14317}"
  export PFLOW_STACK_JAEGER_OTLP_HTTP="${PFLOW_STACK_JAEGER_OTLP_HTTP:-127.0.0.1:14318}"
  export PFLOW_STACK_JAEGER_OTLP="$PFLOW_STACK_JAEGER_OTLP_GRPC"
  export PFLOW_STACK_JAEGER_HTTP="${PFLOW_STACK_JAEGER_HTTP:-127.0.0.1:16686}"
  export PFLOW_STACK_JAEGER_QUERY_GRPC="${PFLOW_STACK_JAEGER_QUERY_GRPC:-127.0.0.1:16685}"
  export PFLOW_STACK_JAEGER_HEALTH="${PFLOW_STACK_JAEGER_HEALTH:-127.0.0.1:13134}"
  local home="${PFLOW_HOME:-$HOME/.pflow}"
  export PFLOW_STACK_TRACES_DIR="$home/traces"
  export PFLOW_STACK_OUT_DIR="$run_dir/collector-out"
  export PFLOW_STACK_STATE_DIR="$run_dir/collector-state"
}

alive() { [[ -f "$run_dir/$1.pid" ]] && kill -0 "$(cat "$run_dir/$1.pid")" 2>/dev/null; }

start() { # name binary config
  local name="$1" bin="$2" config="$3"
  if alive "$name"; then log "$name already running (pid $(cat "$run_dir/$name.pid"))"; return; fi
  nohup "$bin" --config "$config" >"$run_dir/$name.log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
}

wait_healthy() { # name url
  local name="$1" url="$2"
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    alive "$name" || die "$name exited; see $run_dir/$name.log"
    sleep 0.1
  done
  die "$name not healthy after 10s ($url); see $run_dir/$name.log"
}

up() {
  build_jaeger
  build_otelcol
  export_addresses
  mkdir -p "$run_dir" "$PFLOW_STACK_OUT_DIR" "$PFLOW_STACK_STATE_DIR"
  # As pflow creates them: private to the user.
  (umask 077 && mkdir -p "$PFLOW_STACK_TRACES_DIR")
  start jaeger "$jaeger_bin" "$repo/jaeger.yaml"
  wait_healthy jaeger "http://$PFLOW_STACK_JAEGER_HEALTH/status"
  start otelcol "$otelcol_bin" "$repo/otel-collector.yaml"
  wait_healthy otelcol "http://$PFLOW_STACK_HEALTH/"
  cat <<EOF
stack: up. Send a run through the Collector and find it in Jaeger:
  OTEL_EXPORTER_OTLP_ENDPOINT=http://$PFLOW_STACK_OTLP_GRPC pflow run examples/hello.json --trace
  curl http://$PFLOW_STACK_JAEGER_HTTP/api/traces?service=pflow
Collector output: $PFLOW_STACK_OUT_DIR/traces.jsonl; logs: $run_dir/*.log
EOF
}

down() {
  local name pid
  for name in otelcol jaeger; do
    [[ -f "$run_dir/$name.pid" ]] || continue
    pid="$(cat "$run_dir/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "$name stopped (pid $pid)"
    fi
    rm -f "$run_dir/$name.pid"
  done
}

status() {
  local name rc=0
  export_addresses
  for name in jaeger otelcol; do
    if alive "$name"; then
      log "$name: running (pid $(cat "$run_dir/$name.pid"))"
    else
      log "$name: not running"; rc=1
    fi
  done
  log "jaeger query API: http://$PFLOW_STACK_JAEGER_HTTP  collector OTLP: $PFLOW_STACK_OTLP_GRPC (gRPC), $PFLOW_STACK_OTLP_HTTP (HTTP)"
  return $rc
}

case "${1:-}" in
  build) build_jaeger; build_otelcol ;;
  paths) printf 'jaeger=%s\notelcol=%s\n' "$jaeger_bin" "$otelcol_bin" ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/stack.sh build|paths|up|status|down" ;;
esac
