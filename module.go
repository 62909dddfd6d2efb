// Package affinitycache registers every module of caddy-affinity-cache with
// Caddy, so that a single
//
//	xcaddy build --with github.com/f06cdff9/caddy-affinity-cache
//
// (from a checkout, until the module is published:
// --with github.com/f06cdff9/caddy-affinity-cache@v0.0.0-00010101000000-000000000000=.;
// see xcaddy.md) brings in the `lb_policy affinity` selection policy, the `response_cache`
// handler and their Caddyfile directives.
package affinitycache

import (
	_ "github.com/f06cdff9/caddy-affinity-cache/affinity"
	_ "github.com/f06cdff9/caddy-affinity-cache/cache"
	_ "github.com/f06cdff9/caddy-affinity-cache/caddyfile"
)
