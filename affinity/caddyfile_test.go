package affinity

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    string // JSON of the parsed policy
		wantErr string // substring, including the position
	}{
		{
			name:  "bare",
			input: `affinity`,
			want:  `{}`,
		},
		{
			name:  "inline keys",
			input: `affinity {http.request.cookie.sid} {http.vars.client_ip}`,
			want:  `{"keys":["{http.request.cookie.sid}","{http.vars.client_ip}"]}`,
		},
		{
			name: "everything",
			input: `affinity {http.request.cookie.sid} {
				key {http.request.header.X-User} {http.request.uri.query.user}
				key {http.request.host}{http.request.uri}
				algorithm maglev
				weight 10.0.0.1:80 3
				weight 10.0.0.2:80 1
				bound 1.25
				bound_floor 8
			}`,
			want: `{"keys":["{http.request.cookie.sid}","{http.request.header.X-User}","{http.request.uri.query.user}","{http.request.host}{http.request.uri}"],` +
				`"algorithm":"maglev","weights":{"10.0.0.1:80":3,"10.0.0.2:80":1},"bound":1.25,"bound_floor":8}`,
		},
		{
			name:  "algorithm in capitals",
			input: "affinity {\n algorithm MAGLEV\n}",
			want:  `{"algorithm":"maglev"}`,
		},
		{
			// As reverse_proxy's line spells them: the dial address.
			name: "weights of upstreams with a scheme",
			input: `affinity {
				weight http://10.0.0.1:8080 3
				weight https://app.internal 2
				weight h2c://[::1] 4
				weight 10.0.0.2:80 1
			}`,
			want: `{"weights":{"10.0.0.1:8080":3,"10.0.0.2:80":1,"[::1]:80":4,"app.internal:443":2}}`,
		},
		{
			name: "cookie",
			input: `affinity {
				cookie sticky {
					secret s3cr3t
					max_age 24h
					path /app
					domain example.com
					secure
					http_only off
					same_site strict
				}
			}`,
			want: `{"cookie":{"name":"sticky","secret":"s3cr3t","max_age":86400000000000,"path":"/app","domain":"example.com",` +
				`"secure":true,"http_only":false,"same_site":"strict"}}`,
		},
		{
			name:  "cookie without name",
			input: "affinity {\n cookie {\n secret s\n }\n}",
			want:  `{"cookie":{"secret":"s"}}`,
		},
		{
			name:  "cookie with previous secrets",
			input: "affinity {\n cookie {\n secret s\n previous_secrets {env.OLD} older\n }\n}",
			want:  `{"cookie":{"secret":"s","previous_secrets":["{env.OLD}","older"]}}`,
		},
		{
			name:  "fallback with its own options",
			input: "affinity {http.request.header.X-User} {\n fallback header X-Other {\n fallback first\n }\n}",
			want: `{"keys":["{http.request.header.X-User}"],` +
				`"fallback":{"fallback":{"policy":"first"},"field":"X-Other","policy":"header"}}`,
		},
		{
			name:  "fallback round_robin",
			input: "affinity {\n fallback round_robin\n}",
			want:  `{"fallback":{"policy":"round_robin"}}`,
		},
		{
			// A policy that reads a block takes an empty one, as Caddy's
			// lb_policy cookie lb { } does.
			name:  "fallback header with an empty block",
			input: "affinity {http.request.header.X-User} {\n fallback header X-Other {\n }\n bound 1.5\n}",
			want:  `{"keys":["{http.request.header.X-User}"],"bound":1.5,"fallback":{"field":"X-Other","policy":"header"}}`,
		},

		{name: "unknown option", input: "affinity {\n\n frobnicate 1\n}", wantErr: "unrecognized option 'frobnicate', at Testfile:3"},
		{name: "key without args", input: "affinity {\n key\n}", wantErr: "wrong number of arguments; syntax: key <template>..., at Testfile:2"},
		{name: "inline key unclosed", input: "affinity {http.request.header.X-User", wantErr: `key: "{http.request.header.X-User" has an unclosed { at offset 0, which would be taken literally, at Testfile:1`},
		{name: "key without placeholder", input: "affinity {\n key {http.request.cookie.sid}\n key user\n}", wantErr: `key: "user" has no placeholder, so it is the same for every request, at Testfile:3`},
		{name: "key twice, once as a shorthand", input: "affinity {client_ip} {\n key {http.vars.client_ip}\n}", wantErr: `key "{http.vars.client_ip}" is listed twice; a key is tried once, at Testfile:2`},
		{name: "key twice, header names in another case", input: "affinity {header.X-User} {\n key {http.request.cookie.sid}\n key {header.x-user}\n}", wantErr: `key "{header.x-user}" is listed twice, as "{header.X-User}" (header names are not case-sensitive); a key is tried once, at Testfile:3`},
		{name: "keys on cookies of names in another case", input: "affinity {cookie.sid} {cookie.SID}", want: `{"keys":["{cookie.sid}","{cookie.SID}"]}`},
		{name: "key stray brace", input: "affinity {\n key x}{\n}", wantErr: "} without a matching {"},
		{name: "algorithm twice", input: "affinity {\n algorithm ring\n algorithm maglev\n}", wantErr: "algorithm already specified, at Testfile:3"},
		{name: "key on its own cookie", input: "affinity {http.request.cookie.sid} {\n cookie sid {\n  secret s3cr3t-s3cr3t\n }\n}", wantErr: `key "{http.request.cookie.sid}" reads the policy's own cookie sid; leave it out: with a cookie block the policy reads and checks that cookie itself, at Testfile:2`},
		{name: "key on its own default cookie, after it", input: "affinity {\n cookie {\n  secret s3cr3t-s3cr3t\n }\n key {cookie.lb_affinity}\n}", wantErr: `reads the policy's own cookie lb_affinity; leave it out: with a cookie block the policy reads and checks that cookie itself, at Testfile:5`},
		{name: "key on the body", input: "affinity {\n key {header.X-User}\n key {http.request.body}\n}", wantErr: `key: "{http.request.body}" names {http.request.body}: reverse_proxy has copied the request when the policy reads its key, and reading the body there would send the upstream an empty body; key on a header, a cookie or the URI instead, at Testfile:3`},
		{name: "inline key on the body", input: "affinity {http.request.host}{http.request.body_base64}", wantErr: `names {http.request.body_base64}: reverse_proxy has copied the request when the policy reads its key, and reading the body there would send the upstream an empty body; key on a header, a cookie or the URI instead, at Testfile:1`},
		{name: "ring weight too large", input: "affinity {\n algorithm ring\n weight 10.0.0.1:80 1000000\n}", wantErr: "weights: ring would need 160000000 points (160 per unit of weight), more than the limit of 2097152; use smaller weights (keeping their ratios), fewer nodes, or the maglev or rendezvous algorithm, at Testfile:3"},
		{name: "ring weight too large, ring after", input: "affinity {\n weight 10.0.0.1:80 1000000\n\n algorithm ring\n}", wantErr: ", at Testfile:4"},
		{name: "unknown algorithm", input: "affinity {\n algorithm Jump\n}", wantErr: `algorithm: unknown algorithm "Jump": want rendezvous, ring, maglev or compat, at Testfile:2`},
		{name: "algorithm extra arg", input: "affinity {\n algorithm ring maglev\n}", wantErr: "wrong number of arguments; syntax: "},
		{name: "bound twice", input: "affinity {\n bound 1.5\n bound 2\n}", wantErr: "bound already specified, at Testfile:3"},
		{name: "bound not a number", input: "affinity {\n bound lots\n}", wantErr: "invalid bound 'lots': must be a plain decimal number >= 1, such as 1.25, at Testfile:2"},
		{name: "bound below 1", input: "affinity {\n bound 0.9\n}", wantErr: "invalid bound '0.9': must be a number >= 1"},
		{name: "bound zero", input: "affinity {\n bound 0\n}", wantErr: "invalid bound '0'"},
		{name: "bound_floor zero", input: "affinity {\n bound 1.25\n bound_floor 0\n}", wantErr: "invalid bound_floor '0': must be a whole number from 1 to 2147483647, such as 8, at Testfile:3"},
		{name: "bound_floor past an int32", input: "affinity {\n bound 1.25\n bound_floor 2147483648\n}", wantErr: "invalid bound_floor '2147483648': must be a whole number from 1 to 2147483647, such as 8, at Testfile:3"},
		{name: "weight of an empty upstream", input: "affinity {\n weight \"\" 3\n}", wantErr: "weight needs an upstream, got '' (an unset {$VAR}?): name the upstream as on the reverse_proxy line, at Testfile:2"},
		{name: "weight of an unset variable", input: "affinity {\n weight 3\n}", wantErr: "weight needs an upstream and a number, got only '3' (an unset {$VAR} leaves nothing); syntax: weight <upstream> <n>, at Testfile:2"},
		{name: "weight of a blank upstream", input: "affinity {\n weight \" \" 3\n}", wantErr: "weight needs an upstream, got ' '"},
		{name: "cookie max_age past Go's durations", input: "affinity {\n cookie {\n secret s\n max_age 106752d\n }\n}", wantErr: "invalid cookie max_age '106752d': want a duration such as 720h or 30d, at most 2562047h, at Testfile:4"},
		{name: "cookie max_age past what JSON gives back", input: "affinity {\n cookie {\n secret s\n max_age 9223372036854775807ns\n }\n}", wantErr: "invalid cookie max_age '9223372036854775807ns': must be at most 2562047h (Go's durations end there), at Testfile:4"},
		{name: "bound_floor without bound", input: "affinity {\n bound_floor 8\n}", wantErr: "bound_floor 8 needs bound: it is the least cap bound gives an upstream, at Testfile:2"},
		{name: "bound_floor twice", input: "affinity {\n bound 1.25\n bound_floor 8\n bound_floor 9\n}", wantErr: "bound_floor already specified"},
		{name: "bound NaN", input: "affinity {\n bound NaN\n}", wantErr: "invalid bound 'NaN'"},
		{name: "bound Inf", input: "affinity {\n bound +Inf\n}", wantErr: "invalid bound '+Inf'"},
		{name: "bound missing", input: "affinity {\n bound\n}", wantErr: "wrong number of arguments; syntax: "},
		{name: "weight not integer", input: "affinity {\n weight a:80 1.5\n}", wantErr: "invalid weight '1.5' for a:80: must be an integer from 1 to 1000000, at Testfile:2"},
		{name: "weight zero", input: "affinity {\n weight a:80 0\n}", wantErr: "invalid weight '0' for a:80"},
		{name: "weight negative", input: "affinity {\n weight a:80 -2\n}", wantErr: "invalid weight '-2' for a:80"},
		{name: "weight too large", input: "affinity {\n weight a:80 1000001\n}", wantErr: "invalid weight '1000001'"},
		{name: "weight missing n", input: "affinity {\n weight a:80\n}", wantErr: "weight needs an upstream and a number, got only 'a:80'"},
		{name: "weight twice for a dial", input: "affinity {\n weight a:80 2\n weight a:80 3\n}", wantErr: "weight for a:80 already specified, at Testfile:3"},
		{name: "compat then weight", input: "affinity {\n algorithm compat\n weight a:80 2\n}", wantErr: "algorithm compat does not support weights, at Testfile:3"},
		{name: "weight then compat", input: "affinity {\n weight a:80 2\n algorithm compat\n}", wantErr: "algorithm compat does not support weights, at Testfile:3"},
		{name: "cookie twice", input: "affinity {\n cookie {\n secret a\n }\n cookie {\n secret b\n }\n}", wantErr: "cookie already specified, at Testfile:5"},
		{name: "cookie without secret", input: "affinity {\n cookie lb {\n max_age 1h\n }\n}", wantErr: "cookie requires a secret (add `secret <text or placeholder>` to its block), at Testfile:2"},
		{name: "cookie relative path", input: "affinity {\n cookie {\n secret s\n path app\n domain example.com\n }\n}", wantErr: `cookie path must start with /, got "app" (browsers ignore such a path and use the request's directory), at Testfile:4`},
		{name: "cookie without block", input: "affinity {\n cookie\n}", wantErr: "cookie requires a secret"},
		{name: "cookie bad name", input: "affinity {\n cookie \"bad name\" {\n secret s\n }\n}", wantErr: `invalid cookie name "bad name": http: invalid Cookie.Name, at Testfile:2`},
		{name: "cookie empty name", input: "affinity {\n cookie \"\" {\n secret s\n }\n}", wantErr: "cookie name must not be empty (leave it out for the default, lb_affinity), at Testfile:2"},
		{name: "cookie bad domain", input: "affinity {\n cookie {\n secret s\n domain \"a b\"\n max_age 1h\n }\n}", wantErr: `invalid cookie domain "a b": http: invalid Cookie.Domain, at Testfile:4`},
		{name: "cookie bad path", input: "affinity {\n cookie {\n secret s\n path \"/a;b\"\n max_age 1h\n }\n}", wantErr: `invalid cookie path "/a;b"`},
		{name: "cookie empty domain", input: "affinity {\n cookie {\n secret s\n domain \"\"\n }\n}", wantErr: "cookie domain must not be empty (leave the option out for its default), at Testfile:4"},
		{name: "cookie empty same_site", input: "affinity {\n cookie {\n secret s\n same_site \"\"\n }\n}", wantErr: "cookie same_site must not be empty"},
		{name: "cookie conflict at its line", input: "affinity {\n cookie {\n secret s\n same_site none\n secure off\n }\n}", wantErr: "same_site none requires secure; browsers reject it otherwise, at Testfile:2"},
		{name: "bound with underscore", input: "affinity {\n bound 1_5\n}", wantErr: "invalid bound '1_5': must be a plain decimal number >= 1, such as 1.25, at Testfile:2"},
		{name: "bound in hex", input: "affinity {\n bound 0x1p1\n}", wantErr: "invalid bound '0x1p1'"},
		{name: "fallback with a block it ignores", input: "affinity {\n fallback random {\n nonsense 1\n }\n}", wantErr: "fallback random: unexpected '{' (the policy reads no more than that), at Testfile:2"},
		{name: "fallback with an empty block", input: "affinity {\n fallback least_conn {\n }\n}", wantErr: "fallback least_conn: unexpected '{' (the policy reads no more than that), at Testfile:2"},
		{name: "fallback with an empty block, then an option", input: "affinity {\n fallback first {\n }\n bound 1.5\n}", wantErr: "fallback first: unexpected '{'"},
		{name: "cookie secret placeholder unclosed", input: "affinity {\n cookie {\n secret {env.AFFINITY_SECRET\n }\n}", wantErr: "cookie secret has an unclosed { at offset 0, which would be taken literally; write a literal brace as \\{ or \\}, at Testfile:3"},
		{name: "cookie previous secret stray brace", input: "affinity {\n cookie {\n secret s\n previous_secrets t {file./old}x}\n }\n}", wantErr: "cookie previous_secrets[1] has a } without a matching { at offset 12; write a literal brace as \\{ or \\}, at Testfile:4"},
		{name: "cookie empty secret", input: "affinity {\n cookie {\n secret \"\"\n }\n}", wantErr: "cookie secret must not be empty, at Testfile:3"},
		{name: "cookie secret of an unset variable", input: "affinity {\n cookie {\n secret\n }\n}", wantErr: "cookie secret needs a value (an unset {$VAR} leaves none), at Testfile:3"},
		{name: "cookie secret of the machine", input: "affinity {\n cookie {\n secret {system.hostname}{system.os}\n }\n}", wantErr: "cookie secret names {system.hostname}, which anyone who knows the machine can guess"},
		{name: "cookie secret of the request", input: "affinity {\n cookie {\n secret {http.request.header.X}\n }\n}", wantErr: "cookie secret names a placeholder that is not replaced when the config loads (only global ones are, such as {env.NAME} or {file./path}; a request's, such as {header.X}, is not); write a literal brace as \\{ or \\}, at Testfile:3"},
		{name: "cookie previous secret of the clock", input: "affinity {\n cookie {\n secret s\n previous_secrets t{time.now.unix}\n }\n}", wantErr: "cookie previous_secrets[0] names a {time.*} placeholder, which changes with the clock: each load, and each node, would sign with another secret, at Testfile:4"},
		{name: "cookie path with a placeholder", input: "affinity {\n cookie {\n secret s\n path /{env.HOME}\n }\n}", wantErr: "cookie path \"/{env.HOME}\" has a brace: the path is sent as written (placeholders are not replaced in it), and browsers would send the cookie back to no page, at Testfile:4"},
		{name: "cookie two names", input: "affinity {\n cookie a b {\n secret s\n }\n}", wantErr: "wrong number of arguments; syntax: "},
		{name: "cookie max_age 0", input: "affinity {\n cookie {\n secret s\n max_age 0\n }\n}", wantErr: "invalid cookie max_age '0': leave max_age out for a cookie that lasts as long as the browser session (the default), or give a duration such as 720h, at Testfile:4"},
		{name: "cookie domain a public suffix", input: "affinity {\n cookie {\n secret s\n domain co.uk\n }\n}", wantErr: `cookie domain "co.uk" is a public suffix: browsers take a cookie for it only from that very host, and then for it alone, never for the sites under it; name your site's domain (such as example.com), or leave domain out for a cookie of this host alone, at Testfile:4`},
		{name: "cookie domain a top-level domain", input: "affinity {\n cookie {\n secret s\n domain .COM\n }\n}", wantErr: `cookie domain ".COM" is a public suffix`},
		{name: "cookie path with a space", input: "affinity {\n cookie {\n secret s\n path \"/a b\"\n }\n}", wantErr: `cookie path "/a b" has ' ', which a request's path never holds, so browsers would send the cookie back to no page; browsers send it escaped: write %20, at Testfile:4`},
		{name: "cookie path with a query", input: "affinity {\n cookie {\n secret s\n path /app?x\n }\n}", wantErr: `has '?', which a request's path never holds, so browsers would send the cookie back to no page; a URL's path ends before ? or #: give the path alone`},
		{name: "cookie name too long", input: "affinity {\n cookie " + strings.Repeat("n", 4052) + " {\n secret s\n }\n}", wantErr: "cookie name is 4052 bytes: with the 45 of its value it passes the 4096 bytes browsers take for a cookie's name and value (RFC 6265bis §5.6), so they would drop it; use a short name, at Testfile:2"},
		{name: "cookie negative max_age", input: "affinity {\n cookie {\n secret s\n max_age -5m\n }\n}", wantErr: "invalid cookie max_age '-5m': must not be negative, at Testfile:4"},
		{name: "cookie bad max_age", input: "affinity {\n cookie {\n secret s\n max_age soon\n }\n}", wantErr: "invalid cookie max_age 'soon'"},
		{name: "cookie bad same_site", input: "affinity {\n cookie {\n secret s\n same_site loose\n }\n}", wantErr: `cookie same_site must be lax, strict or none, got "loose", at Testfile:4`},
		{name: "cookie same_site none insecure", input: "affinity {\n cookie {\n secret s\n same_site none\n secure off\n }\n}", wantErr: "same_site none requires secure"},
		{name: "cookie bad secure", input: "affinity {\n cookie {\n secret s\n secure maybe\n }\n}", wantErr: "invalid cookie secure 'maybe': want on or off"},
		{name: "cookie unknown option", input: "affinity {\n cookie {\n secret s\n flavour choc\n }\n}", wantErr: "unrecognized cookie option 'flavour', at Testfile:4"},
		{name: "cookie previous_secrets without one", input: "affinity {\n cookie {\n secret s\n previous_secrets\n }\n}", wantErr: "wrong number of arguments; syntax: cookie previous_secrets <secret>..., at Testfile:4"},
		{name: "cookie secret of white space", input: "affinity {\n cookie {\n secret \"   \"\n }\n}", wantErr: "cookie secret is only white space: use a long random value, kept in a file ({file./path}) or the environment ({env.NAME}), at Testfile:3"},
		{name: "cookie previous_secrets empty", input: "affinity {\n cookie {\n secret s\n previous_secrets \"\"\n }\n}", wantErr: "cookie previous_secrets[0] is empty, at Testfile:4"},
		{name: "cookie option twice", input: "affinity {\n cookie {\n secret s\n secret t\n }\n}", wantErr: "cookie secret already specified, at Testfile:4"},
		{name: "algorithm as a key", input: "affinity maglev", wantErr: "key: \"maglev\" has no placeholder, so it is the same for every request; to choose the algorithm, set the policy's algorithm (`algorithm maglev` in its Caddyfile block, \"algorithm\": \"maglev\" in JSON), at Testfile:1"},
		{name: "fallback's own error", input: "affinity {\n fallback weighted_round_robin -1 2\n}", wantErr: "lb_policy affinity: fallback weighted_round_robin: invalid weight value '-1': weight should be non-negative, at Testfile:2"},
		{name: "fallback's unknown option", input: "affinity {\n fallback header X-Team {\n bogus\n }\n}", wantErr: "lb_policy affinity: fallback header: unrecognized option 'bogus', at Testfile:3"},
		{name: "fallback affinity's error", input: "affinity {header.X-A} {\n fallback affinity {header.X-B} {\n bogus\n }\n}", wantErr: "lb_policy affinity: fallback affinity: unrecognized option 'bogus', at Testfile:3"},
		{name: "fallback twice", input: "affinity {\n fallback random\n fallback first\n}", wantErr: "fallback already specified, at Testfile:3"},
		{name: "fallback unknown", input: "affinity {\n fallback nonesuch\n}", wantErr: "getting module named 'http.reverse_proxy.selection_policies.nonesuch'"},
		{name: "fallback missing", input: "affinity {\n fallback\n}", wantErr: "wrong number of arguments; syntax: "},
		{name: "cookie then fallback", input: "affinity {\n cookie {\n secret s\n }\n fallback random\n}", wantErr: "cookie and fallback exclude each other: with a cookie, every request has a key, at Testfile:5"},
		{name: "fallback then cookie", input: "affinity {\n fallback random\n cookie {\n secret s\n }\n}", wantErr: "cookie and fallback exclude each other: with a cookie, every request has a key, at Testfile:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := new(AffinitySelection)
			err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("parsed to\n%s\nwant\n%s", got, tt.want)
			}
			// What parses must also validate.
			if err := s.Validate(); err != nil {
				t.Errorf("parsed config does not validate: %v", err)
			}
		})
	}
}

// TestCaddyfileAdapt runs the real Caddyfile adapter: reverse_proxy hands the
// policy its tokens with shorthands already expanded.
func TestCaddyfileAdapt(t *testing.T) {
	input := `:8080 {
		reverse_proxy 10.0.0.1:80 10.0.0.2:80 {
			lb_policy affinity {client_ip} {
				key {cookie.sid} {header.X-User}
				weight 10.0.0.2:80 2
			}
		}
	}`
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	want := `"selection_policy":{"keys":["{http.vars.client_ip}","{http.request.cookie.sid}","{http.request.header.X-User}"],` +
		`"policy":"affinity","weights":{"10.0.0.2:80":2}}`
	if !strings.Contains(string(out), want) {
		t.Errorf("adapted config\n%s\ndoes not contain\n%s", out, want)
	}
}

func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"affinity",
		"affinity {client_ip} {\n key {cookie.sid}\n algorithm ring\n weight a:1 2\n bound 1.5\n}",
		"affinity {\n cookie lb {\n secret s\n max_age 1h\n same_site none\n secure\n http_only off\n }\n}",
		"affinity {\n fallback header X {\n fallback affinity {\n bound 2\n }\n }\n}",
		"affinity {\n cookie {\n}\n weight\n bound NaN\n}",
		"affinity { { } }",
		"affinity {header.X} {\n key {http.request.header.X}\n}",
		"affinity {\n bound 1\n weight a:1 1000000\n cookie {\n secret s\n path /\n }\n}",
		"affinity {\n bound 1.25\n bound_floor 2147483647\n cookie {\n secret s\n max_age 2562047h\n }\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		// NewTestDispenser exits the process on a tokenizer error;
		// tokenize here and skip what does not tokenize.
		tokens, err := caddyfile.Tokenize([]byte(input), "Testfile")
		if err != nil {
			return
		}
		s := new(AffinitySelection)
		if err := s.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		// Whatever parses is a valid config: the parser checks every
		// option as it reads it, so Validate, which is what a JSON config
		// gets, must agree.
		if err := s.Validate(); err != nil {
			t.Fatalf("%q parses but does not validate: %v", input, err)
		}
		// The adapter hands Caddy the parsed config as JSON: it must read
		// back as the same config, with the same verdict.
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshaling parsed config: %v", err)
		}
		back := new(AffinitySelection)
		if err := json.Unmarshal(j, back); err != nil {
			t.Fatalf("unmarshaling %s: %v", j, err)
		}
		j2, err := json.Marshal(back)
		if err != nil {
			t.Fatalf("marshaling the config read back: %v", err)
		}
		if !bytes.Equal(j, j2) {
			t.Fatalf("JSON round trip changed the config:\n%s\n%s", j, j2)
		}
		// encoding/json writes invalid UTF-8 as U+FFFD, so only valid
		// text reads back as the very same values.
		if utf8.ValidString(input) && !reflect.DeepEqual(s, back) {
			t.Fatalf("JSON round trip changed the config:\n%#v\n%#v", s, back)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("validates, but not after a JSON round trip: %v", err)
		}
		// As Caddy adapts it: through a map, numbers as float64s (which
		// may round a duration by nanoseconds, but must not overflow).
		var generic any
		if err := json.Unmarshal(j, &generic); err != nil {
			t.Fatal(err)
		}
		adapted, _ := json.Marshal(generic)
		if err := json.Unmarshal(adapted, new(AffinitySelection)); err != nil {
			t.Fatalf("%q parses, but its adapted JSON %s does not load: %v", input, adapted, err)
		}
	})
}

// TestWeightDial: a weight names its upstream as reverse_proxy's line does,
// and gets the dial address reverse_proxy makes of it.
func TestWeightDial(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:8080":        "10.0.0.1:8080",
		"10.0.0.1":             "10.0.0.1:80",
		"app":                  "app:80",
		"[::1]":                "[::1]:80",
		"::1":                  "[::1]:80",
		"[::1]:9000":           "[::1]:9000",
		"http://app":           "app:80",
		"HTTPS://Host":         "Host:443",
		"https://host:8443":    "host:8443",
		"h2c://app":            "app:80",
		"http://[::1]:8080":    "[::1]:8080",
		"http://u@host:8080":   "host:8080",
		"unix//run/app.sock":   "unix//run/app.sock",
		"unix+h2c//run/x.sock": "unix//run/x.sock",
		"UNIX//run/x.sock":     "unix//run/x.sock",
		"{env.UPSTREAM}":       "{env.UPSTREAM}",
		"http://app/path":      "http://app/path",
		// No host: reverse_proxy dials the port on every interface.
		"http://:8080":  ":8080",
		"h2c://:8080":   ":8080",
		"https://:8443": ":8443",
		"http://":       ":80",
	} {
		if got := weightDial(in); got != want {
			t.Errorf("weightDial(%q) = %q, want %q", in, got, want)
		}
	}
}
