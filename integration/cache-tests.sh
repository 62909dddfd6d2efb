#!/usr/bin/env bash
# Runs the HTTP Working Group's cache tests (https://cache-tests.fyi, the
# npm package http-cache-tests) against a Caddy built with this module:
# their origin on 127.0.0.1, and response_cache with reverse_proxy in front
# of it. Prints the counts by kind of test, lists every test that does not
# pass, and fails when a test that passes in the committed results
# (testdata/cache-tests-results.json) no longer does.
#
#   integration/cache-tests.sh            # the whole suite (about 15 s, once npm has installed it)
#   integration/cache-tests.sh TEST-ID    # one test, with its requests and responses
#   UPDATE=1 integration/cache-tests.sh   # also rewrite the committed results
#
# Needs node (>= 14) and npm, with the npm registry reachable the first
# time (the suite is kept in integration/out/). CADDY names the binary
# (default: built with xcaddy into integration/out/caddy); CACHE_OPTIONS
# adds lines to the response_cache block, e.g. CACHE_OPTIONS="stale_if_error 60s".
# Not part of .ci/run, which has no npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=integration/out
suite=$out/cache-tests
version=${CACHE_TESTS_VERSION:-0.4.5}
expected=testdata/cache-tests-results.json
CADDY=${CADDY:-$out/caddy}
mkdir -p "$out"

command -v npm >/dev/null || { echo "cache-tests: npm not found (apt-get install npm)" >&2; exit 1; }
if [ ! -x "$CADDY" ]; then
	go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 --output "$CADDY" \
		--with github.com/f06cdff9/caddy-affinity-cache@v0.0.0-00010101000000-000000000000=.
fi
if [ ! -f "$suite/$version/package/cli.mjs" ]; then
	rm -rf "$suite/$version"
	mkdir -p "$suite/$version"
	(cd "$suite/$version" && npm pack --silent "http-cache-tests@$version" >/dev/null && tar xzf "http-cache-tests-$version.tgz")
	(cd "$suite/$version/package" && npm install --silent --omit=dev --no-audit --no-fund --ignore-scripts)
fi
pkg=$root/$suite/$version/package

# The suite's origin listens on every interface; this makes it listen on
# 127.0.0.1 only.
cat > "$out/loopback.cjs" <<'JS'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' || /^\d+$/.test(String(port))) {
    return listen.call(this, Number(port), '127.0.0.1', ...rest.filter(a => typeof a === 'function'))
  }
  return listen.call(this, port, ...rest)
}
JS

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
ORIGIN=$(freeport) CACHE=$(freeport) ADMIN=$(freeport)
pids=()
cleanup() { for p in "${pids[@]}"; do { kill "$p" && wait "$p"; } 2>/dev/null || true; done; }
trap cleanup EXIT

(cd "$pkg" && exec env npm_config_protocol=http npm_config_port="$ORIGIN" npm_config_pidfile="$root/$out/cache-tests-origin.pid" \
	node -r "$root/$out/loopback.cjs" server/server.mjs) >"$out/cache-tests-origin.log" 2>&1 &
pids+=($!)

cat > "$out/cache-tests.Caddyfile" <<CFG
{
	admin 127.0.0.1:$ADMIN
	default_bind 127.0.0.1
	auto_https off
}
http://127.0.0.1:$CACHE {
	response_cache {
		max_size 64MiB
		cache_name caddy
		${CACHE_OPTIONS:-}
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
CFG
"$CADDY" run --config "$out/cache-tests.Caddyfile" --adapter caddyfile >"$out/cache-tests-caddy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	curl -s "http://127.0.0.1:$ORIGIN/" -o /dev/null && curl -s "http://127.0.0.1:$CACHE/" -o /dev/null && break
	sleep 0.1
done

if [ -n "${1:-}" ]; then
	(cd "$pkg" && npm_config_base="http://127.0.0.1:$CACHE" npm_config_id="$1" npm_package_config_id= node --no-warnings cli.mjs)
	exit
fi
(cd "$pkg" && npm_config_base="http://127.0.0.1:$CACHE" npm_config_id= npm_package_config_id= node --no-warnings cli.mjs) >"$out/cache-tests-results.json"
curl -fs "http://127.0.0.1:$ADMIN/response_cache/stats" >"$out/cache-tests-stats.json" || true
[ -n "${UPDATE:-}" ] && cp "$out/cache-tests-results.json" "$expected"

# The verdicts as the suite's own pages give them: a test passes when its
# result is true and every test it depends on passed; required tests fail,
# optimal ones fail optionally, checks answer yes or no.
cd "$pkg" && node --no-warnings --input-type=module - "$root/$out/cache-tests-results.json" "$root/$expected" <<'JS'
import fs from 'fs'
import suites from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'
suites.push(surrogate)
const tests = {}
for (const s of suites) for (const t of s.tests) if (!t.browser_only) tests[t.id] = t
function verdict (res, id) {
  const t = tests[id]
  const r = res[id]
  if (r === undefined) return 'untested'
  for (const d of t.depends_on || []) if (!['pass', 'yes'].includes(verdict(res, d))) return 'dependency failed'
  if (Array.isArray(r) && r[0] === 'Setup') return r[1] === 'retry' ? 'retry' : 'setup failed'
  const ok = r === true
  switch (t.kind || 'required') {
    case 'optimal': return ok ? 'pass' : 'optional fail'
    case 'check': return ok ? 'yes' : 'no'
    default: return ok ? 'pass' : 'fail'
  }
}
const [got, want] = process.argv.slice(2).map(f => fs.existsSync(f) ? JSON.parse(fs.readFileSync(f)) : {})
const counts = {}
for (const id in tests) {
  const kind = tests[id].kind || 'required'
  const v = verdict(got, id)
  counts[kind] = counts[kind] || {}
  counts[kind][v] = (counts[kind][v] || 0) + 1
  if (v !== 'pass' && v !== 'yes') console.log(`${kind.padEnd(8)} ${v.padEnd(17)} ${id}: ${tests[id].name}`)
}
for (const kind in counts) console.log(`${kind}: ${Object.entries(counts[kind]).map(([v, n]) => `${n} ${v}`).join(', ')}`)
const lost = Object.keys(tests).filter(id => ['pass', 'yes'].includes(verdict(want, id)) && !['pass', 'yes'].includes(verdict(got, id)))
if (lost.length) {
  console.log(`\nno longer passing (${lost.length}), against testdata/cache-tests-results.json: ${lost.join(' ')}`)
  process.exit(1)
}
JS
