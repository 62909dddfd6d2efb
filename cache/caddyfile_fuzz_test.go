package cache

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile: whatever response_cache block text comes, the
// parser returns an error or a config, never panics; a config it accepts
// validates as a JSON config of the same values would (with the defaults
// Provision fills in), and reads back from its JSON unchanged.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"response_cache",
		"response_cache {\n max_size 64MiB\n max_item_size 1MiB\n default_ttl 10s\n}",
		"response_cache {\n key \"{header.X-Tenant} {http.request.orig_uri}\"\n cache_name edge-1\n coalesce off\n}",
		"response_cache {\n stale_while_revalidate 1m\n stale_if_error 1h\n min_uses auto\n targeted_field Surrogate-Control\n status_key on\n}",
		"response_cache {\n max_size 1,048,576\n min_uses 15\n targeted_field off\n status_key off\n}",
		"response_cache {\n max_size 1.5GiB\n max_item_size 2GiB\n}",
		"response_cache { { } }",
		"response_cache {\n key {time.now}\n}",
		"response_cache arg",
		"response_cache {\n default_ttl 2562047h\n stale_if_error 9223372036854775807ns\n}",
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
		h := new(Handler)
		if err := h.Config.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		j, err := json.Marshal(h.Config)
		if err != nil {
			t.Fatalf("marshaling parsed config: %v", err)
		}
		var back Config
		if err := json.Unmarshal(j, &back); err != nil {
			t.Fatalf("unmarshaling %s: %v", j, err)
		}
		if j2, _ := json.Marshal(back); !bytes.Equal(j, j2) {
			t.Fatalf("JSON round trip changed the config:\n%s\n%s", j, j2)
		}
		// As Caddy adapts it: through a map, numbers as float64s (which
		// may round a duration by nanoseconds, but must not overflow).
		var generic any
		if err := json.Unmarshal(j, &generic); err != nil {
			t.Fatal(err)
		}
		adapted, _ := json.Marshal(generic)
		if err := json.Unmarshal(adapted, &back); err != nil {
			t.Fatalf("%q parses, but its adapted JSON %s does not load: %v", input, adapted, err)
		}
		// What Provision fills in before it validates.
		h.CacheName, h.MaxSize, h.MaxItemSize = h.Config.StoreIdentity()
		if err := h.Validate(); err != nil {
			t.Fatalf("%q parses but does not validate: %v", input, err)
		}
	})
}
