package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRule16_UnsafeMethodsInvalidate: unsafe methods always reach the
// origin; a 2xx or 3xx invalidates the target URI and same-origin
// Location / Content-Location.
func TestRule16_UnsafeMethodsInvalidate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		method      string
		status      int
		fields      []string
		invalidated []string // paths that must miss afterwards
		kept        []string // paths that must still hit
		rewrite     string   // the path after a rewrite before the cache
	}{
		{name: "POST 200 target", method: "POST", status: 200, invalidated: []string{"/t"}, kept: []string{"/loc", "/cl"}},
		{name: "DELETE 204 target", method: "DELETE", status: 204, invalidated: []string{"/t"}},
		{name: "POST 500 keeps", method: "POST", status: 500, kept: []string{"/t"}},
		{name: "PUT 201 Location", method: "PUT", status: 201, fields: []string{"Location", "/loc"}, invalidated: []string{"/t", "/loc"}, kept: []string{"/cl"}},
		{name: "PATCH 200 Content-Location absolute", method: "PATCH", status: 200, fields: []string{"Content-Location", "http://example.com/cl"}, invalidated: []string{"/t", "/cl"}, kept: []string{"/loc"}},
		{name: "POST 303 other origin", method: "POST", status: 303, fields: []string{"Location", "http://other.example/loc"}, invalidated: []string{"/t"}, kept: []string{"/loc"}},
		{name: "custom method", method: "PURGEME", status: 200, invalidated: []string{"/t"}},
		{name: "POST 201 Location with default port", method: "POST", status: 201, fields: []string{"Location", "http://EXAMPLE.com:80/loc"}, invalidated: []string{"/t", "/loc"}},
		{name: "POST 201 Location other port", method: "POST", status: 201, fields: []string{"Location", "http://example.com:8080/loc"}, invalidated: []string{"/t"}, kept: []string{"/loc"}},
		// Behind a front that ends TLS the origin names the URL as its
		// clients know it, https, where the node's request is http.
		{name: "POST 303 https Location", method: "POST", status: 303, fields: []string{"Location", "https://example.com/loc"}, invalidated: []string{"/t", "/loc"}, kept: []string{"/cl"}},
		{name: "POST 303 https Location with its default port", method: "POST", status: 303, fields: []string{"Location", "https://example.com:443/loc"}, invalidated: []string{"/t", "/loc"}},
		{name: "POST 303 https Location other host", method: "POST", status: 303, fields: []string{"Location", "https://other.example/loc"}, invalidated: []string{"/t"}, kept: []string{"/loc"}},
		{name: "POST 201 Location other scheme", method: "POST", status: 201, fields: []string{"Location", "ftp://example.com/loc"}, invalidated: []string{"/t"}, kept: []string{"/loc"}},
		{name: "DELETE, nothing written", method: "DELETE", status: 0, invalidated: []string{"/t"}},
		{name: "POST 201 relative Location after a rewrite", method: "POST", status: 201, fields: []string{"Location", "t2"}, rewrite: "/x/t", invalidated: []string{"/t", "/t2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := static(c, 200, "body", "Cache-Control", "max-age=600")
			for _, p := range []string{"/t", "/loc", "/cl", "/t2"} {
				get(t, h, o, "http://example.com"+p)
			}
			unsafe := static(c, tc.status, "", tc.fields...)
			if tc.status == 0 {
				unsafe = &origin{fn: func(http.ResponseWriter, *http.Request) error { return nil }}
			}
			r := newRequest(tc.method, "http://example.com/t")
			if tc.rewrite != "" {
				r.URL.Path = tc.rewrite // handle_path and the like
			}
			w := serve(t, h, unsafe, r)
			if tc.status != 0 {
				wantStatus(t, w, []string{"fwd=method"})
			}
			// The same request again is not answered from the store.
			serve(t, h, unsafe, r)
			if n := unsafe.calls.Load(); n != 2 {
				t.Errorf("origin saw %d %s requests, want 2", n, tc.method)
			}
			for _, p := range tc.invalidated {
				wantStatus(t, get(t, h, o, "http://example.com"+p), []string{"fwd=uri-miss"})
			}
			for _, p := range tc.kept {
				wantStatus(t, get(t, h, o, "http://example.com"+p), []string{"hit"})
			}
		})
	}
}

// TestUnsafeMethodAbortedInvalidates: reverse_proxy panics with
// http.ErrAbortHandler when the origin's body breaks off after a 2xx: the
// origin acted on the request, so its URI is invalidated all the same,
// and the panic goes on to Caddy; after a 5xx nothing is.
func TestUnsafeMethodAbortedInvalidates(t *testing.T) {
	for _, tc := range []struct {
		status      int
		invalidated bool
	}{{200, true}, {303, true}, {500, false}} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			get(t, h, static(c, 200, "body", "Cache-Control", "max-age=600"), "http://example.com/u")
			aborting := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, "part")
				panic(http.ErrAbortHandler)
			}}
			func() {
				defer func() {
					if v := recover(); v != http.ErrAbortHandler {
						t.Errorf("recovered %v, want the handler's http.ErrAbortHandler", v)
					}
				}()
				_ = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodPost, "http://example.com/u"), aborting)
			}()
			h.store.wait()
			hit := hasParam(get(t, h, static(c, 200, "new", "Cache-Control", "max-age=600"), "http://example.com/u").Header().Get("Cache-Status"), "hit")
			if hit == tc.invalidated {
				t.Errorf("after an aborted POST answered %d: hit %v, want %v", tc.status, hit, !tc.invalidated)
			}
		})
	}
}

// TestLocationInvalidationWithClientPlaceholders: under a custom key made
// with a map's output or a variable of the request, the Location of an
// unsafe request's response is invalidated under that request's value
// (found by a review: it was keyed without it, invalidated nothing, and
// logged a false "placeholder this request does not know").
func TestLocationInvalidationWithClientPlaceholders(t *testing.T) {
	for _, key := range []string{"{tenant} {http.request.orig_uri}", "{http.vars.tenant} {http.request.orig_uri}"} {
		t.Run(key, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{Key: key}, c)
			core, logs := observer.New(zapcore.ErrorLevel)
			h.logger = zap.New(core)
			o := static(c, 200, "item", "Cache-Control", "max-age=60")
			req := func(method, target string) *http.Request {
				r := newRequest(method, target)
				r.Header.Set("X-Tenant", "acme")
				repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
				repl.Set("tenant", "acme") // as a map of X-Tenant would
				caddyhttp.SetVar(r.Context(), "tenant", "acme")
				return r
			}
			const item = "/item/5" // origin-form, as {http.request.orig_uri} has it from clients
			serve(t, h, o, req(http.MethodGet, item))
			wantStatus(t, serve(t, h, o, req(http.MethodGet, item)), []string{"hit"})
			post := static(c, http.StatusSeeOther, "", "Location", "/item/5")
			serve(t, h, post, req(http.MethodPost, "/item/edit"))
			wantStatus(t, serve(t, h, o, req(http.MethodGet, item)), []string{"fwd=uri-miss"})
			if logs.Len() != 0 {
				t.Errorf("errors logged: %v", logs.All())
			}
		})
	}
}

// TestInvalidationReachesEarlierKeys: a config keyed otherwise shares the
// store of the one it replaces (same cache_name and sizes); an unsafe
// request under it invalidates what the earlier key stored for its URL
// and Location too, so that a reload back to the earlier key does not
// serve what a POST changed. Either way round: default key, then a
// custom one, and back.
func TestInvalidationReachesEarlierKeys(t *testing.T) {
	const custom = "{http.request.uri} {http.request.header.X-Tenant}"
	for _, tc := range []struct {
		name          string
		earlier, next string
	}{
		{name: "default, then custom", earlier: DefaultKey, next: custom},
		{name: "custom, then default", earlier: custom, next: DefaultKey},
		{name: "custom, then another custom", earlier: custom, next: "{http.request.uri}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			name := fmt.Sprintf("rekeyed-%d", testCacheSeq.Add(1))
			earlier := newTestHandler(t, Config{CacheName: name, Key: tc.earlier}, c)
			var version atomic.Int32
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=600")
				_, _ = io.WriteString(w, "version "+strconv.Itoa(int(version.Load())))
				return nil
			}}
			for _, p := range []string{"/page", "/other", "/moved"} {
				get(t, earlier, o, "http://example.com"+p, "X-Tenant", "a")
				if w := get(t, earlier, o, "http://example.com"+p, "X-Tenant", "a"); !hasParam(w.Header().Get("Cache-Status"), "hit") {
					t.Fatalf("%s not stored under the earlier key: %q", p, w.Header().Get("Cache-Status"))
				}
			}
			next := newTestHandler(t, Config{CacheName: name, Key: tc.next}, c)
			if earlier.store != next.store {
				t.Fatal("the two configs do not share a store")
			}
			version.Store(1)
			unsafe := static(c, http.StatusCreated, "", "Location", "/moved")
			serve(t, next, unsafe, newRequest(http.MethodPost, "http://example.com/page", "X-Tenant", "a"))
			for _, tc := range []struct {
				path string
				want string
			}{{"/page", "version 1"}, {"/moved", "version 1"}, {"/other", "version 0"}} {
				w := get(t, earlier, o, "http://example.com"+tc.path, "X-Tenant", "a")
				if w.Body.String() != tc.want {
					t.Errorf("%s under the earlier key after the POST: %q (%q), want %q", tc.path, w.Body.String(), w.Header().Get("Cache-Status"), tc.want)
				}
			}
		})
	}
}

// provisionConfig provisions one handler per key with cache_name name,
// as one config would (one context), and returns them with the function
// that unloads the config (Caddy cancels its context and cleans its
// modules up, whether it loaded or failed to).
func provisionConfig(t *testing.T, name string, keys []string, c *clock) ([]*Handler, func()) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	var hs []*Handler
	for _, k := range keys {
		h := &Handler{Config: Config{CacheName: name, Key: k}, logger: zap.NewNop(), now: c.Now}
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("Provision: %v", err)
		}
		hs = append(hs, h)
	}
	var once sync.Once
	unload := func() {
		once.Do(func() {
			cancel()
			for _, h := range hs {
				h.bg.wait()
				_ = h.Cleanup()
			}
		})
	}
	t.Cleanup(unload)
	return hs, unload
}

// TestKeyTemplatesAreBounded: a store keeps the key templates of loaded
// configs, and at most maxKeyTemplates others: past that the oldest is
// forgotten, with a purge when entries were stored under it
// (invalidations would no longer reach them); one nothing was stored
// under (a config that failed to load) is forgotten as soon as no
// handler uses it, without a purge.
func TestKeyTemplatesAreBounded(t *testing.T) {
	c := newClock()
	o := static(c, 200, "body", "Cache-Control", "max-age=600")
	custom := func(i int) string { return fmt.Sprintf("{http.request.uri} %d", i) }
	t.Run("reloads through keys that stored", func(t *testing.T) {
		name := fmt.Sprintf("templates-%d", testCacheSeq.Add(1))
		hs, unload := provisionConfig(t, name, []string{custom(0)}, c)
		get(t, hs[0], o, "http://example.com/0")
		s := hs[0].store.(*store)
		for i := 1; i <= maxKeyTemplates+1; i++ {
			next, unloadNext := provisionConfig(t, name, []string{custom(i)}, c)
			unload() // custom(i-1) is no longer used: i templates are not
			unload = unloadNext
			s.wait()
			want := i // what each config stored
			if i > maxKeyTemplates {
				want = 0 // custom(0) forgotten: purged
			}
			if n := s.stats().Entries; n != want {
				t.Fatalf("after reload %d: %d entries, want %d", i, n, want)
			}
			get(t, next[0], o, fmt.Sprintf("http://example.com/%d", i))
		}
		if got := s.keyTemplates(); len(got) != maxKeyTemplates+1 || slices.Contains(got, custom(0)) {
			t.Errorf("templates: %q", got)
		}
	})
	t.Run("failed loads purge nothing", func(t *testing.T) {
		name := fmt.Sprintf("templates-%d", testCacheSeq.Add(1))
		hs, _ := provisionConfig(t, name, []string{DefaultKey}, c)
		get(t, hs[0], o, "http://example.com/kept")
		s := hs[0].store.(*store)
		for i := range maxKeyTemplates { // earlier configs, reloaded away from, that stored
			claim := s.noteKeyTemplate(custom(i))
			claim.markStored()
			claim.release()
		}
		for i := range 2 * maxKeyTemplates { // loads failing after the cache provisioned
			_, failed := provisionConfig(t, name, []string{custom(100 + i)}, c)
			failed()
		}
		s.wait()
		if n := s.stats().Entries; n != 1 {
			t.Errorf("failed loads purged the running config's store: %d entries, want 1", n)
		}
		if got := s.keyTemplates(); len(got) != maxKeyTemplates+1 || !slices.Contains(got, DefaultKey) || slices.Contains(got, custom(100)) {
			t.Errorf("templates: %q", got)
		}
	})
	t.Run("a config with more keys keeps its store across reloads", func(t *testing.T) {
		name := fmt.Sprintf("templates-%d", testCacheSeq.Add(1))
		keys := []string{DefaultKey}
		for i := 1; i <= maxKeyTemplates; i++ {
			keys = append(keys, custom(i))
		}
		hs, unload := provisionConfig(t, name, keys, c)
		get(t, hs[0], o, "http://example.com/kept")
		s := hs[0].store.(*store)
		next, _ := provisionConfig(t, name, keys, c) // a reload changing something else
		unload()
		_, failed := provisionConfig(t, name, []string{custom(100)}, c) // and a load that fails
		failed()
		s.wait()
		if w := get(t, next[0], o, "http://example.com/kept"); !hasParam(w.Header().Get("Cache-Status"), "hit") {
			t.Errorf("after reloading a config with %d keys: %q, want a hit", len(keys), w.Header().Get("Cache-Status"))
		}
		if got := s.keyTemplates(); len(got) != len(keys) {
			t.Errorf("%d templates, want the config's %d", len(got), len(keys))
		}
	})
}

// TestNoStoreUnderAForgottenTemplate: a request of an unloaded config
// that ends after the store forgot its key template (nothing had been
// stored under it) does not store its response, which no invalidation
// would reach: a POST under the next key, then a reload back to the old
// key, finds nothing of before the POST.
func TestNoStoreUnderAForgottenTemplate(t *testing.T) {
	c := newClock()
	name := fmt.Sprintf("late-%d", testCacheSeq.Add(1))
	const oldKey = "{http.request.uri} {http.request.header.X-Tenant}"
	old, unloadOld := provisionConfig(t, name, []string{oldKey}, c)
	next, _ := provisionConfig(t, name, []string{DefaultKey}, c)
	var version atomic.Int32
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=600")
		_, _ = io.WriteString(w, "version "+strconv.Itoa(int(version.Load())))
		return nil
	}}
	// The old config unloads while its request is at the origin.
	late := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		unloadOld()
		return o.fn(w, r)
	}}
	get(t, old[0], late, "http://example.com/page", "X-Tenant", "a")
	if slices.Contains(old[0].store.keyTemplates(), oldKey) {
		t.Fatal("the old key's template is still remembered")
	}
	version.Store(1)
	serve(t, next[0], static(c, http.StatusNoContent, ""), newRequest(http.MethodPost, "http://example.com/page", "X-Tenant", "a"))
	back, _ := provisionConfig(t, name, []string{oldKey}, c)
	if w := get(t, back[0], o, "http://example.com/page", "X-Tenant", "a"); w.Body.String() != "version 1" {
		t.Errorf("after a reload back to the old key: %q (%q), want version 1", w.Body.String(), w.Header().Get("Cache-Status"))
	}
}

// TestCleanupWhileABackgroundRefreshStores: a background revalidation
// outlives its config; the config's Cleanup and the refresh's store
// touch the handler's key-template claim together (run with -race).
func TestCleanupWhileABackgroundRefreshStores(t *testing.T) {
	c := newClock()
	name := fmt.Sprintf("bg-cleanup-%d", testCacheSeq.Add(1))
	old, unload := provisionConfig(t, name, []string{DefaultKey}, c)
	provisionConfig(t, name, []string{DefaultKey}, c) // the next config keeps the store
	release := make(chan struct{})
	var n atomic.Int32
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if n.Add(1) > 1 {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
		w.Header().Set("Date", c.date())
		_, _ = io.WriteString(w, "body")
		return nil
	}}
	get(t, old[0], o, "http://example.com/swr")
	c.Advance(5 * time.Second)
	get(t, old[0], o, "http://example.com/swr") // stale: a refresh waits at the origin
	done := make(chan struct{})
	go func() { unload(); close(done) }()
	close(release)
	<-done
	old[0].bg.wait()
	if n.Load() != 2 {
		t.Errorf("origin called %d times, want 2 (the fill and the refresh)", n.Load())
	}
}

// TestReleaseWhileALateRequestStores: a late request of a config marks a
// store just as the config's last claim on its template is released and
// the template, unmarked a moment before, is forgotten: the template
// leaves both the list and the table (which invalidations and later
// releases read), and the store is purged, since that request may store.
func TestReleaseWhileALateRequestStores(t *testing.T) {
	c := newClock()
	name := fmt.Sprintf("late-mark-%d", testCacheSeq.Add(1))
	h := newTestHandler(t, Config{CacheName: name}, c)
	s := h.store.(*store)
	const template = "{http.request.uri} late"
	claim := s.noteKeyTemplate(template)
	var kept bool
	testHookForgetting = func(u *templateUse) {
		if u.template == template {
			kept = claim.markStored()
		}
	}
	t.Cleanup(func() { testHookForgetting = nil })
	before := s.epoch()
	if forgot := claim.release(); forgot != template {
		t.Errorf("release forgot %q, want %q, with a purge", forgot, template)
	}
	if !kept {
		t.Fatal("the late request's mark came after the template was forgotten: the hook did not run where it should")
	}
	inTable := slices.ContainsFunc(s.templateUses, func(u *templateUse) bool { return u.template == template })
	if slices.Contains(s.keyTemplates(), template) || inTable {
		t.Errorf("the template is half forgotten: listed %v, in the table %v", slices.Contains(s.keyTemplates(), template), inTable)
	}
	if s.epoch() == before {
		t.Error("no purge, though the late request may store under a forgotten template")
	}
	// A later release reads the table for every listed template.
	s.noteKeyTemplate("{http.request.uri} next").release()
}
