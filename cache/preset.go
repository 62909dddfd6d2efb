package cache

import (
	"net/http"
	"slices"
)

// This file handles the caching fields that handlers before the cache
// set on the client's response (`header Cache-Control ...`): the cache
// decides by them and the origin's, and serves them in front.

// presetFields returns the fields that decide caching (presetNames) that
// handlers before the cache set on the client's response dst, nil if none:
// Caddy orders `header` before response_cache, and `header /account/*
// Cache-Control "private, no-store"` reaches the client with the origin's
// own Cache-Control, as through reverse_proxy alone, so the cache decides
// by both (what they allow only for the statuses of OperatorFreshness:
// see judge). Deferred header operations apply after the cache and are
// not seen here.
func (h *Handler) presetFields(dst http.Header) http.Header {
	vals, found := h.presetValues(dst)
	if !found {
		return nil
	}
	out := make(http.Header, len(h.presetNames))
	for i, f := range h.presetNames {
		if vals[i] != nil {
			out[f] = slices.Clone(vals[i]) // kept past handlers that may edit dst's in place
		}
	}
	return out
}

// presetKeepsOut reports whether preset, the caching fields handlers
// before the cache set for a request (presetFields), keep its response
// out of the cache: private or no-store, in Cache-Control or in the
// targeted field the cache follows. Such a request (a logged-in user's,
// with her cookies) neither starts a background refresh of a shared
// stale response nor updates one with its 304: what the origin answers it
// may be hers alone.
func (h *Handler) presetKeepsOut(preset http.Header) bool {
	if preset == nil {
		return false
	}
	rc := ParseResponseControl(preset, h.targeted)
	return rc.Private || rc.NoStore
}

// ownsField reports whether the cache merges the client's field k, as
// set by handlers before it, with the response's on its own (Server, Age,
// Cache-Status, and presetNames: see takeServerSeed, serveEntry,
// prependPreset), rather than as recorder.copyToClient and serveEntry
// merge other fields.
func ownsField(presetNames []string, k string) bool {
	switch k {
	case "Server", "Age", "Cache-Status":
		return true
	}
	return slices.Contains(presetNames, k)
}

// presetValues returns the values of presetNames (at most four) in dst,
// in that order, and whether there are any, without allocating (for the
// hit path).
func (h *Handler) presetValues(dst http.Header) (vals [4][]string, found bool) {
	for i, f := range h.presetNames {
		if v := dst[f]; len(v) > 0 {
			vals[i], found = v, true
		}
	}
	return vals, found
}

// withPresetCopy returns hdr with the values of preset in front of its
// own values of each of their fields, leaving out those equal to one of
// preset's: the lines the client gets (reverse_proxy adds the origin's
// lines after those set before it), by which the cache decides. hdr
// itself when preset is empty; otherwise a copy (hdr is stored as the
// origin sent it, and each request puts its own preset in front).
func withPresetCopy(hdr, preset http.Header) http.Header {
	if len(preset) == 0 {
		return hdr
	}
	out := make(http.Header, len(hdr)+len(preset))
	copyHeader(out, hdr)
	for f, pv := range preset {
		out[f] = prependPreset(pv, hdr[f])
	}
	return out
}

// prependPreset returns the values preset followed by those of own that
// are not among them; preset itself when there are none.
func prependPreset(preset, own []string) []string {
	merged := slices.Clip(preset)
	for _, v := range own {
		if !slices.Contains(preset, v) {
			merged = append(merged, v)
		}
	}
	return merged
}

// presetField is a field handlers before the cache set on the client's
// response, with its values then.
type presetField struct {
	name string
	pre  []string
}

// setBefore returns the fields of the client's response hdr that
// handlers before the cache set, other than those the cache merges on
// its own (ownsField), appended to buf, which has room for the usual
// few: no allocation, and none at all with Caddy's Server field alone.
func (h *Handler) setBefore(hdr http.Header, buf []presetField) []presetField {
	if len(hdr) == 0 || len(hdr) == 1 && hdr["Server"] != nil {
		return buf
	}
	for k, v := range hdr {
		if len(v) > 0 && !ownsField(h.presetNames, k) {
			buf = append(buf, presetField{k, v})
		}
	}
	return buf
}
