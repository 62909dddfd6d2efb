package cache

import (
	"net/http"
	"testing"
	"time"
)

func TestParseHTTPDate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // RFC 3339, or "" for an error
		fast bool   // read without time.Parse
	}{
		{"Sun, 06 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z", true},
		{"Tue, 29 Feb 2000 23:59:59 GMT", "2000-02-29T23:59:59Z", true},
		{"Mon, 31 Dec 0001 00:00:00 GMT", "0001-12-31T00:00:00Z", true},
		// The day name is not checked against the date, as in time.Parse.
		{"Mon, 06 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z", true},
		{"Thu, 29 Feb 1900 00:00:00 GMT", "", false},
		{"Sun, 31 Apr 1994 08:49:37 GMT", "", false},
		{"Sun, 00 Nov 1994 08:49:37 GMT", "", false},
		{"Sun, 06 Nov 1994 24:00:00 GMT", "", false},
		{"Sun, 06 Nov 1994 08:60:00 GMT", "", false},
		{"Sun, 06 Nov 1994 08:49:60 GMT", "", false},
		{"Sun, 06 Nov 1994 08:49:37 UTC", "", false},
		{"Xyz, 06 Nov 1994 08:49:37 GMT", "", false},
		{"Sun, 06 Nox 1994 08:49:37 GMT", "", false},
		{"Sun, 6 Nov 1994 08:49:37 GMT", "", false},
		// Names in any case (RFC 9111 §4.2).
		{"Thu, 18 Aug 2050 02:01:18 gMT", "2050-08-18T02:01:18Z", true},
		{"thu, 18 AUG 2050 02:01:18 gmt", "2050-08-18T02:01:18Z", true},
		{"Sun, 06 Nov 1994 08:49:37 G\x4dt", "1994-11-06T08:49:37Z", true},
		{"Sun, 06 Nov 1994 08:49:37 G\x0dT", "", false},
		{"Sun, 06 N\x0fv 1994 08:49:37 GMT", "", false},
		{"0", "", false},
		{"", "", false},
		// Other forms go to http.ParseTime.
		{"Sunday, 06-Nov-94 08:49:37 GMT", "1994-11-06T08:49:37Z", false},
		{"Sun Nov  6 08:49:37 1994", "1994-11-06T08:49:37Z", false},
		{"Sun, 06 nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z", true},
		{"Sun, 06 Nov 1994 8:49:37 GMT", "1994-11-06T08:49:37Z", false},
		{"sunday, 06-nov-94 08:49:37 gmt", "1994-11-06T08:49:37Z", false},
		{"Sun, 06 Nov 1994 8:49:37 Gmt", "1994-11-06T08:49:37Z", false},
		{"Sun, 06 Nov 1994 8:49:37 GMX", "", false},
	} {
		got, err := parseHTTPDate(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseHTTPDate(%q) = %v, want an error", tc.in, got)
			}
		} else if err != nil || got.Format(time.RFC3339) != tc.want || tc.fast && got.Location() != time.UTC {
			t.Errorf("parseHTTPDate(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
		if _, fast := parseIMFFixdate(tc.in); fast != tc.fast {
			t.Errorf("parseIMFFixdate(%q) ok = %v, want %v", tc.in, fast, tc.fast)
		}
		if tc.fast {
			if n := testing.AllocsPerRun(10, func() { _, _ = parseHTTPDate(tc.in) }); n != 0 {
				t.Errorf("parseHTTPDate(%q) allocates %v times", tc.in, n)
			}
		}
	}
}

// FuzzParseHTTPDate checks that the IMF-fixdate reader agrees with
// http.ParseTime (given the zone's name in upper case) on every input it
// accepts, and accepts every date http.TimeFormat writes.
func FuzzParseHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Tue, 29 Feb 2000 23:59:59 GMT", "Thu, 29 Feb 1900 00:00:00 GMT",
		"Sun, 06 Nov 1994 08:49:60 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"thu, 18 aug 2050 02:01:18 gmt",
	} {
		f.Add(s, int64(0))
	}
	f.Add("", int64(784111777))
	f.Add("", int64(-62135596800))
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		if fast, ok := parseIMFFixdate(s); ok {
			slow, err := http.ParseTime(withUpperGMT(s))
			if err != nil || !fast.Equal(slow) || fast.Location() != slow.Location() {
				t.Fatalf("%q: fast %v, http.ParseTime %v, %v", s, fast, slow, err)
			}
		}
		want := time.Unix(unix, 0).UTC()
		if y := want.Year(); y < 0 || y > 9999 {
			return
		}
		formatted := want.Format(http.TimeFormat)
		got, ok := parseIMFFixdate(formatted)
		if !ok || !got.Equal(want) {
			t.Fatalf("%q: got %v, %v; want %v", formatted, got, ok, want)
		}
	})
}

// TestRFC850Years: a two-digit year more than 50 years ahead is the most
// recent past year with those digits (RFC 9110 §5.6.7), whatever Go's
// fixed pivot (69) says.
func TestRFC850Years(t *testing.T) {
	for _, tc := range []struct {
		now  int
		in   string
		want int
	}{
		{2026, "Tuesday, 01-Jan-69 00:00:00 GMT", 2069},
		{2026, "Wednesday, 01-Jan-76 00:00:00 GMT", 2076},
		{2026, "Saturday, 01-Jan-77 00:00:00 GMT", 1977},
		{2026, "Sunday, 06-Nov-94 08:49:37 GMT", 1994},
		{2026, "Friday, 01-Jan-10 00:00:00 GMT", 2010},
		{2026, "Monday, 31-Dec-68 00:00:00 GMT", 2068},
		{2080, "Friday, 01-Jan-10 00:00:00 GMT", 2110},
		{2080, "Friday, 01-Jan-31 00:00:00 GMT", 2031},
		{2000, "Tuesday, 29-Feb-00 12:00:00 GMT", 2000},
	} {
		p, err := time.Parse(time.RFC850, tc.in)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(tc.now, 6, 1, 0, 0, 0, 0, time.UTC)
		if got := withFullYear(p, now); got.Year() != tc.want || got.Month() != p.Month() || got.Day() != p.Day() || got.Hour() != p.Hour() {
			t.Errorf("%q in %d: %v, want the year %d", tc.in, tc.now, got, tc.want)
		}
	}
	got, err := parseHTTPDate("Tuesday, 01-Jan-69 00:00:00 GMT")
	if want := withFullYear(time.Date(2069, 1, 1, 0, 0, 0, 0, time.UTC), time.Now()); err != nil || !got.Equal(want) {
		t.Errorf("parseHTTPDate: %v, %v; want %v", got, err, want)
	}
}

func BenchmarkParseHTTPDate(b *testing.B) {
	const date = "Sun, 06 Nov 1994 08:49:37 GMT"
	b.Run("http.ParseTime", func(b *testing.B) {
		for b.Loop() {
			_, _ = http.ParseTime(date)
		}
	})
	b.Run("parseHTTPDate", func(b *testing.B) {
		for b.Loop() {
			_, _ = parseHTTPDate(date)
		}
	})
}
