package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/f06cdff9/caddy-affinity-cache"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/adapt from the current output")

const separator = "\n----------\n"

// adapt runs the Caddyfile adapter as `caddy adapt` does and returns
// indented JSON.
func adapt(t *testing.T, caddyfile string) (string, error) {
	t.Helper()
	if !strings.HasSuffix(caddyfile, "\n") {
		caddyfile += "\n"
	}
	result, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return "", err
	}
	for _, w := range warnings {
		t.Errorf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, result, "", "\t"); err != nil {
		t.Fatal(err)
	}
	return out.String(), nil
}

// TestAdaptGolden adapts every testdata/adapt/*.txt (a Caddyfile, a
// ---------- line, the JSON) and compares with the JSON. Run with -update to
// rewrite the JSON after an intended change, and review the diff.
func TestAdaptGolden(t *testing.T) {
	files, err := filepath.Glob("../testdata/adapt/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files found: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(data), separator)
			if !ok {
				t.Fatalf("%s has no %q line", file, strings.TrimSpace(separator))
			}
			got, err := adapt(t, caddyfile)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			if *update {
				if err := os.WriteFile(file, []byte(caddyfile+separator+got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.TrimSpace(got) != strings.TrimSpace(want) {
				t.Errorf("adapted JSON differs from %s (run go test ./caddyfile -update and review the diff):\n%s", file, got)
			}
		})
	}
}

// TestDemoAdapts keeps the README's demo adaptable.
func TestDemoAdapts(t *testing.T) {
	data, err := os.ReadFile("../testdata/demo.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	got, err := adapt(t, string(data))
	if err != nil {
		t.Fatalf("adapting the demo: %v", err)
	}
	for _, want := range []string{`"handler": "response_cache"`, `"policy": "affinity"`} {
		if !strings.Contains(got, want) {
			t.Errorf("demo JSON lacks %s", want)
		}
	}
}

// TestDirectiveOrder checks response_cache sits just before the proxy
// without an order line: after access control, guards (abort, error,
// respond), encode, intercept and templates, so that all of them apply to
// hits as to misses.
func TestDirectiveOrder(t *testing.T) {
	got, err := adapt(t, `:8080 {
	reverse_proxy 127.0.0.1:9000
	response_cache
	templates
	encode gzip
	@blocked remote_ip 192.0.2.0/24
	respond @blocked 403
	error /gone/* 410
	abort /bad/*
	intercept {
		@err status 404
		handle_response @err {
			respond "not here" 404
		}
	}
	basic_auth {
		bob $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{`"handler": "authentication"`, `"handler": "encode"`, `"handler": "intercept"`, `"handler": "templates"`,
		`"abort": true`, `"handler": "error"`, `"status_code": 403`, `"handler": "response_cache"`, `"handler": "reverse_proxy"`}
	last := -1
	for _, h := range order {
		i := strings.Index(got, h)
		if i < 0 {
			t.Fatalf("adapted JSON lacks %s:\n%s", h, got)
		}
		if i < last {
			t.Errorf("%s comes too early; want the order %v:\n%s", h, order, got)
		}
		last = i
	}
}

// TestCaddyfileErrors checks bad input is rejected with the file and line
// of the offending token.
func TestCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name      string
		caddyfile string
		want      string // substring of the error
	}{
		{"cache unknown option", ":80 {\n\tresponse_cache {\n\t\tmax_sizes 1MiB\n\t}\n}", "Caddyfile:3"},
		{"cache bad size", ":80 {\n\tresponse_cache {\n\t\tmax_size lots\n\t}\n}", "Caddyfile:3"},
		{"cache negative size", ":80 {\n\tresponse_cache {\n\t\tmax_item_size -5\n\t}\n}", "must be positive"},
		{"cache repeated option", ":80 {\n\tresponse_cache {\n\t\tmax_size 1MiB\n\t\tmax_size 2MiB\n\t}\n}", "Caddyfile:4"},
		{"cache bad duration", ":80 {\n\tresponse_cache {\n\t\tdefault_ttl soon\n\t}\n}", "Caddyfile:3"},
		{"cache duration too long", ":80 {\n\tresponse_cache {\n\t\tstale_while_revalidate 9999999h\n\t}\n}", "is too long"},
		{"cache duration with a bad number", ":80 {\n\tresponse_cache {\n\t\tstale_if_error 1e99h\n\t}\n}", "invalid duration"},
		{"cache heuristic_max negative", ":80 {\n\tresponse_cache {\n\t\theuristic_max -1h\n\t}\n}", "Caddyfile:3"},
		{"cache heuristic_max zero", ":80 {\n\tresponse_cache {\n\t\theuristic_max 0\n\t}\n}", "heuristic_max 0 would not turn the heuristic off (0 is the default, 24h); write 'heuristic_max off' for no heuristic freshness, or a positive duration to cap it, at Caddyfile:3"},
		{"cache heuristic_max off twice", ":80 {\n\tresponse_cache {\n\t\theuristic_max off off\n\t}\n}", "heuristic_max takes one value, got another: 'off', at Caddyfile:3"},
		{"cache heuristic_max missing", ":80 {\n\tresponse_cache {\n\t\theuristic_max\n\t}\n}", "Caddyfile:3"},
		{"cache coalesce", ":80 {\n\tresponse_cache {\n\t\tcoalesce maybe\n\t}\n}", "must be on or off"},
		{"cache min_uses zero", ":80 {\n\tresponse_cache {\n\t\tmin_uses 0\n\t}\n}", "min_uses must be auto or a whole number from 1 to 15, got '0', at Caddyfile:3"},
		{"cache min_uses too many", ":80 {\n\tresponse_cache {\n\t\tmin_uses 16\n\t}\n}", "Caddyfile:3"},
		{"cache min_uses word", ":80 {\n\tresponse_cache {\n\t\tmin_uses twice\n\t}\n}", "Caddyfile:3"},
		{"cache min_uses missing", ":80 {\n\tresponse_cache {\n\t\tmin_uses\n\t}\n}", "min_uses needs a value"},
		{"cache max_size of an unset variable", ":80 {\n\tresponse_cache {\n\t\tmax_size {$CADDYFILE_TEST_UNSET}\n\t}\n}", "max_size needs a value (an unset {$VAR} leaves none), at Caddyfile:3"},
		{"cache max_size in zettabytes", ":80 {\n\tresponse_cache {\n\t\tmax_size 1ZiB\n\t}\n}", "max_size must be at most 512GiB, got '1ZiB'"},
		{"cache max_item_size in yottabytes", ":80 {\n\tresponse_cache {\n\t\tmax_item_size 2YB\n\t}\n}", "max_item_size must be at most 512GiB (and at most max_size), got '2YB'"},
		{"cache max_size of a fraction of a byte in zettabytes", ":80 {\n\tresponse_cache {\n\t\tmax_size 0.0000000000000000000001ZB\n\t}\n}", "max_size: invalid size '0.0000000000000000000001ZB' (use e.g. 64MiB or 1048576)"},
		{"cache duration JSON cannot give back", ":80 {\n\tresponse_cache {\n\t\tdefault_ttl 9223372036854775807ns\n\t}\n}", "default_ttl: duration '9223372036854775807ns' is too long: Go's durations end at about 292 years (2562047h), at Caddyfile:3"},
		{"cache duration just past the last hour", ":80 {\n\tresponse_cache {\n\t\tstale_if_error 2562047h47m16.854775807s\n\t}\n}", "is too long"},
		{"cache max_size too large", ":80 {\n\tresponse_cache {\n\t\tmax_size 600GiB\n\t}\n}", "max_size must be at most 512GiB, got '600GiB'; run more cache nodes behind lb_policy affinity to hold more, at Caddyfile:3"},
		{"cache max_size tiny", ":80 {\n\tresponse_cache {\n\t\tmax_size 1KiB\n\t}\n}", "max_size must be at least 64KiB, got 1024, at Caddyfile:3"},
		{"cache max_size fraction", ":80 {\n\tresponse_cache {\n\t\tmax_size 1.5\n\t}\n}", "max_size: '1.5' is not a whole number of bytes, at Caddyfile:3"},
		{"cache max_size fraction of a byte", ":80 {\n\tresponse_cache {\n\t\tmax_size 0.0001GiB\n\t}\n}", "max_size: '0.0001GiB' is not a whole number of bytes, at Caddyfile:3"},
		{"cache block after max_size", ":80 {\n\tresponse_cache {\n\t\tmax_size 1MiB {\n\t\t}\n\t}\n}", "'response_cache': max_size takes no block, at Caddyfile:3"},
		{"cache key of an unset variable", ":80 {\n\tresponse_cache {\n\t\tkey {header.{$CADDYFILE_TEST_UNSET}}\n\t}\n}", "names {http.request.header.}, whose last part is empty (an unset {$VAR}?), so it is empty for every request, at Caddyfile:3"},
		{"affinity key of an unset variable", ":80 {\n\treverse_proxy a:1 b:1 {\n\t\tlb_policy affinity {http.request.cookie.{$CADDYFILE_TEST_UNSET}}\n\t}\n}", "whose last part is empty (an unset {$VAR}?), so it is empty for every request, at Caddyfile:3"},
		{"affinity block after bound", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {\n\t\t\tbound 1.25 {\n\t\t\t}\n\t\t}\n\t}\n}", "bound takes no block, at Caddyfile:4"},
		{"affinity cookie conflict in a snippet", "(sticky) {\n\tcookie {\n\t\tsecret s\n\t\tsecure off\n\t\tsame_site none\n\t}\n}\n:80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {\n\t\t\timport sticky\n\t\t}\n\t}\n}", "same_site none requires secure; browsers reject it otherwise, at Caddyfile:2 import chain ['Caddyfile:11 (import sticky)']"},
		{"cache max_item_size over default", ":80 {\n\tresponse_cache {\n\t\tmax_item_size 300MiB\n\t}\n}", "max_item_size 300MiB must not be larger than max_size (256MiB, the default), at Caddyfile:3"},
		{"cache name shared with other sizes", ":80 {\n\tresponse_cache {\n\t\tcache_name shop\n\t\tmax_size 64MiB\n\t}\n}\n:81 {\n\tresponse_cache {\n\t\tcache_name shop\n\t}\n}", `cache_name "shop" is used at Caddyfile:2 with max_size 64MiB and max_item_size 8MiB, here with 256MiB and 32MiB: response_cache blocks with one cache_name share one store, so give them the same sizes, or different names, at Caddyfile:8`},
		{"cache default name shared with other sizes", ":80 {\n\tresponse_cache\n}\n:81 {\n\tresponse_cache {\n\t\tmax_item_size 1MiB\n\t}\n}", `cache_name "caddy" is used at Caddyfile:2 with max_size 256MiB and max_item_size 32MiB, here with 256MiB and 1MiB`},
		{"cache name shared by one snippet with other sizes", "(c) {\n\tresponse_cache {\n\t\tcache_name shop\n\t\tmax_size {args[0]}\n\t}\n}\n:80 {\n\timport c 8MiB\n}\n:81 {\n\timport c 16MiB\n}", `cache_name "shop" is used at Caddyfile:2 import chain ['Caddyfile:8 (import c)'] with max_size 8MiB and max_item_size 1MiB, here with 16MiB and 2MiB: response_cache blocks with one cache_name share one store, so give them the same sizes, or different names, at Caddyfile:2 import chain ['Caddyfile:11 (import c)']`},
		{"cache key typo", ":80 {\n\tresponse_cache {\n\t\tkey {http.request.uri.pth}\n\t}\n}", "names {http.request.uri.pth}, which Caddy does not know (a typo would give every request the same key), at Caddyfile:3"},
		{"cache key constant", ":80 {\n\tresponse_cache {\n\t\tkey /all\n\t}\n}", `key: "/all" has no placeholder, so it is the same for every request, at Caddyfile:3`},
		{"cache key on the request body", ":80 {\n\tresponse_cache {\n\t\tkey {uri}{http.request.body}\n\t}\n}", `key: "{http.request.uri}{http.request.body}" names {http.request.body}, which is empty for every request the cache stores or answers (requests with content go to the origin), so it tells none of them apart; key on the URI, a header or a cookie, at Caddyfile:3`},
		{"cache key of a snippet's argument outside an import", ":80 {\n\tresponse_cache {\n\t\tkey \"{args[0]} {uri}\"\n\t}\n}", `key: "{args[0]} {http.request.uri}" names {args[0]}, a snippet's argument, which the Caddyfile replaces only inside a snippet it imports`},
		{"affinity key of a snippet's argument outside an import", ":80 {\n\treverse_proxy a:1 b:1 {\n\t\tlb_policy affinity {args[0]}\n\t}\n}", `names {args[0]}, a snippet's argument, which the Caddyfile replaces only inside a snippet it imports (` + "`import name arg ...`" + `); anywhere else it stays as written, a placeholder nothing sets, the same for every request, at Caddyfile:3`},
		{"cache targeted_field of a hop-by-hop field", ":80 {\n\tresponse_cache {\n\t\ttargeted_field Proxy-Connection\n\t}\n}", "targeted_field Proxy-Connection names a field with a meaning of its own in HTTP, not a targeted cache-control field (RFC 9213) such as CDN-Cache-Control; name the field your origin sets for this cache, or off, at Caddyfile:3"},
		{"cache targeted_field of a request field", ":80 {\n\tresponse_cache {\n\t\ttargeted_field if-none-match\n\t}\n}", "targeted_field if-none-match names a field with a meaning of its own in HTTP"},
		{"cache key global", ":80 {\n\tresponse_cache {\n\t\tkey {system.hostname}\n\t}\n}", `key: "{system.hostname}" names only placeholders that do not depend on the request ({system.hostname}), so it is the same for every request; name a part of the request, such as {uri} or {header.X-User}, at Caddyfile:3`},
		{"affinity key typo", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {http.request.uri.pth}\n\t}\n}", "names {http.request.uri.pth}, which Caddy does not know (a typo would give every request the same key), at Caddyfile:3"},
		{"affinity key global", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {\n\t\t\tkey {env.HOME}\n\t\t}\n\t}\n}", "names only placeholders that do not depend on the request ({env.HOME}), so it is the same for every request; name a part of the request, such as {uri} or {header.X-User}, at Caddyfile:4"},
		{"cache status_key word", ":80 {\n\tresponse_cache {\n\t\tstatus_key maybe\n\t}\n}", "status_key must be on or off, got 'maybe', at Caddyfile:3"},
		// An unset {$VAR} leaves nothing: bare would turn keys on.
		{"cache status_key bare", ":80 {\n\tresponse_cache {\n\t\tstatus_key {$CADDY_AFFINITY_CACHE_TEST_UNSET}\n\t}\n}", "status_key needs on or off (an unset {$VAR} leaves none; keys are off by default), at Caddyfile:3"},
		{"cache status_key two", ":80 {\n\tresponse_cache {\n\t\tstatus_key on off\n\t}\n}", "status_key takes one value (on or off), got another: 'off', at Caddyfile:3"},
		{"affinity key twice", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {uri} {\n\t\t\tkey {uri}\n\t\t}\n\t}\n}", "key \"{http.request.uri}\" is listed twice; a key is tried once, at Caddyfile:4"},
		{"cache max_item_size zero", ":80 {\n\tresponse_cache {\n\t\tmax_item_size 0KiB\n\t}\n}", "max_item_size must be at least 1 byte, got '0KiB', at Caddyfile:3"},
		{"cache decimal comma", ":80 {\n\tresponse_cache {\n\t\tmax_size 1,5GiB\n\t}\n}", "max_size: '1,5GiB' has a comma that does not separate thousands; write a fraction with a point (1.5GiB), at Caddyfile:3"},
		{"cache stray comma", ":80 {\n\tresponse_cache {\n\t\tmax_item_size ,1MiB\n\t}\n}", "max_item_size: ',1MiB' has a comma"},
		{"cache decimal comma after 0", ":80 {\n\tresponse_cache {\n\t\tmax_size 0,500MiB\n\t}\n}", "has a comma"},
		{"cache comma in fraction", ":80 {\n\tresponse_cache {\n\t\tmax_size 1.000,5MiB\n\t}\n}", "has a comma"},
		{"cache size overflow", ":80 {\n\tresponse_cache {\n\t\tmax_size 18446744073709551615\n\t}\n}", "max_size must be at most 512GiB, got '18446744073709551615'"},
		{"cache key Host header", ":80 {\n\tresponse_cache {\n\t\tkey {header.Host}\n\t}\n}", "use {http.request.host} or {http.request.hostport}, at Caddyfile:3"},
		{"affinity key response status", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {http.response.status}\n\t}\n}", "a placeholder of the response, which does not exist yet when the key is read, at Caddyfile:3"},
		{"cache size overflowing 64 bits", ":80 {\n\tresponse_cache {\n\t\tmax_size 99999999999999999999\n\t}\n}", "max_size must be at most 512GiB, got '99999999999999999999'; run more cache nodes"},
		{"cache item size too large", ":80 {\n\tresponse_cache {\n\t\tmax_item_size 1EiB\n\t}\n}", "max_item_size must be at most 512GiB (and at most max_size), got '1EiB', at Caddyfile:3"},
		{"cache item larger than cache in a snippet", "(c) {\n\tmax_item_size 2MiB\n}\n:80 {\n\tresponse_cache {\n\t\tmax_size 1MiB\n\t\timport c\n\t}\n}", "max_item_size 2MiB must not be larger than max_size 1MiB, at Caddyfile:2 import chain ['Caddyfile:7 (import c)']"},
		{"cache min_uses with a sign", ":80 {\n\tresponse_cache {\n\t\tmin_uses +3\n\t}\n}", "min_uses must be auto or a whole number from 1 to 15, got '+3', at Caddyfile:3"},
		{"cache key unique to each request", ":80 {\n\tresponse_cache {\n\t\tkey \"{uuid} {uri}\"\n\t}\n}", "names {http.request.uuid}, which is new for every request, even the same client's repeat of the same request (a cache would store entries nobody finds again, a sticky client would move between upstreams); key on what repeats, such as {uri}, {client_ip} or a cookie, at Caddyfile:3"},
		{"affinity key of the request's duration", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {http.request.duration_ms}\n\t}\n}", "names {http.request.duration_ms}, which is new for every request, even the same client's repeat of the same request (a cache would store entries nobody finds again, a sticky client would move between upstreams); key on what repeats, such as {uri}, {client_ip} or a cookie, at Caddyfile:3"},
		{"affinity key of the client's port", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {remote}\n\t}\n}", "names {http.request.remote}, which holds the client's port, new for each of its connections (a cache would store entries nobody finds again, a sticky client would move between upstreams); for the client's address use {client_ip} (after trusted_proxies) or {remote_host}, at Caddyfile:3"},
		{"cache targeted_field of another meaning", ":80 {\n\tresponse_cache {\n\t\ttargeted_field set-cookie\n\t}\n}", "targeted_field set-cookie names a field with a meaning of its own in HTTP, not a targeted cache-control field (RFC 9213) such as CDN-Cache-Control; name the field your origin sets for this cache, or off, at Caddyfile:3"},
		{"affinity bound_floor without bound in a snippet", "(lb) {\n\tlb_policy affinity {args[0]} {\n\t\tbound_floor 8\n\t}\n}\n:80 {\n\treverse_proxy a:1 {\n\t\timport lb {uri}\n\t}\n}", "bound_floor 8 needs bound: it is the least cap bound gives an upstream, at Caddyfile:3 import chain ['Caddyfile:8 (import lb)']"},
		{"cache key with the clock", ":80 {\n\tresponse_cache {\n\t\tkey \"{time.now.unix_ms} {uri}\"\n\t}\n}", "names {time.now.unix_ms}, which changes with the clock, not with the request"},
		{"cache max_size zero", ":80 {\n\tresponse_cache {\n\t\tmax_size 0\n\t}\n}", "max_size must be at least 64KiB, got 0, at Caddyfile:3"},
		{"cache stale_while_revalidate zero", ":80 {\n\tresponse_cache {\n\t\tstale_while_revalidate 0s\n\t}\n}", "stale_while_revalidate 0s would not turn it off (0 is the default: the response's own window, uncapped); write 'stale_while_revalidate off' to never serve stale that way, or a positive duration to cap it, at Caddyfile:3"},
		{"cache stale_if_error zero", ":80 {\n\tresponse_cache {\n\t\tstale_if_error 0\n\t}\n}", "stale_if_error 0 would not turn it off"},
		{"cache stale_if_error negative", ":80 {\n\tresponse_cache {\n\t\tstale_if_error -1m\n\t}\n}", "stale_if_error must not be negative, got '-1m', at Caddyfile:3"},
		{"cache stale_if_error off twice", ":80 {\n\tresponse_cache {\n\t\tstale_if_error off off\n\t}\n}", "stale_if_error takes one value, got another: 'off', at Caddyfile:3"},
		{"affinity key unclosed", ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {\n\t\t\tkey {http.request.header.X-User\n\t\t}\n\t}\n}", "has an unclosed {"},
		{"cache item larger than cache", ":80 {\n\tresponse_cache {\n\t\tmax_size 1MiB\n\t\tmax_item_size 2MiB\n\t}\n}", "max_item_size 2MiB must not be larger than max_size 1MiB, at Caddyfile:4"},
		{"cache bad name", ":80 {\n\tresponse_cache {\n\t\tcache_name \"my cache\"\n\t}\n}", "Caddyfile:3"},
		{"cache argument", ":80 {\n\tresponse_cache 5\n}", "Caddyfile:2"},
		{"affinity unknown option", ":80 {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tlb_policy affinity {\n\t\t\tbogus 1\n\t\t}\n\t}\n}", "lb_policy affinity: unrecognized option 'bogus', at Caddyfile:4"},
		{"affinity bad bound", ":80 {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tlb_policy affinity {\n\t\t\tbound 0.5\n\t\t}\n\t}\n}", "Caddyfile:4"},
		{"affinity bad algorithm", ":80 {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tlb_policy affinity {\n\t\t\talgorithm fastest\n\t\t}\n\t}\n}", "Caddyfile:4"},
		{"affinity bad weight", ":80 {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tlb_policy affinity {\n\t\t\tweight 127.0.0.1:9000 -2\n\t\t}\n\t}\n}", "Caddyfile:4"},
		{"affinity cookie without secret", ":80 {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tlb_policy affinity {\n\t\t\tcookie {\n\t\t\t\tmax_age 1h\n\t\t\t}\n\t\t}\n\t}\n}", "secret"},
		{"affinity bad same_site", ":80 {\n\treverse_proxy 127.0.0.1:9000 {\n\t\tlb_policy affinity {\n\t\t\tcookie {\n\t\t\t\tsecret s\n\t\t\t\tsame_site sometimes\n\t\t\t}\n\t\t}\n\t}\n}", "Caddyfile:6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, tt.caddyfile)
			if err == nil {
				t.Fatalf("adapting succeeded; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestFractionalSizes: a fraction with a unit is accepted when it is a
// whole number of bytes, and is that number exactly (humanize's floating
// point made 4.1MB a byte short).
func TestFractionalSizes(t *testing.T) {
	for in, want := range map[string]string{"1.5GiB": "1610612736", "0.5MiB": "524288", "1.1MB": "1100000", "4.1MB": "4100000", "2,500.5MiB": "2621964288", "1,048,576": "1048576", "64.5KiB": "66048", "1048576.0": "1048576", "1048576.000b": "1048576", "0.00000000001ZB": "10000000000"} {
		out, err := adapt(t, ":80 {\n\tresponse_cache {\n\t\tmax_size "+in+"\n\t}\n}")
		if n, _ := strconv.ParseInt(want, 10, 64); strconv.IntSize == 32 && n > 1<<30 {
			// Parsed exactly, then refused: over a 32-bit build's limit.
			if err == nil || !strings.Contains(err.Error(), "got "+want+" (") || !strings.Contains(err.Error(), "in a 32-bit build") {
				t.Errorf("max_size %s in a 32-bit build: %v", in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("max_size %s: %v", in, err)
			continue
		}
		if !strings.Contains(out, `"max_size": `+want) {
			t.Errorf("max_size %s: want %s bytes in %s", in, want, out)
		}
	}
}

// TestSharedCacheNameWithTheSameSizes: blocks sharing a cache_name adapt
// when their sizes agree, written out or left to the defaults, and in one
// snippet imported by several sites; named routes are left to
// provisioning (one not invoked is not in the config).
func TestSharedCacheNameWithTheSameSizes(t *testing.T) {
	for name, caddyfile := range map[string]string{
		"defaults and written out":      ":80 {\n\tresponse_cache\n}\n:81 {\n\tresponse_cache {\n\t\tmax_size 256MiB\n\t\tmax_item_size 32MiB\n\t}\n}",
		"a snippet in two sites":        "(c) {\n\tresponse_cache {\n\t\tcache_name shop\n\t\tmax_size 8MiB\n\t}\n}\n:80 {\n\timport c\n}\n:81 {\n\timport c\n}",
		"named routes, one not invoked": "&(a) {\n\troute {\n\t\tresponse_cache {\n\t\t\tcache_name shop\n\t\t\tmax_size 64MiB\n\t\t}\n\t\trespond a\n\t}\n}\n&(b) {\n\troute {\n\t\tresponse_cache {\n\t\t\tcache_name shop\n\t\t}\n\t\trespond b\n\t}\n}\n:80 {\n\tinvoke a\n}",
		"other names":                   ":80 {\n\tresponse_cache {\n\t\tcache_name a\n\t\tmax_size 8MiB\n\t}\n}\n:81 {\n\tresponse_cache {\n\t\tcache_name b\n\t}\n}",
	} {
		if _, err := adapt(t, caddyfile); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestNestedAffinityErrorPrefix: an affinity policy as another's fallback
// names itself once in its errors.
func TestNestedAffinityErrorPrefix(t *testing.T) {
	_, err := adapt(t, ":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {header.X-A} {\n\t\t\tfallback affinity {header.X-B} {\n\t\t\t\tbogus\n\t\t\t}\n\t\t}\n\t}\n}")
	if err == nil || strings.Count(err.Error(), "lb_policy affinity:") != 1 || !strings.Contains(err.Error(), "unrecognized option 'bogus'") {
		t.Errorf("error %v, want one lb_policy affinity: prefix and the option", err)
	}
}

// TestOnOffAnyCase: on and off are read in any case, as targeted_field's
// off, min_uses's auto and same_site's values are.
func TestOnOffAnyCase(t *testing.T) {
	for caddyfile, want := range map[string]string{
		":80 {\n\tresponse_cache {\n\t\tcoalesce OFF\n\t}\n}":                                                                                     `"coalesce": false`,
		":80 {\n\tresponse_cache {\n\t\tstatus_key On\n\t}\n}":                                                                                    `"status_key": true`,
		":80 {\n\tresponse_cache {\n\t\tmin_uses AUTO\n\t\tmax_size 1MiB\n\t}\n}":                                                                 `"max_size": 1048576`, // (auto is the default, left out)
		":80 {\n\treverse_proxy a:1 {\n\t\tlb_policy affinity {\n\t\t\tcookie {\n\t\t\t\tsecret s\n\t\t\t\thttp_only Off\n\t\t\t}\n\t\t}\n\t}\n}": `"http_only": false`,
	} {
		out, err := adapt(t, caddyfile)
		if err != nil {
			t.Errorf("%q: %v", caddyfile, err)
			continue
		}
		if !strings.Contains(out, want) {
			t.Errorf("%q: want %s in\n%s", caddyfile, want, out)
		}
	}
}

// TestLargestValuesLoad: the largest value each option takes adapts into
// JSON that loads. Caddy carries a module's JSON through a float64, so a
// duration of 2^63-1 ns, which Go's parser takes, came out as 2^63 and did
// not load (without a line to say where).
func TestLargestValuesLoad(t *testing.T) {
	const caddyfile = `:80 {
	response_cache {
		default_ttl 2562047h
		heuristic_max 2562047h
		stale_while_revalidate 2562047h
		stale_if_error 2562047h
	}
	reverse_proxy 127.0.0.1:9 127.0.0.1:10 {
		lb_policy affinity {
			bound 1.25
			bound_floor 2147483647
			weight 127.0.0.1:9 100
			cookie {
				secret s3cr3t-s3cr3t-s3cr3t
				max_age 2562047h
			}
		}
	}
}`
	adaptAndValidate(t, "TestLargestValuesLoad", 1, caddyfile)
}
