#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft) assembled from Maven Central, for tests, demo and CI.
#   kafka.sh fetch                 download the broker jars (only when missing or pom.xml changed)
#   kafka.sh start [port] [dir]    start a broker on 127.0.0.1:<port> (0/none: a free port) with its
#                                  state in <dir>; prints 127.0.0.1:<port> as its last line. Starting
#                                  again on the same dir keeps the data (same cluster, same controller port).
#   kafka.sh stop <dir>            SIGTERM, up to 30 s, then SIGKILL
# Env: KAFKA_LIBS (jar dir, default scripts/kafka/.cache/libs), JAVA (default java),
#      KAFKA_START_TIMEOUT (seconds, default 90).
#      A second, secured listener (read at the first start of a dir, kept on restarts):
#      KAFKA_SASL_SSL_PORT   port of a SASL_SSL listener (SCRAM-SHA-512) on 127.0.0.1 (0: a free port)
#      KAFKA_SSL_KEYSTORE    its PEM keystore: private key (PKCS#8, unencrypted), certificate, CA
#      KAFKA_SCRAM_USERS     "name=password ..." SCRAM-SHA-512 users created at format time
#      With it the broker runs the StandardAuthorizer with allow.everyone.if.no.acl.found=false, and
#      the PLAINTEXT listeners' principal (User:ANONYMOUS) is a super user: plaintext clients are unaffected.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIBS="${KAFKA_LIBS:-$HERE/.cache/libs}"
JAVA="${JAVA:-java}"
TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

die() { echo "kafka.sh: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
log_tail() { { grep -v $'^\tat ' "$1" || true; } | tail -n 30 >&2; }  # without stack frames
alive() { [[ -f "$1/kafka.pid" ]] && kill -0 "$(cat "$1/kafka.pid")" 2>/dev/null; }

fetch() {
  local stamp; stamp="$(sha1sum "$HERE/pom.xml" | cut -d' ' -f1)"
  [[ -f "$LIBS/.pom.sha1" && "$(cat "$LIBS/.pom.sha1")" == "$stamp" ]] && return 0
  rm -rf "$LIBS"
  local mvn=(mvn -B -q -f "$HERE/pom.xml" package "-Dlibs.dir=$LIBS") out
  # offline first (everything already in ~/.m2), then online
  out="$("${mvn[@]}" -o 2>&1)" || out="$("${mvn[@]}" 2>&1)" || { echo "$out" >&2; die "mvn failed"; }
  echo "$stamp" > "$LIBS/.pom.sha1"
}

start() {
  local port="${1:-0}" dir="${2:-}"
  [[ -n "$dir" ]] || dir="$(mktemp -d /tmp/kafka.XXXXXX)"
  [[ "$port" == 0 ]] && port="$(free_port)"
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  alive "$dir" && die "a broker is already running from $dir (pid $(cat "$dir/kafka.pid"))"
  fetch

  # A restart keeps the controller port: the KRaft voter set records its endpoint (a changed
  # one happened to work on 4.1.2 single-node, but it's not worth relying on).
  local cport=""
  [[ -f "$dir/server.properties" ]] && cport="$(sed -n 's/^controller.quorum.bootstrap.servers=127.0.0.1://p' "$dir/server.properties")"
  [[ -n "$cport" ]] || cport="$(free_port)"
  local sport="" keystore="" listeners protocols secured=""
  if [[ -f "$dir/secured.properties" ]]; then  # a restart: the first start's secured listener
    sport="$(sed -n 's/^# sasl_ssl_port=//p' "$dir/secured.properties")"
  elif [[ -n "${KAFKA_SASL_SSL_PORT:-}" ]]; then
    sport="$KAFKA_SASL_SSL_PORT" keystore="${KAFKA_SSL_KEYSTORE:?KAFKA_SSL_KEYSTORE is required with KAFKA_SASL_SSL_PORT}"
    [[ "$sport" == 0 ]] && sport="$(free_port)"
    printf '%s\n' "# sasl_ssl_port=$sport" \
      "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" \
      "allow.everyone.if.no.acl.found=false" \
      "super.users=User:ANONYMOUS" \
      "sasl.enabled.mechanisms=SCRAM-SHA-512" \
      "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
      "listener.name.sasl_ssl.ssl.keystore.type=PEM" \
      "listener.name.sasl_ssl.ssl.keystore.location=$keystore" > "$dir/secured.properties"
  fi
  listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n "$sport" ]]; then
    listeners="PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sport,CONTROLLER://127.0.0.1:$cport"
    protocols="$protocols,SASL_SSL:SASL_SSL"
    secured="$(cat "$dir/secured.properties")"
  fi

  cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
$secured
EOF
  # WARN and above, plus the "Kafka Server started" line, to stdout -> $dir/kafka.log
  cat > "$dir/log4j2.properties" <<'EOF'
appender.out.type=Console
appender.out.name=OUT
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.out.ref=OUT
logger.started.name=kafka.server.KafkaRaftServer
logger.started.level=INFO
EOF

  local cp="$LIBS/*" log="$dir/kafka.log"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local scram=() user
    if [[ -n "$sport" ]]; then
      for user in ${KAFKA_SCRAM_USERS:-}; do scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]"); done
    fi
    "$JAVA" -cp "$cp" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool format \
      --standalone -t "$("$JAVA" -cp "$cp" kafka.tools.StorageTool random-uuid)" "${scram[@]}" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "storage format failed"; }
  fi

  if [[ -s "$log" ]]; then mv "$log" "$log.prev"; fi  # readiness greps only this run's log
  nohup "$JAVA" -Xms256m -Xmx512m -Dkafka.logs.dir="$dir" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$log" 2>&1 </dev/null &
  echo $! > "$dir/kafka.pid"

  local deadline=$((SECONDS + TIMEOUT))
  until grep -q "Kafka Server started" "$log" && port_open "$port"; do
    if ! alive "$dir"; then
      log_tail "$log"; rm -f "$dir/kafka.pid"
      die "broker exited during startup (log: $log)"
    elif (( SECONDS >= deadline )); then
      log_tail "$log"; stop "$dir"
      die "broker not ready within ${TIMEOUT}s (log: $log)"
    fi
    sleep 0.2
  done
  echo "kafka: broker pid $(cat "$dir/kafka.pid"), state in $dir" >&2
  echo "127.0.0.1:$port"
}

stop() {
  local dir="${1:?usage: kafka.sh stop <dir>}" pid i
  [[ -f "$dir/kafka.pid" ]] || return 0
  pid="$(cat "$dir/kafka.pid")"
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka.sh: no exit 30 s after SIGTERM, SIGKILL $pid" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  fi
  rm -f "$dir/kafka.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 fetch | start [port] [dir] | stop <dir>" >&2; exit 2 ;;
esac
