#!/usr/bin/env bash
# Load benchmarks for response_cache, run against a real Caddy built with
# xcaddy. Everything listens on 127.0.0.1; every run is bounded in time.
#
#   bench/run.sh            # throughput: respond (ceiling) vs reverse_proxy (floor) vs cache hits and misses
#   bench/run.sh memory     # RSS after filling the cache with 10x max_size of unique URLs (MAX_MIB, LIMITS)
#   bench/run.sh profile    # CPU and heap allocations per request of misses and pass-through against reverse_proxy, with CPU profiles (SIZE, PDUR, PMODES)
#   bench/run.sh latency    # latency of concurrent requests to one uncacheable URL of a slow origin (DELAY, LCONNS, LROUNDS, LQUERY, LHEADER)
#   bench/run.sh media      # what the origin sends while browsers play videos with Range requests (PLAYS)
#   bench/run.sh burst      # peak RSS while BURST concurrent misses of distinct BURST_MIB objects arrive slowly (MAX_MIB)
#   bench/run.sh mixed      # RSS after filling the cache with 10x max_size of responses of 1 KiB to 8 MiB, with and without Content-Length (MAX_MIB, SEED)
#
# Needs wrk (apt-get install wrk), but for media, burst and mixed. DURATION
# (default 3s), CONNS (default 32) and ROUNDS (default 7; medians are
# reported) tune the throughput runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
DURATION=${DURATION:-3s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-7}
CADDY=${CADDY:-$out/caddy}

case ${1:-throughput} in
media | burst | mixed) ;; # curl and Python clients: no wrk
*) command -v wrk >/dev/null || { echo "bench: wrk not found; apt-get install wrk" >&2; exit 1; } ;;
esac
if [ ! -x "$CADDY" ]; then
	go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 --output "$CADDY" \
		--with github.com/f06cdff9/caddy-affinity-cache@v0.0.0-00010101000000-000000000000=.
fi

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
ADMIN=$(freeport); ORIGIN=$(freeport); CEIL=$(freeport); FLOOR=$(freeport); CACHE=$(freeport); ONCE=$(freeport); EVERY=$(freeport); FILLER=$(freeport)

caddy_pid=
stop_caddy() { [ -n "$caddy_pid" ] && kill "$caddy_pid" 2>/dev/null && wait "$caddy_pid" 2>/dev/null; caddy_pid=; }
trap stop_caddy EXIT

# On a machine with 2+ cores, Caddy runs on core 1 and wrk on core 0, so the
# load generator does not steal the server's cycles unevenly between runs.
PIN_CADDY=() PIN_WRK=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	PIN_CADDY=(taskset -c 1) PIN_WRK=(taskset -c 0)
fi

start_caddy() { # $1 = Caddyfile
	"${PIN_CADDY[@]}" "$CADDY" run --config "$1" --adapter caddyfile >"$out/caddy.log" 2>&1 &
	caddy_pid=$!
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$ORIGIN/" -o /dev/null 2>/dev/null && return 0
		sleep 0.1
	done
	echo "bench: caddy did not start; see $out/caddy.log" >&2; exit 1
}

rps() { # url [lua script] -> requests/s
	local args=(-t1 -c"$CONNS" -d"$DURATION" --latency)
	local tail=()
	# a fresh prefix per run, so that no run's "unique" URLs were cached by an earlier one
	[ -n "${2:-}" ] && args+=(-s "$2") && tail=(-- "$RANDOM$RANDOM$RANDOM")
	"${PIN_WRK[@]}" wrk "${args[@]}" "$1" "${tail[@]}" | awk '/Requests\/sec/ {print $2}'
}

# preamble prints the global options and the origin site, which answers
# with $body: no-store under /nostore/, cacheable for an hour elsewhere.
preamble() {
	cat <<CFG
{
	admin localhost:$ADMIN
	default_bind 127.0.0.1
	auto_https off
	log {
		output discard
	}
}
http://127.0.0.1:$ORIGIN {
	header Content-Type "text/plain"
	handle /nostore/* {
		header Cache-Control "no-store"
		respond "$body"
	}
	handle {
		header Cache-Control "public, max-age=3600"
		respond "$body"
	}
}
CFG
}

# floor_site prints the plain reverse_proxy site on $FLOOR.
floor_site() {
	cat <<CFG
http://127.0.0.1:$FLOOR {
	reverse_proxy 127.0.0.1:$ORIGIN
}
CFG
}

# every_site prints the site on $EVERY: a 256 MiB store of its own
# (cache_name every) that stores every miss (min_uses 1).
every_site() {
	cat <<CFG
http://127.0.0.1:$EVERY {
	response_cache {
		cache_name every
		max_size 256MiB
		min_uses 1
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
CFG
}

# default_sites prints three sites sharing the default store (256 MiB):
# $CACHE with the default min_uses (auto), $ONCE with min_uses 2 and
# $FILLER with min_uses 1, which fills the store.
default_sites() {
	cat <<CFG
http://127.0.0.1:$CACHE {
	response_cache {
		max_size 256MiB
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
http://127.0.0.1:$ONCE {
	response_cache {
		max_size 256MiB
		min_uses 2
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
http://127.0.0.1:$FILLER {
	response_cache {
		max_size 256MiB
		min_uses 1
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
CFG
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# spread prints the lowest and highest of its input, as "lo-hi".
spread() { sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }
# ratios NUM DEN prints NUM[i] / DEN[i] for each round i (array names).
ratios() {
	local -n num=$1 den=$2
	local i
	for i in "${!den[@]}"; do echo "${num[$i]} / ${den[$i]}" | bc -l; done
}

cat > "$out/unique.lua" <<'LUA'
counter = 0
prefix = "x"
init = function(args) prefix = args[1] or "x" end
request = function()
	counter = counter + 1
	return wrk.format(nil, "/u/" .. prefix .. "-" .. counter)
end
LUA

# fill_until_full PORT CACHE_NAME sends FILL (default 12s) of unique misses
# to the site on PORT, then more, 4s at a time (at most 15 times), until
# ristretto has evicted or refused an entry of the store CACHE_NAME (on a
# slow machine 12s is not enough for 256 MiB).
fill_until_full() {
	"${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"${FILL:-12s}" -s "$out/unique.lua" "http://127.0.0.1:$1" -- "fill$RANDOM" >/dev/null
	for _ in $(seq 15); do
		full=$(curl -fs "http://localhost:$ADMIN/metrics" |
			awk -v c="cache=\"$2\"" '/^caddy_response_cache_(evictions|rejects)_total/ && index($0, c) {n += $2} END {print n + 0}')
		[ "$full" != 0 ] && return
		"${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d4s -s "$out/unique.lua" "http://127.0.0.1:$1" -- "fill$RANDOM" >/dev/null
	done
}

throughput() {
	for size in 1024 102400; do
		body=$(head -c "$size" /dev/zero | tr '\0' 'a')
		cfg="$out/throughput-$size.Caddyfile"
		{ preamble; cat <<CFG
http://127.0.0.1:$CEIL {
	header Cache-Control "public, max-age=3600"
	header Content-Type "text/plain"
	respond "$body"
}
CFG
			default_sites; floor_site; every_site
		} > "$cfg"
		start_caddy "$cfg"
		curl -fs "http://127.0.0.1:$CACHE/hit" -o /dev/null; sleep 0.2; curl -fs "http://127.0.0.1:$CACHE/hit" -o /dev/null
		# Fill the caches first, so that every round measures the steady state
		# of a full cache that evicts to store. The default store is filled
		# through a site that shares it with min_uses 1 (the default, auto,
		# would soon store only one unique URL in 16 and take long to fill).
		fill_until_full "$FILLER" caddy
		fill_until_full "$EVERY" every
		# Each ratio compares the same requests: hits and respond one URL;
		# pass-through and its floor one no-store URL; misses and their
		# floor unique URLs from the same script. min_uses 1 stores every
		# miss, in a store of its own (cache_name every); the default (auto)
		# stops storing first misses once its full store refuses most of
		# them; min_uses 2, sharing that store, never stores them.
		local c=() f=() h=() m=() s=() u=() o=() a=()
		# The three miss runs take turns at going first: a run right after
		# one that stored every miss pays for some of its collection and of
		# ristretto's backlog.
		for round in $(seq "$ROUNDS"); do
			c+=("$(rps "http://127.0.0.1:$CEIL/hit")")
			h+=("$(rps "http://127.0.0.1:$CACHE/hit")")
			f+=("$(rps "http://127.0.0.1:$FLOOR/nostore/x")")
			m+=("$(rps "http://127.0.0.1:$CACHE/nostore/x")")
			u+=("$(rps "http://127.0.0.1:$FLOOR" "$out/unique.lua")")
			for k in $(seq 0 2); do
				case $(((round + k) % 3)) in
				0) s+=("$(rps "http://127.0.0.1:$EVERY" "$out/unique.lua")") ;;
				1) a+=("$(rps "http://127.0.0.1:$CACHE" "$out/unique.lua")") ;;
				2) o+=("$(rps "http://127.0.0.1:$ONCE" "$out/unique.lua")") ;;
				esac
			done
		done
		stop_caddy
		# medians of the rates, and medians of the per-round ratios (each ratio
		# compares runs made seconds apart, which cancels slow drifts)
		local cm fm hm mm sm um om am rh rm rs ro ra xh xm xs xo xa
		cm=$(printf '%s\n' "${c[@]}" | median); hm=$(printf '%s\n' "${h[@]}" | median)
		fm=$(printf '%s\n' "${f[@]}" | median); mm=$(printf '%s\n' "${m[@]}" | median)
		sm=$(printf '%s\n' "${s[@]}" | median); um=$(printf '%s\n' "${u[@]}" | median)
		om=$(printf '%s\n' "${o[@]}" | median); am=$(printf '%s\n' "${a[@]}" | median)
		rh=$(ratios h c | median); xh=$(ratios h c | spread)
		rm=$(ratios m f | median); xm=$(ratios m f | spread)
		rs=$(ratios s u | median); xs=$(ratios s u | spread)
		ro=$(ratios o u | median); xo=$(ratios o u | spread)
		ra=$(ratios a u | median); xa=$(ratios a u | spread)
		printf '%-7s respond %7.0f/s | cache hit %7.0f/s (%.2fx respond, rounds %s) | reverse_proxy %6.0f/s | cache pass-through (no-store) %6.0f/s (%.2fx proxy, rounds %s) | reverse_proxy, unique URLs %6.0f/s | misses, min_uses 1 (every one stored) %6.0f/s (%.2fx proxy, rounds %s) | misses, default (auto) %6.0f/s (%.2fx proxy, rounds %s) | misses, min_uses 2 %6.0f/s (%.2fx proxy, rounds %s)\n' \
			"$((size / 1024))KiB" "$cm" "$hm" "$rh" "$xh" "$fm" "$mm" "$rm" "$xm" "$um" "$sm" "$rs" "$xs" "$am" "$ra" "$xa" "$om" "$ro" "$xo"
	done
}

memory() {
	local max_mib=${MAX_MIB:-64} item=16384
	local total=$((max_mib * 10 * 1024 * 1024 / item))
	body=$(head -c "$item" /dev/zero | tr '\0' 'm')
	cfg="$out/memory.Caddyfile"
	# min_uses 1: every miss is stored, the hardest case for the cap (by
	# default the cache stops storing first misses a full store refuses).
	{ preamble; cat <<CFG
http://127.0.0.1:$CACHE {
	response_cache {
		max_size ${max_mib}MiB
		min_uses 1
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
CFG
	} > "$cfg"
	cat > "$out/fill.lua" <<LUA
counter = 0
request = function()
	counter = counter + 1
	return wrk.format(nil, "/fill/" .. wrk.thread:get("id") .. "-" .. counter)
end
response = function()
	if counter >= $total then wrk.thread:stop() end
end
setup = function(thread) thread:set("id", math.random(1, 1e9)) end
LUA
	# LIMITS lists the GOMEMLIMIT values to run with ("unset" for none),
	# e.g. LIMITS="unset 40MiB". GOMEMLIMIT caps Go's own memory (heap,
	# stacks, runtime), not the cache's body arena, which is mapped outside
	# the Go heap.
	for limit in ${LIMITS:-unset}; do
		[ "$limit" = unset ] && limit=
		GOMEMLIMIT=$limit start_caddy "$cfg"
		for _ in $(seq 50); do curl -fs "http://127.0.0.1:$CACHE/warm/$RANDOM" -o /dev/null; done
		base=$(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status")
		# The same load through the cache, not stored (no-store): what the
		# process holds under load with an empty cache.
		wrk -t1 -c16 -d10s "http://127.0.0.1:$CACHE/nostore/x" >/dev/null
		loaded=$(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status")
		wrk -t1 -c16 -d120s -s "$out/fill.lua" "http://127.0.0.1:$CACHE" >/dev/null
		rss=$(awk '/VmRSS/ {print $2}' "/proc/$caddy_pid/status")
		hwm=$(awk '/VmHWM/ {print $2}' "/proc/$caddy_pid/status")
		stats=$(curl -fs "http://localhost:$ADMIN/response_cache/stats" || true)
		goheap=$(curl -fs "http://localhost:$ADMIN/debug/vars" | python3 -c 'import json,sys; m=json.load(sys.stdin)["memstats"]; print("Go heap in use %d MiB, heap mapped %d MiB, released %d MiB, Go runtime total %d MiB, GC cycles %d" % (m["HeapInuse"]>>20, m["HeapSys"]>>20, m["HeapReleased"]>>20, m["Sys"]>>20, m["NumGC"]))' || true)
		stop_caddy
		printf 'max_size %d MiB, GOMEMLIMIT=%-8s filled %d x %d KiB (%d MiB): RSS idle %d MiB, loaded with nothing stored %d MiB, after %d MiB (%.3f x max_size over idle, %.3f x over loaded), peak RSS %d MiB\n' \
			"$max_mib" "${limit:-unset}" "$total" "$((item / 1024))" "$((total * item / 1048576))" "$((base / 1024))" "$((loaded / 1024))" "$((rss / 1024))" \
			"$(echo "($rss - $base) / 1024 / $max_mib" | bc -l)" "$(echo "($rss - $loaded) / 1024 / $max_mib" | bc -l)" "$((hwm / 1024))"
		echo "  store: $stats"
		echo "  $goheap"
	done
}

# cpu_ticks prints the Caddy process's user+system CPU time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$caddy_pid/stat"; }

# heap_allocs prints the bytes and the objects the Caddy process has
# allocated on the Go heap since it started (its expvar memstats).
heap_allocs() {
	curl -fs "http://localhost:$ADMIN/debug/vars" | python3 -c 'import json,sys; m=json.load(sys.stdin)["memstats"]; print(m["TotalAlloc"], m["Mallocs"])'
}

# profile measures the CPU each kind of request costs Caddy, against its
# plain reverse_proxy floor: unique SIZE-byte URLs (default 1 KiB) stored
# into a full 256 MiB store (stored: min_uses 1), missed under the default
# min_uses (auto) and under min_uses 2 (untried), each against the same
# stream through reverse_proxy (proxy); and one no-store URL through the
# cache (pass) against reverse_proxy (proxy-nostore). PMODES picks the runs
# (default: proxy stored auto untried proxy-nostore pass), made in turn for
# PROUNDS rounds (default 2) of PDUR seconds (default 20), each round starting
# with the next kind. It prints the process's CPU time per request of each
# run and what it allocated on the Go heap per request (bytes, objects), then each kind's median and the median of its per-round ratios to its
# floor, and keeps a CPU profile of each run in bench/out/
# (go tool pprof -top bench/out/caddy bench/out/profile-stored-1.pb).
profile() {
	local size=${SIZE:-1024} dur=${PDUR:-20} tck
	tck=$(getconf CLK_TCK)
	body=$(head -c "$size" /dev/zero | tr '\0' 'a')
	cfg="$out/profile.Caddyfile"
	{ preamble; default_sites; floor_site; every_site; } > "$cfg"
	start_caddy "$cfg"
	fill_until_full "$FILLER" caddy
	fill_until_full "$EVERY" every
	# Let auto see that the full default store refuses one-off URLs.
	"${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d4s -s "$out/unique.lua" "http://127.0.0.1:$CACHE" -- "auto$RANDOM" >/dev/null
	local round name url script t0 t1 n prof b0 b1 m0 m1
	local -A us bytes objs
	local -a modes
	read -ra modes <<<"${PMODES:-proxy stored auto untried proxy-nostore pass}"
	for round in $(seq "${PROUNDS:-2}"); do
		for name in "${modes[@]}"; do
			script=(-s "$out/unique.lua")
			case $name in
			proxy) url=http://127.0.0.1:$FLOOR ;;
			stored) url=http://127.0.0.1:$EVERY ;;
			auto) url=http://127.0.0.1:$CACHE ;;
			untried) url=http://127.0.0.1:$ONCE ;;
			proxy-nostore) url=http://127.0.0.1:$FLOOR/nostore/x script=() ;;
			pass) url=http://127.0.0.1:$CACHE/nostore/x script=() ;;
			*) echo "bench: unknown PMODES entry $name" >&2; exit 2 ;;
			esac
			curl -fs "http://localhost:$ADMIN/debug/pprof/profile?seconds=$((dur - 2))" -o "$out/profile-$name-$round.pb" &
			prof=$!
			read -r b0 m0 < <(heap_allocs)
			t0=$(cpu_ticks)
			if [ ${#script[@]} -gt 0 ]; then
				n=$("${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"${dur}s" "${script[@]}" "$url" -- "p$RANDOM$RANDOM" | awk '/requests in/ {print $1}')
			else
				n=$("${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"${dur}s" "$url" | awk '/requests in/ {print $1}')
			fi
			t1=$(cpu_ticks)
			read -r b1 m1 < <(heap_allocs)
			wait "$prof"
			us[$name,$round]=$(echo "($t1 - $t0) * 1000000 / $tck / $n" | bc -l)
			bytes[$name]=$(((b1 - b0) / n)) objs[$name]=$(((m1 - m0) / n))
			printf '%-13s round %d: %7d requests, %6.1f us of Caddy CPU per request, %5d B and %3d objects allocated per request\n' \
				"$name" "$round" "$n" "${us[$name,$round]}" "${bytes[$name]}" "${objs[$name]}"
		done
		modes=("${modes[@]:1}" "${modes[0]}") # the next round starts with the next kind
	done
	stop_caddy
	# The machine's speed wanders between rounds: compare each kind with its
	# floor round by round, and report the medians of those ratios.
	local floor ratio
	echo "medians over ${PROUNDS:-2} rounds (us of Caddy CPU per request; ratio to the floor, round by round):"
	for name in ${PMODES:-proxy stored auto untried proxy-nostore pass}; do
		case $name in
		stored | auto | untried) floor=proxy ;;
		pass) floor=proxy-nostore ;;
		*) floor= ;;
		esac
		ratio=
		if [ -n "$floor" ] && [ -n "${us[$floor,1]:-}" ]; then
			ratio=$(for round in $(seq "${PROUNDS:-2}"); do echo "${us[$name,$round]} / ${us[$floor,$round]}" | bc -l; done)
			ratio=$(printf ', %.3fx %s (rounds %s)' "$(median <<<"$ratio")" "$floor" "$(spread <<<"$ratio")")
		fi
		printf '  %-13s %6.1f us%s\n' "$name" "$(for round in $(seq "${PROUNDS:-2}"); do echo "${us[$name,$round]}"; done | median)" "$ratio"
	done
}

# caddy_mib prints a field of Caddy's /proc status (VmRSS, VmHWM) in MiB.
caddy_mib() { awk -v f="$1:" '$1 == f {print int($2 / 1024)}' "/proc/$caddy_pid/status"; }

# slow_cache_config writes $cfg: the preamble and a site on $CACHE whose
# cache (max_size $1 MiB, and the options in $2) fronts bench/slow-origin
# on $slow.
slow_cache_config() {
	{ preamble; cat <<CFG
http://127.0.0.1:$CACHE {
	response_cache {
		max_size ${1}MiB
		${2:-}
	}
	reverse_proxy 127.0.0.1:$slow
}
CFG
	} > "$cfg"
}

# start_slow_origin builds and starts bench/slow-origin with the given
# flags on a free port, which it puts in slow, and its pid in origin_pid
# (both the caller's locals).
start_slow_origin() {
	slow=$(freeport)
	go build -o "$out/slow-origin" ./bench/slow-origin
	"$out/slow-origin" -port "$slow" "$@" &
	origin_pid=$!
}

# latency measures what coalescing costs concurrent requests to one URL
# whose responses are never stored: LCONNS connections (default 16) on one
# URL of bench/slow-origin, which answers after DELAY (default 20ms)
# without Cache-Control, through plain reverse_proxy and through the cache
# with its defaults, alternating for LROUNDS rounds (default 3) of 5 s. It
# prints wrk's median and 99th percentile latency and rate of each run.
# LQUERY is added to the URL's query (vary=Origin: the origin varies on
# Origin, like CORS middleware) and LHEADER, if set, sent with every
# request (e.g. "Origin: https://app.example.com").
latency() {
	local slow round name port
	local hdr=()
	[ -n "${LHEADER:-}" ] && hdr=(-H "$LHEADER")
	local origin_pid
	start_slow_origin -delay "${DELAY:-20ms}"
	body=latency
	cfg="$out/latency.Caddyfile"
	{ preamble; cat <<CFG
http://127.0.0.1:$FLOOR {
	reverse_proxy 127.0.0.1:$slow
}
http://127.0.0.1:$CACHE {
	response_cache
	reverse_proxy 127.0.0.1:$slow
}
CFG
	} > "$cfg"
	start_caddy "$cfg"
	for round in $(seq "${LROUNDS:-3}"); do
		for name in reverse_proxy cache; do
			port=$FLOOR
			[ "$name" = cache ] && port=$CACHE
			"${PIN_WRK[@]}" wrk -t1 -c"${LCONNS:-16}" -d5s --latency ${hdr[@]+"${hdr[@]}"} "http://127.0.0.1:$port/api/items?${LQUERY:-}" |
				awk -v n="$name" -v r="$round" '/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Requests\/sec/ {rate=$2}
					END {printf "%-13s round %d: median %s, 99%% %s, %s requests/s\n", n, r, p50, p99, rate}'
		done
	done
	stop_caddy
	kill "$origin_pid" 2>/dev/null; wait "$origin_pid" 2>/dev/null || true
}

# media counts what the origin sends while browsers play two 8 MiB videos
# through response_cache (max_size 64MiB), PLAYS times each (default 5):
# Chrome and Firefox ask for bytes=0-, then seek with bytes=N-; Safari asks
# for bytes=0-1, then bytes=0-(length-1), then a closed range. The origin
# is Caddy's file_server, which answers ranges itself.
media() {
	local files="$out/media" files_port plays=${PLAYS:-5} len=8388608
	mkdir -p "$files"
	head -c "$len" /dev/urandom > "$files/chrome.mp4"
	cp "$files/chrome.mp4" "$files/safari.mp4"
	files_port=$(freeport)
	body=media
	cfg="$out/media.Caddyfile"
	{ preamble; cat <<CFG
http://127.0.0.1:$files_port {
	header Cache-Control "public, max-age=3600"
	root * $PWD/$files
	file_server
	log {
		output file $PWD/$out/media-origin.log
		format json
	}
}
http://127.0.0.1:$CACHE {
	response_cache {
		max_size 64MiB
	}
	reverse_proxy 127.0.0.1:$files_port
}
CFG
	} > "$cfg"
	rm -f "$out/media-origin.log"
	start_caddy "$cfg"
	local u="http://127.0.0.1:$CACHE"
	for _ in $(seq "$plays"); do
		curl -fsS -o /dev/null -H 'Range: bytes=0-' "$u/chrome.mp4"
		curl -fsS -o /dev/null -H 'Range: bytes=4000000-' "$u/chrome.mp4"
		curl -fsS -o /dev/null -H 'Range: bytes=0-1' "$u/safari.mp4"
		curl -fsS -o /dev/null -H "Range: bytes=0-$((len - 1))" "$u/safari.mp4"
		curl -fsS -o /dev/null -H 'Range: bytes=6000000-6999999' "$u/safari.mp4"
	done
	stop_caddy
	python3 - "$out/media-origin.log" "$plays" <<'PY'
import json, sys
seen = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("msg") == "handled request":
        n, b = seen.get(d["request"]["uri"], (0, 0))
        seen[d["request"]["uri"]] = (n + 1, b + d.get("size", 0))
plays = int(sys.argv[2])
for uri, per in (("/chrome.mp4", 2), ("/safari.mp4", 3)):
    n, b = seen.get(uri, (0, 0))
    print(f"{uri}: {plays * per} client requests, origin {n} requests, {b / 1048576:.1f} MiB")
PY
}

# burst measures the memory of responses being recorded: BURST (default
# 60) concurrent misses of distinct URLs whose BURST_MIB (default 8) MiB
# bodies the origin sends over 5 s, through a MAX_MIB (default 64) MiB
# cache. It prints Caddy's RSS when idle and its peak (VmHWM), what the
# clients got, and the store's stats (recording_refusals).
burst() {
	local n=${BURST:-60} mib=${BURST_MIB:-8} max_mib=${MAX_MIB:-64} slow i pids=()
	local origin_pid
	start_slow_origin -delay 0s -size $((mib << 20)) -pace 5s
	body=burst
	cfg="$out/burst.Caddyfile"
	slow_cache_config "$max_mib"
	start_caddy "$cfg"
	echo "idle: RSS $(caddy_mib VmRSS) MiB"
	for i in $(seq "$n"); do
		curl -s -o /dev/null -w '%{http_code} %{size_download}\n' "http://127.0.0.1:$CACHE/burst/$RANDOM-$i?cc=public,max-age=600" > "$out/burst-$i.out" &
		pids+=($!)
	done
	wait "${pids[@]}"
	echo "$n concurrent misses of $mib MiB into a $max_mib MiB cache: peak RSS $(caddy_mib VmHWM) MiB"
	echo "clients got (count, status, bytes):"
	cat "$out"/burst-*.out | sort | uniq -c
	rm -f "$out"/burst-*.out
	echo "store: $(curl -fs "http://localhost:$ADMIN/response_cache/stats")"
	stop_caddy
	kill "$origin_pid"
}

# mixed fills a MAX_MIB (default 64) MiB cache ten times over with unique
# responses of log-uniform sizes from 1 KiB to max_item_size (an eighth of
# max_size), 12 at a time and every one stored (min_uses 1), from
# bench/slow-origin: once with their length declared, once sent without
# Content-Length (gathered in pieces while recorded). SEED (default 1) picks
# the sizes. It prints Caddy's RSS and anonymous memory (its own, not the
# binary's pages, which vary from one build to another) idle, at the peak
# (VmHWM) and 10 s after the fill, each over idle as a multiple of
# max_size, and the store's stats.
mixed() {
	local max_mib=${MAX_MIB:-64} slow mode
	local origin_pid
	start_slow_origin -delay 0s
	body=mixed
	cfg="$out/mixed.Caddyfile"
	slow_cache_config "$max_mib" "min_uses 1"
	# The sizes: log-uniform from 1 KiB to max_item_size, 10 x max_size in all.
	awk -v seed="${SEED:-1}" -v max=$((max_mib << 17)) -v total=$((max_mib * 10 << 20)) 'BEGIN {
		srand(seed); lo = log(1024); hi = log(max)
		for (i = 1; sum < total; i++) { n = int(exp(lo + rand() * (hi - lo))); sum += n; print i, n }
	}' > "$out/mixed-sizes.txt"
	anon() { awk '/^Anonymous:/ {print int($2 / 1024)}' "/proc/$caddy_pid/smaps_rollup"; }
	for mode in declared chunked; do
		start_caddy "$cfg"
		for i in $(seq 50); do curl -fs "http://127.0.0.1:$CACHE/warm/$i?cc=no-store&n=16384" -o /dev/null; done
		sleep 2
		local rss0 anon0 rss anon hwm chunked=0
		[ "$mode" = chunked ] && chunked=1
		rss0=$(caddy_mib VmRSS); anon0=$(anon)
		awk -v c="$chunked" '{print $1, $2, c}' "$out/mixed-sizes.txt" |
			"${PIN_WRK[@]}" xargs -P 12 -n 3 sh -c 'curl -fs -o /dev/null "http://127.0.0.1:$0/mixed/$1?cc=public,max-age=3600&n=$2&chunked=$3"' "$CACHE" || true
		sleep 10
		rss=$(caddy_mib VmRSS); anon=$(anon) hwm=$(caddy_mib VmHWM)
		printf '%-8s %d responses, %d MiB: RSS idle %d MiB, peak %d MiB (%.2f x max_size over idle), 10 s after %d MiB (%.2f x); anonymous memory idle %d MiB, 10 s after %d MiB (%.2f x)\n' \
			"$mode" "$(wc -l < "$out/mixed-sizes.txt")" "$((max_mib * 10))" "$rss0" "$hwm" "$(echo "($hwm - $rss0) / $max_mib" | bc -l)" \
			"$rss" "$(echo "($rss - $rss0) / $max_mib" | bc -l)" "$anon0" "$anon" "$(echo "($anon - $anon0) / $max_mib" | bc -l)"
		echo "  store: $(curl -fs "http://localhost:$ADMIN/response_cache/stats")"
		stop_caddy
	done
	kill "$origin_pid"
}

case "${1:-throughput}" in
	throughput) throughput ;;
	memory) memory ;;
	profile) profile ;;
	latency) latency ;;
	media) media ;;
	burst) burst ;;
	mixed) mixed ;;
	*) echo "usage: bench/run.sh [throughput|memory|profile|latency|media|burst|mixed]" >&2; exit 2 ;;
esac
