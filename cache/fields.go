package cache

import (
	"encoding/binary"
	"math/bits"
	"net/http"
	"strings"
)

// fields is a stored header packed into one string: for each field its
// name, its number of values and the values, each prefixed with its length
// (uvarint). A full cache holds tens of thousands of headers, and the
// garbage collector marks every pointer of every one of them on each cycle,
// which all requests pay for, hits and misses alike. As an http.Header a
// header is a map, its table, a backing array of value strings and the
// strings: a few dozen pointers. Packed, it is one string, which the
// collector marks and never scans (BenchmarkGCWithEntries: a full
// collection with 100k stored entries takes about half as long).
//
// A hit unpacks it into the response's header map with one allocation, the
// value slices (see addTo); names and values are substrings, not copies.
// The rarer readers (conditional requests, revalidation, purging by tag)
// look fields up by name.
type fields struct {
	s       string
	nvalues int // all values of all fields, to size addTo's one allocation
}

// packFields packs the fields of h, except those drop reports (drop may be
// nil). Names are kept as they are: callers pass canonical ones.
func packFields(h http.Header, drop func(name string) bool) fields {
	size, n := packedSize(h, drop)
	var b strings.Builder // one allocation: its bytes become the string
	b.Grow(size)
	for k, vv := range h {
		if drop != nil && drop(k) {
			continue
		}
		writeString(&b, k)
		writeUvarint(&b, len(vv))
		for _, v := range vv {
			writeString(&b, v)
		}
	}
	return fields{s: b.String(), nvalues: n}
}

// packedSize returns the length of the packed fields of h and their
// number of values.
func packedSize(h http.Header, drop func(name string) bool) (size, n int) {
	for k, vv := range h {
		if drop != nil && drop(k) {
			continue
		}
		size += stringLen(len(k)) + uvarintLen(len(vv))
		n += len(vv)
		for _, v := range vv {
			size += stringLen(len(v))
		}
	}
	return size, n
}

// uvarintLen is the length of n as a uvarint (0 takes one byte, as 1
// does); stringLen that of a string of n bytes with its length.
func uvarintLen(n int) int { return (bits.Len(uint(n|1)) + 6) / 7 }
func stringLen(n int) int  { return uvarintLen(n) + n }

func writeUvarint(b *strings.Builder, n int) {
	var buf [binary.MaxVarintLen64]byte
	b.Write(binary.AppendUvarint(buf[:0], uint64(n)))
}

func writeString(b *strings.Builder, s string) {
	writeUvarint(b, len(s))
	b.WriteString(s)
}

// fieldCursor walks packed fields: next moves to a field, value reads its
// values in order (skipped ones are skipped by next).
type fieldCursor struct {
	s    string
	i    int
	name string
	left int // values of the current field not read yet
}

func (f *fields) cursor() fieldCursor { return fieldCursor{s: f.s} }

func (c *fieldCursor) next() bool {
	for c.left > 0 {
		c.value()
	}
	if c.i >= len(c.s) {
		return false
	}
	c.name = c.str()
	c.left = int(c.uvarint())
	return true
}

func (c *fieldCursor) value() string {
	c.left--
	return c.str()
}

func (c *fieldCursor) uvarint() uint64 {
	var x uint64
	for shift := 0; ; shift += 7 {
		b := c.s[c.i]
		c.i++
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x
		}
	}
}

func (c *fieldCursor) str() string {
	n := int(c.uvarint())
	s := c.s[c.i : c.i+n]
	c.i += n
	return s
}

// addTo sets every field in dst, with one allocation for all the value
// slices, each at len == cap so that a later handler's append reallocates
// instead of writing into another field. The allocation has room for
// spare more values, returned in rest for the caller's own fields; also
// returned are the values of Cache-Status, which the caller extends, and
// whether there is a Server field.
func (f *fields) addTo(dst http.Header, spare int) (rest, cacheStatus []string, server bool) {
	vals := make([]string, f.nvalues+spare)
	for c := f.cursor(); c.next(); {
		n := c.left
		for i := range n {
			vals[i] = c.value()
		}
		vv := vals[:n:n]
		vals = vals[n:]
		dst[c.name] = vv
		switch c.name {
		case "Cache-Status":
			cacheStatus = vv
		case "Server":
			server = true
		}
	}
	return vals, cacheStatus, server
}

// find returns a cursor at the field name (canonical), and whether there
// is one.
func (f *fields) find(name string) (fieldCursor, bool) {
	for c := f.cursor(); c.next(); {
		if c.name == name {
			return c, true
		}
	}
	return fieldCursor{}, false
}

// Values returns the values of the field name (canonical), in a new
// slice; nil when there is none.
func (f *fields) Values(name string) []string {
	c, ok := f.find(name)
	if !ok {
		return nil
	}
	vv := make([]string, c.left)
	for i := range vv {
		vv[i] = c.value()
	}
	return vv
}

// Get returns the first value of the field name (canonical), or "".
func (f *fields) Get(name string) string {
	if c, ok := f.find(name); ok && c.left > 0 {
		return c.value()
	}
	return ""
}

// has reports whether the field name (canonical) is present.
func (f *fields) has(name string) bool {
	_, ok := f.find(name)
	return ok
}

// header unpacks the fields into a new http.Header.
func (f *fields) header() http.Header {
	h := make(http.Header)
	_, _, _ = f.addTo(h, 0)
	return h
}

// heapBytes is what the packed fields occupy on the heap.
func (f *fields) heapBytes() int64 { return allocSize(int64(len(f.s))) }
