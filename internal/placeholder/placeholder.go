// Package placeholder checks the placeholder templates that configure
// per-request keys (response_cache's key, lb_policy affinity's keys). A
// template that cannot vary from request to request (no placeholder, an
// unclosed brace, which Caddy's replacer leaves as literal text) would make
// every request share one cache entry or one upstream, so it is an error
// when the config is loaded rather than a silent constant.
package placeholder

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// Expand expands Caddyfile shorthands (`{path}`, `{header.X-User}`, ...)
// as the Caddyfile adapter does, for templates written in JSON, where
// they would otherwise be unknown placeholders.
func Expand(template string) string {
	seg := caddyfile.Segment{{Text: template}}
	httpcaddyfile.NewShorthandReplacer().ApplyToSegment(&seg)
	return seg[0].Text
}

// Names returns the names of the placeholders in template, which must be
// well formed (see Check).
func Names(template string) []string {
	var names []string
	_ = scan(template, func(name string) { names = append(names, name) })
	return names
}

// Check reports why template cannot be a per-request key: it has no
// placeholder, an unclosed `{`, a stray `}` or an empty `{}`. A backslash
// escapes a brace, as in Caddy's replacer.
func Check(template string) error {
	n := 0
	if err := scan(template, func(string) { n++ }); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%q has no placeholder, so it is the same for every request", template)
	}
	return nil
}

func scan(s string, placeholder func(name string)) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the next character is literal
		case '}':
			return fmt.Errorf("%q has a } without a matching { at offset %d", s, i)
		case '{':
			end := strings.IndexAny(s[i+1:], "{}")
			if end < 0 || s[i+1+end] == '{' {
				return fmt.Errorf("%q has an unclosed { at offset %d, which would be taken literally", s, i)
			}
			if end == 0 {
				return fmt.Errorf("%q has an empty placeholder {} at offset %d", s, i)
			}
			placeholder(s[i+1 : i+1+end])
			i += end + 1
		}
	}
	return nil
}
