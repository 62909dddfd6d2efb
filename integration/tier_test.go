package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestShardedCacheTier is the pattern the module exists for: a front Caddy
// routes by URL hash (lb_policy affinity {uri}) to a tier of caching nodes,
// so each object is cached once across the tier.
func TestShardedCacheTier(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		fmt.Fprintf(w, "object %s", r.URL.Path)
	})
	ports := freePorts(t, 3) // distinct: two equal would be an ambiguous site definition
	front, node1, node2 := ports[0], ports[1], ports[2]
	cfg := globals() + fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	reverse_proxy 127.0.0.1:%[2]d 127.0.0.1:%[3]d {
		lb_policy affinity {uri}
	}
}

(cachenode) {
	header X-Cache-Node {args[0]}
	response_cache {
		cache_name {args[0]}
		max_size 8MiB
	}
	reverse_proxy %[4]s
}

http://127.0.0.1:%[2]d {
	import cachenode node1
}

http://127.0.0.1:%[3]d {
	import cachenode node2
}
`, front, node1, node2, origin.addr)
	startCaddy(t, cfg)
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", front)

	const objects = 100
	nodeOf := map[string]string{}
	perNode := map[string]int{}
	for i := 0; i < objects; i++ {
		path := fmt.Sprintf("/obj/%d", i)
		r := do(t, c, "GET", base+path, nil)
		nodeOf[path] = r.header.Get("X-Cache-Node")
		perNode[nodeOf[path]]++
	}
	if len(perNode) != 2 {
		t.Fatalf("objects spread over %v; want both nodes", perNode)
	}
	waitFor(t, "every object to be cached", 10*time.Second, func() bool {
		for i := 0; i < objects; i++ {
			path := fmt.Sprintf("/obj/%d", i)
			r := do(t, c, "GET", base+path, nil)
			if r.header.Get("X-Cache-Node") != nodeOf[path] {
				t.Fatalf("%s moved from %s to %s", path, nodeOf[path], r.header.Get("X-Cache-Node"))
			}
			if !isHitFrom(r, nodeOf[path]) {
				return false
			}
		}
		return true
	})
	t.Logf("%d objects over the tier: %v; origin requests %d", objects, perNode, origin.hits.Load())
	// Each object was fetched from the origin once (a second fetch can only
	// happen if ristretto dropped a Set, which waitFor would then retry).
	if got := origin.hits.Load(); got < objects || got > objects+objects/20 {
		t.Errorf("origin saw %d requests for %d objects; want each object fetched once", got, objects)
	}
}

func isHitFrom(r result, node string) bool {
	cs := r.header.Get("Cache-Status")
	return len(cs) > len(node) && cs[:len(node)] == node && cs[len(node):len(node)+5] == "; hit"
}

// TestTierKeyedByResourceInvalidates: a POST that answers with a redirect
// invalidates its Location on the node it went to; in a tier routed by
// URI, /posts/7/comments and /posts/7 may live on different nodes, and
// the page would stay out of date there (a review saw 6 of 6). Routing by
// the resource the URL names (a map from the path) puts them on one node,
// as README's tier section shows: the redirected page is fresh after
// every POST.
func TestTierKeyedByResourceInvalidates(t *testing.T) {
	var mu sync.Mutex
	comments := map[string]int{}
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		post, isComment := strings.CutSuffix(r.URL.Path, "/comments")
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPost && isComment {
			comments[post]++
			loc := post
			if r.URL.Query().Has("abs") {
				// An app that knows it is behind TLS (or forces it)
				// names the page as its clients know it, https.
				loc = "https://" + r.Host + post
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		fmt.Fprintf(w, "%s comments=%d", r.URL.Path, comments[r.URL.Path])
	})
	ports := freePorts(t, 4)
	front, nodes := ports[0], ports[1:]
	cfg := globals() + fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	map {path} {tier_key} {
		~^(/posts/[0-9]+) "${1}"
		default {uri}
	}
	reverse_proxy 127.0.0.1:%[2]d 127.0.0.1:%[3]d 127.0.0.1:%[4]d {
		lb_policy affinity {tier_key}
	}
}

(cachenode) {
	header X-Cache-Node {args[0]}
	response_cache {
		cache_name {args[0]}
		max_size 8MiB
	}
	reverse_proxy %[5]s
}

http://127.0.0.1:%[2]d {
	import cachenode node1
}

http://127.0.0.1:%[3]d {
	import cachenode node2
}

http://127.0.0.1:%[4]d {
	import cachenode node3
}
`, front, nodes[0], nodes[1], nodes[2], origin.addr)
	startCaddy(t, cfg)
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", front)
	used := map[string]bool{}
	for i := range 12 {
		page := fmt.Sprintf("/posts/%d", i)
		do(t, c, "GET", base+page, nil)
		waitFor(t, page+" to be cached", 5*time.Second, func() bool {
			return strings.Contains(cacheStatus(do(t, c, "GET", base+page, nil)), "; hit")
		})
		target := base + page + "/comments"
		if i%2 == 1 {
			target += "?abs" // an absolute https Location: its node sees http
		}
		post := do(t, c, "POST", target, nil)
		if post.status != http.StatusSeeOther {
			t.Fatalf("POST %s: %d", target, post.status)
		}
		loc, err := url.Parse(post.header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		r := do(t, c, "GET", base+loc.Path, nil)
		if want := page + " comments=1"; r.body != want {
			t.Errorf("after a comment, %s is %q (Cache-Status %q); want %q", page, r.body, cacheStatus(r), want)
		}
		if node := r.header.Get("X-Cache-Node"); node != post.header.Get("X-Cache-Node") {
			t.Errorf("%s on %s, its comments on %s", page, node, post.header.Get("X-Cache-Node"))
		}
		used[r.header.Get("X-Cache-Node")] = true
	}
	if len(used) < 2 {
		t.Errorf("12 resources on %d node(s); want them spread", len(used))
	}
}
