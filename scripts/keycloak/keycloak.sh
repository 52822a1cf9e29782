#!/usr/bin/env bash
# Keycloak (Quarkus distribution) from Maven Central, plus a test-only Kafka event listener built here
# (listener/: SnuK87/keycloak-kafka's record format, synchronous sends), for tests, demo and CI.
#   keycloak.sh fetch               unpack the distribution into scripts/keycloak/.cache/keycloak-<v>/ and
#                                   build the listener jar into .cache/listener/ (each only when missing;
#                                   the jar is rebuilt when listener/ or the Keycloak version changes)
#   keycloak.sh start [port] [dir]  start-dev on 127.0.0.1:<port> (0/none: a free port), state in <dir>;
#                                   prints http://127.0.0.1:<port> as its last line. Starting again on the
#                                   same dir keeps its data (the admin user is only made on fresh data).
#                                   With KEYCLOAK_KAFKA_BOOTSTRAP set, the listener is installed in its
#                                   providers/ (id outbound-scim-test-kafka; a realm still has to enable it).
#   keycloak.sh stop <dir>          SIGTERM, up to 30 s, then SIGKILL
#   keycloak.sh listener            print the listener jar's path; exit 1 when fetch has not built it
#   keycloak.sh probe               exit 0 when Maven Central answers (a throwaway local repository, so a
#                                   real download), 3 when it does not: tells "offline" from other failures
# fetch exits 3 when Maven Central cannot be reached (and nothing is cached), 1 on any other failure.
# Env: KEYCLOAK_VERSION (26.7.3; also the SPI version the listener is compiled against),
#      KEYCLOAK_FEATURES (--features of start-dev; default scim-api: the tests use a realm's SCIM API
#      as a downstream; "" for none),
#      KEYCLOAK_CACHE (scripts/keycloak/.cache), KEYCLOAK_JAVA_HOME (default: a Temurin 21/25 under
#      /usr/lib/jvm, else `java` on PATH), KEYCLOAK_START_TIMEOUT (seconds, 180),
#      KEYCLOAK_JAVA_OPTS_APPEND (JVM options; default -XX:TieredStopAtLevel=1, see start),
#      KC_BOOTSTRAP_ADMIN_USERNAME / KC_BOOTSTRAP_ADMIN_PASSWORD (admin / admin),
#      KEYCLOAK_KAFKA_BOOTSTRAP (the listener's broker; unset: no listener),
#      KEYCLOAK_KAFKA_TOPIC / KEYCLOAK_KAFKA_ADMIN_TOPIC (user / admin event topics: keycloak-events /
#      keycloak-admin-events, the service's defaults), KEYCLOAK_KAFKA_EVENTS (user event types sent;
#      default the ones the service acts on, see the reference doc),
#      KEYCLOAK_MVN_ARGS (extra mvn arguments, e.g. "-s my-settings.xml").
# Measured on the 2-core machine (Keycloak 26.5.6, Temurin 25, other work running): first fetch with an
# empty ~/.m2 37 s (about 160 MB); a start on a fresh data dir 35 s the first time (augmentation included)
# and 20-25 s after that; about 400 MB RSS with the default -Xmx512m. Building the listener: 20-23 s
# (the same whether the plugins, the SPI and kafka-clients come from ~/.m2 or are downloaded); the
# first start with a newly built listener jar re-augments (55 s), the next ones take 25-28 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="${KEYCLOAK_VERSION:-26.7.3}"
FEATURES="${KEYCLOAK_FEATURES-scim-api}"
CACHE="${KEYCLOAK_CACHE:-$HERE/.cache}"
DIST="$CACHE/keycloak-$VERSION"
LISTENER_SRC="$HERE/listener"
# The jar's name carries a digest of its sources and the Keycloak version: any change means a rebuild.
LISTENER_JAR="$CACHE/listener/outbound-scim-test-kafka-listener-$VERSION-$(
  cd "$LISTENER_SRC" && find pom.xml src -type f | LC_ALL=C sort | xargs sha1sum | sha1sum | cut -c1-12).jar"
TIMEOUT="${KEYCLOAK_START_TIMEOUT:-180}"
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1  # Maven 3.8.7's super-POM would pick 2.8
read -r -a MVN_EXTRA <<< "${KEYCLOAK_MVN_ARGS:-}"

die() { echo "keycloak.sh: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
log_tail() { { grep -v $'^\tat ' "$1" || true; } | tail -n 40 >&2; }  # without stack frames
alive() { [[ -f "$1/keycloak.pid" ]] && kill -0 "$(cat "$1/keycloak.pid")" 2>/dev/null; }

# Maven's words for "the registry could not be reached" (as opposed to "it has no such artifact").
NETWORK_ERRORS='Unknown ?Host|UnknownHostException|Network is unreachable|No route to host|Connection refused|Connect to .* failed|connect timed out|Read timed out|Connection timed out|Temporary failure in name resolution|Name or service not known|Could not transfer'
NOT_FOUND='Could not find artifact|was not found in'

# mvn <args...>: offline first (everything already in ~/.m2), then online. Sets $MVN_OUT. Runs in a
# scratch dir: the plugin leaves "already unpacked" markers under its working dir, which would make
# a later unpack into a fresh folder a silent no-op.
mvn_twice() {
  local work rc=0; work="$(mktemp -d "$CACHE/.mvn.XXXXXX")"
  MVN_OUT="$(cd "$work" && mvn -B -q -o -Dstyle.color=never "${MVN_EXTRA[@]}" "$@" 2>&1)" \
    || MVN_OUT="$(cd "$work" && mvn -B -q -Dstyle.color=never "${MVN_EXTRA[@]}" "$@" 2>&1)" || rc=$?
  rm -rf "$work"
  return "$rc"
}

# Exit 3 for an unreachable registry, so callers (the test fixtures) can skip rather than fail.
mvn_failed() {
  echo "$MVN_OUT" | grep -oE '\[ERROR\] .*(Failed|Could not|Cannot).*' | head -n 3 | cut -c1-400 >&2 || true
  if ! echo "$MVN_OUT" | grep -qE "$NOT_FOUND" && echo "$MVN_OUT" | grep -qE "$NETWORK_ERRORS"; then
    echo "keycloak.sh: $1: Maven Central is unreachable" >&2
    exit 3
  fi
  die "$1 failed"
}

fetch() {
  mkdir -p "$CACHE"
  local began=$SECONDS
  if [[ ! -f "$DIST/.unpacked" ]]; then
    local tmp="$CACHE/.unpack.$$"
    rm -rf "$tmp" "$DIST"
    mvn_twice "$DEP_PLUGIN:unpack" "-Dartifact=org.keycloak:keycloak-quarkus-dist:$VERSION:zip" \
      "-DoutputDirectory=$tmp" || { rm -rf "$tmp"; mvn_failed "keycloak-quarkus-dist $VERSION"; }
    [[ -d "$tmp/keycloak-$VERSION/bin" ]] || die "the zip did not unpack to keycloak-$VERSION/"
    chmod +x "$tmp/keycloak-$VERSION/bin/"*.sh
    mv "$tmp/keycloak-$VERSION" "$DIST"
    rm -rf "$tmp"
    touch "$DIST/.unpacked"
    echo "keycloak: keycloak-quarkus-dist $VERSION unpacked in $((SECONDS - began)) s into $DIST" >&2
  fi
  [[ -f "$LISTENER_JAR" ]] || build_listener
}

# The listener's fat jar (kafka-clients shaded in), compiled against this Keycloak's SPI.
build_listener() {
  local began=$SECONDS build="$CACHE/listener/build"
  mkdir -p "$CACHE/listener"
  rm -rf "$build"
  mvn_twice -f "$LISTENER_SRC/pom.xml" package "-Dkeycloak.version=$VERSION" "-Dlistener.build.dir=$build" \
    || { rm -rf "$build"; mvn_failed "the Kafka event listener (listener/pom.xml)"; }
  rm -f "$CACHE/listener/"*"-$VERSION-"*.jar  # earlier builds for this version (other versions' stay)
  mv "$build/outbound-scim-test-kafka-listener.jar" "$LISTENER_JAR"
  rm -rf "$build"
  echo "keycloak: Kafka event listener built in $((SECONDS - began)) s: $LISTENER_JAR" >&2
}

probe() {
  # Importing a BOM into a fresh local repository is one small real download and binds no plugin.
  local repo; repo="$(mktemp -d)"
  cat > "$repo/probe.xml" <<'EOF'
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>local.probe</groupId><artifactId>keycloak-sh-probe</artifactId><version>1</version><packaging>pom</packaging>
  <dependencyManagement><dependencies><dependency><groupId>org.junit</groupId><artifactId>junit-bom</artifactId>
    <version>5.10.2</version><type>pom</type><scope>import</scope></dependency></dependencies></dependencyManagement>
</project>
EOF
  local rc=0
  mvn -B -q "${MVN_EXTRA[@]}" -f "$repo/probe.xml" "-Dmaven.repo.local=$repo/m2" validate >/dev/null 2>&1 || rc=3
  rm -rf "$repo"
  return "$rc"
}

java_home() {
  if [[ -n "${KEYCLOAK_JAVA_HOME:-}" ]]; then echo "$KEYCLOAK_JAVA_HOME"; return; fi
  local d
  for d in /usr/lib/jvm/temurin-21* /usr/lib/jvm/temurin-25* /usr/lib/jvm/java-21-openjdk* /usr/lib/jvm/java-25-openjdk*; do
    [[ -x "$d/bin/java" ]] && { echo "$d"; return; }
  done
  local java; java="$(readlink -f "$(command -v java)")" || die "no java found"
  dirname "$(dirname "$java")"  # Java 17: deprecated by Keycloak 26 but works
}

# A per-run Keycloak home: start-dev keeps its H2 database under data/ and re-augments into lib/quarkus
# (10-45 s on 2 cores) when the build options or providers differ from what lib/quarkus was built
# with. So each state dir gets its own copies of those (a few MB), symlinks to the big jar dirs, and
# the lib/quarkus that an earlier start-dev built with the same providers, when there is one.
providers_key() {
  (cd "$1/home/providers" && find . -maxdepth 1 -name '*.jar' -printf '%f %s %T@\n' | sort; echo "$VERSION $FEATURES") | sha1sum | cut -c1-12
}

make_home() {
  local home="$1/home" augmented
  [[ -d "$home" ]] && rm -rf "$home/providers" "$home/lib/quarkus"  # pick up changed providers
  mkdir -p "$home/bin" "$home/lib" "$home/data"
  cp "$DIST/bin/kc.sh" "$home/bin/"
  [[ -d "$home/conf" ]] || cp -r "$DIST/conf" "$home/conf"
  [[ -e "$home/themes" ]] || cp -r "$DIST/themes" "$home/themes"
  cp -a "$DIST/providers" "$home/providers"  # -a: Keycloak compares the jars' mtimes with its build
  if [[ -n "${KEYCLOAK_KAFKA_BOOTSTRAP:-}" ]]; then
    [[ -f "$LISTENER_JAR" ]] || die "the Kafka event listener is not built (keycloak.sh fetch)"
    cp -a "$LISTENER_JAR" "$home/providers/"
  fi
  cp "$DIST/lib/quarkus-run.jar" "$DIST/version.txt" "$home/lib/"
  mv "$home/lib/version.txt" "$home/"
  augmented="$CACHE/augmented-dev-$(providers_key "$1")"
  if [[ -f "$augmented/quarkus-application.dat" ]]; then
    cp -a "$augmented" "$home/lib/quarkus"
  else
    cp -a "$DIST/lib/quarkus" "$home/lib/quarkus"
  fi
  ln -sfn "$DIST/lib/lib" "$home/lib/lib"
  ln -sfn "$DIST/lib/app" "$home/lib/app"
}

# After a start that re-augmented: keep its lib/quarkus for the next state dirs.
keep_augmented() {
  local dir="$1" augmented="$CACHE/augmented-dev-$(providers_key "$1")"
  [[ -d "$augmented" ]] && return 0
  grep -q "augmentation completed" "$dir/keycloak.log" || return 0
  cp -a "$dir/home/lib/quarkus" "$augmented.$$" && mv -T "$augmented.$$" "$augmented" 2>/dev/null || rm -rf "$augmented.$$"
}

start() {
  local port="${1:-0}" dir="${2:-}"
  [[ -n "$dir" ]] || dir="$(mktemp -d /tmp/keycloak.XXXXXX)"
  [[ "$port" == 0 ]] && port="$(free_port)"
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  alive "$dir" && die "a Keycloak is already running from $dir (pid $(cat "$dir/keycloak.pid"))"
  fetch
  make_home "$dir"
  local mport; mport="$(free_port)"
  while [[ "$mport" == "$port" ]]; do mport="$(free_port)"; done

  # The listener's settings (SnuK87's variable names), only when it is installed: never inherited.
  local -a kafka_env=(-u KAFKA_BOOTSTRAP_SERVERS -u KAFKA_TOPIC -u KAFKA_ADMIN_TOPIC -u KAFKA_EVENTS -u KAFKA_CLIENT_ID)
  if [[ -n "${KEYCLOAK_KAFKA_BOOTSTRAP:-}" ]]; then
    kafka_env+=("KAFKA_BOOTSTRAP_SERVERS=$KEYCLOAK_KAFKA_BOOTSTRAP"
      "KAFKA_TOPIC=${KEYCLOAK_KAFKA_TOPIC:-keycloak-events}"
      "KAFKA_ADMIN_TOPIC=${KEYCLOAK_KAFKA_ADMIN_TOPIC:-keycloak-admin-events}"
      "KAFKA_EVENTS=${KEYCLOAK_KAFKA_EVENTS:-REGISTER,UPDATE_PROFILE,UPDATE_EMAIL,USER_DISABLED_BY_PERMANENT_LOCKOUT,DELETE_ACCOUNT}")
  fi

  # JAVA_OPTS_APPEND: C1 only (-XX:TieredStopAtLevel=1) halves start-up and augmentation on 2 busy
  # cores (measured 29 s instead of 65 s); set KEYCLOAK_JAVA_OPTS_APPEND="" for full JIT. The add-opens
  # keeps jboss-threads from throwing IllegalAccessError as threads end on Java 24+.
  local jhome log="$dir/keycloak.log"
  jhome="$(java_home)"
  if [[ -s "$log" ]]; then mv "$log" "$log.prev"; fi
  echo "$port $mport" > "$dir/ports"
  local started=$SECONDS
  local -a features=()
  [[ -n "$FEATURES" ]] && features=("--features=$FEATURES")
  # setsid: its own process group, so stop can reach the JVM behind kc.sh's wrapper shell
  env -u JAVA_OPTS -u JAVA "${kafka_env[@]}" \
    JAVA_OPTS_APPEND="--add-opens=java.base/java.lang=ALL-UNNAMED ${KEYCLOAK_JAVA_OPTS_APPEND--XX:TieredStopAtLevel=1}" \
    JAVA_HOME="$jhome" \
    KC_BOOTSTRAP_ADMIN_USERNAME="${KC_BOOTSTRAP_ADMIN_USERNAME:-admin}" \
    KC_BOOTSTRAP_ADMIN_PASSWORD="${KC_BOOTSTRAP_ADMIN_PASSWORD:-admin}" \
    setsid nohup "$dir/home/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$port" \
      --http-management-port="$mport" "${features[@]}" >>"$log" 2>&1 </dev/null &
  echo $! > "$dir/keycloak.pid"

  local url="http://127.0.0.1:$port" deadline=$((SECONDS + TIMEOUT))
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/realms/master/.well-known/openid-configuration" || true)" == 200 ]]; do
    if ! alive "$dir"; then
      log_tail "$log"; rm -f "$dir/keycloak.pid"
      die "Keycloak exited during startup (log: $log)"
    elif (( SECONDS >= deadline )); then
      log_tail "$log"; stop "$dir"
      die "Keycloak not ready within ${TIMEOUT}s (log: $log)"
    fi
    sleep 0.5
  done
  keep_augmented "$dir"
  echo "keycloak: pid $(cat "$dir/keycloak.pid"), ready in $((SECONDS - started)) s, java $jhome, state in $dir" >&2
  echo "$url"
}

stop() {
  local dir="${1:?usage: keycloak.sh stop <dir>}" pid i
  [[ -f "$dir/keycloak.pid" ]] || return 0
  pid="$(cat "$dir/keycloak.pid")"
  if kill -TERM "$pid" 2>/dev/null; then  # kc.sh forwards TERM to the JVM
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "keycloak.sh: no exit 30 s after SIGTERM, SIGKILL process group $pid" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  fi
  rm -f "$dir/keycloak.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  listener) [[ -f "$LISTENER_JAR" ]] && echo "$LISTENER_JAR" ;;
  probe) probe ;;
  *) echo "usage: $0 fetch | start [port] [dir] | stop <dir> | listener | probe" >&2; exit 2 ;;
esac
