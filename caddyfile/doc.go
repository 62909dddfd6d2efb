// Package caddyfile registers the Caddyfile directives of this module and
// their place in Caddy's directive order. Its tests hold the golden
// Caddyfile-to-JSON adaptations.
package caddyfile
