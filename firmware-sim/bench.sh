#!/usr/bin/env bash
# bench.sh measures the gateway with firmware-sim, for the README's
# benchmark table. Each case starts a fresh mosquitto and a fresh gateway
# (the binary from cmd/mqttsn-gateway, forwarding to that mosquitto over
# TCP), runs one firmware-sim scenario against it, and reads the CPU time
# of the gateway and of mosquitto from /proc/PID/stat over the run. The
# "direct" cases send the same load straight to mosquitto (firmware-sim
# -direct), without a gateway: the baseline. The "floor" cases put
# firmware-sim/floor in the gateway's place (the system calls a transparent
# gateway must make per message, made the gateway's way, and nothing else);
# "floorc" does the same for QoS 0 in C (testdata/floor/floor.c, with a
# blocking read): what is left of the gateway's cost once the gateway's own
# work is taken out.
#
#   firmware-sim/bench.sh                 # every case, once
#   RUNS=3 firmware-sim/bench.sh q1-100   # one case, three times
#   VERIFY= firmware-sim/bench.sh q0-100  # without the observer
#
# Needs mosquitto, bc and python3 (to read the JSON reports). Uses
# 127.0.0.1 ports 11883 (mosquitto) and 11884 (gateway). Prints one line per
# run: case, run, messages/s and CPU per message of the gateway and of
# mosquitto (µs) over the steady part of the run (the CONNECTs of the ramp
# left out; counts from the report's timeline), and for the whole run what
# was sent, delivered and lost, with p50/p99 latency (ms).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1}
DURATION=${DURATION:-10s}
VERIFY=${VERIFY--verify}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/gw" ./cmd/mqttsn-gateway
go build -o "$work/sim" ./firmware-sim
go build -o "$work/floor" ./firmware-sim/floor
cc -O2 -o "$work/floorc" testdata/floor/floor.c 2>/dev/null || echo "bench.sh: no C compiler: the floorc cases are left out" >&2
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "bench.sh: mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1; }

cat >"$work/mosquitto.conf" <<CONF
listener 11883 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_keepalive 65535
log_dest stderr
log_type error
max_queued_messages 0
CONF
cat >"$work/gateway.toml" <<CONF
[udp]
listen = ["127.0.0.1:11884"]
read_buffer = 4194304
[upstream]
broker = "tcp://127.0.0.1:11883"
[session]
max_clients = 20000
[log]
level = "warn"
CONF

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in 1/100 s
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; } # KiB

start() { # start mosquitto and, unless $1 is "direct", the gateway (or its floor)
	"$mosq" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
	echo $! >"$work/mosquitto.pid"
	sleep 0.3
	kill -0 "$(cat "$work/mosquitto.pid")" 2>/dev/null || { cat "$work/mosquitto.log" >&2; exit 1; }
	if [ "$1" != direct ]; then
		case "$1" in
		gateway) "$work/gw" -config "$work/gateway.toml" 2>"$work/gateway.log" & ;;
		floor) "$work/floor" -listen 127.0.0.1:11884 -broker 127.0.0.1:11883 2>"$work/gateway.log" & ;;
		floorc) "$work/floorc" 11884 11883 2>"$work/gateway.log" & ;;
		esac
		echo $! >"$work/gateway.pid"
		sleep 0.5
		kill -0 "$(cat "$work/gateway.pid")" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
	fi
}
stop() {
	for p in gateway mosquitto; do
		if [ -f "$work/$p.pid" ]; then kill "$(cat "$work/$p.pid")" 2>/dev/null || true; wait "$(cat "$work/$p.pid")" 2>/dev/null || true; rm -f "$work/$p.pid"; fi
	done
}

# case: name mode scenario sensors
cases=(
	"q0-10     gateway burst.toml      10"
	"q0-10     direct  burst.toml      10"
	"q0-100    gateway burst.toml      100"
	"q0-100    direct  burst.toml      100"
	"q0-100    floor   burst.toml      100"
	"q0-100    floorc  burst.toml      100"
	"q0-1000   gateway burst.toml      1000"
	"q0-1000   direct  burst.toml      1000"
	"q1-10     gateway burst-qos1.toml 10"
	"q1-10     direct  burst-qos1.toml 10"
	"q1-100    gateway burst-qos1.toml 100"
	"q1-100    direct  burst-qos1.toml 100"
	"q1-100    floor   burst-qos1.toml 100"
	"q1-1000   gateway burst-qos1.toml 1000"
	"q1-1000   direct  burst-qos1.toml 1000"
	"down-1000 gateway downlink.toml   1000"
	"mem-10000 gateway idle.toml       10000"
)

# Runs are interleaved (every case once, then again), so that a drift in
# the machine's speed does not favour one mode.
for run in $(seq "$RUNS"); do
	for c in "${cases[@]}"; do
		read -r name mode scenario sensors <<<"$c"
		if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
		if [ "$mode" = floorc ] && [ ! -x "$work/floorc" ]; then continue; fi
		start "$mode"
		args=(-scenario "testdata/scenarios/$scenario" -sensors "$sensors" -duration "$DURATION" -json -quiet
			-gateway 127.0.0.1:11884 -broker tcp://127.0.0.1:11883)
		[ "$mode" = direct ] && args+=(-direct)
		[ -n "$VERIFY" ] && [ "$name" != mem-10000 ] && args+=("$VERIFY")
		[ "$name" = mem-10000 ] && args[5]=30s # ramp 10 s, then asleep
		gpid=$(cat "$work/gateway.pid" 2>/dev/null || echo "")
		mpid=$(cat "$work/mosquitto.pid")
		rss0=0; [ -n "$gpid" ] && rss0=$(rss "$gpid")
		"$work/sim" "${args[@]}" >"$work/report.json" 2>"$work/sim.log" &
		simpid=$!
		launched=$(date +%s.%N)
		if [ "$name" = mem-10000 ]; then # RSS once every sensor is asleep
			sleep 25
			rss1=$(rss "$gpid")
			echo "$name run $run: gateway RSS $(( rss1 / 1024 )) MiB with $sensors sensors connected and asleep: $(( (rss1 - rss0) * 1024 / sensors )) B each beyond the $(( rss0 / 1024 )) MiB at start"
			wait "$simpid" || true
			stop
			continue
		fi
		# CPU over the steady part of the run: from 3 s after the start (the
		# ramp connects the sensors) to 0.5 s before the publishing ends.
		sleep 3
		g0=0; [ -n "$gpid" ] && g0=$(cpu "$gpid")
		m0=$(cpu "$mpid"); t0=$(date +%s.%N)
		sleep "$(echo "${DURATION%s} - 3.5" | bc)"
		g1=0; [ -n "$gpid" ] && g1=$(cpu "$gpid")
		m1=$(cpu "$mpid"); t1=$(date +%s.%N)
		wait "$simpid" || true
		stop
		python3 - "$work/report.json" "$name" "$mode" "$run" "$((g1 - g0))" "$((m1 - m0))" \
			"$(echo "$t0 - $launched" | bc)" "$(echo "$t1 - $launched" | bc)" <<'PY'
import json, sys
path, name, mode, run = sys.argv[1:5]
gcpu, mcpu, t0, t1 = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
r = json.load(open(path))
key = "down" if name.startswith("down") else "up"
def at(t):  # cumulative count at t seconds, from the report's timeline
    prev = {"t": 0.0, key: 0}
    for p in r.get("timeline") or []:
        if p["t"] >= t:
            f = (t - prev["t"]) / ((p["t"] - prev["t"]) or 1)
            return prev[key] + f * (p[key] - prev[key])
        prev = p
    return prev[key]
n = max(at(t1) - at(t0), 1)
streams = r["downlink"] if key == "down" else r["uplink"]
k, s = next(iter(streams.items()))
print(f"{name:9} {mode:7} run {run}: {n / (t1 - t0):8.0f} msg/s  sent {s['sent']:7}  delivered {s['delivered']:7}  lost {s['lost']:5}"
      f"  p50 {s['latency_p50_us']/1000:7.2f} ms  p99 {s['latency_p99_us']/1000:7.2f} ms"
      f"  gateway {gcpu*1e4/n:5.1f} µs/msg  mosquitto {mcpu*1e4/n:5.1f} µs/msg")
PY
	done
done
