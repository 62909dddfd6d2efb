package cache

import (
	"net/http"
	"strings"
	"time"
)

// parseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7) as http.ParseTime
// does, except that it also matches the time zone's name in any case, as
// it does the day's and the month's: a cache SHOULD match dates
// case-insensitively (RFC 9111 §4.2), and "gmt" is no less clear than
// "jan". The preferred form, IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
// GMT"), which is what origins send, is read directly; time.Parse costs
// several hundred nanoseconds on every stored miss, and the rest goes to
// http.ParseTime.
func parseHTTPDate(s string) (time.Time, error) {
	if t, ok := parseIMFFixdate(s); ok {
		return t, nil
	}
	s = withUpperGMT(s)
	if t, err := time.Parse(time.RFC850, s); err == nil {
		return withFullYear(t, time.Now()), nil
	}
	return http.ParseTime(s)
}

// withFullYear returns t, parsed from an rfc850-date's two-digit year,
// in the year RFC 9110 §5.6.7 reads it as at now: the one with those
// digits no more than 50 years after now's, and less than 50 before (Go
// reads 69 to 99 as 1969 to 1999 whatever the date: a review saw
// "Expires: Tuesday, 01-Jan-69 …" read as 1969 in 2026).
func withFullYear(t, now time.Time) time.Time {
	y := now.Year() - now.Year()%100 + t.Year()%100
	switch {
	case y > now.Year()+50:
		y -= 100
	case y <= now.Year()-50:
		y += 100 // (from 2051 on: the year, not the century past)
	}
	return time.Date(y, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

// withUpperGMT returns s with a final " GMT" in any case spelt in upper
// case, which is how time.Parse needs it.
func withUpperGMT(s string) string {
	if n := len(s) - len(" GMT"); n >= 0 && strings.EqualFold(s[n:], " GMT") && s[n:] != " GMT" {
		return s[:n] + " GMT"
	}
	return s
}

// parseIMFFixdate reads s if it is exactly an IMF-fixdate with a valid
// calendar date and time of day, its names in any case; ok is false for
// anything else, which may still be an HTTP-date in another form.
func parseIMFFixdate(s string) (t time.Time, ok bool) {
	// Mon, 02 Jan 2006 15:04:05 GMT
	// 0123456789012345678901234567
	if len(s) != len("Mon, 02 Jan 2006 15:04:05 GMT") ||
		s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
		s[19] != ':' || s[22] != ':' || !strings.EqualFold(s[25:], " GMT") || !isDayName(s[:3]) {
		return time.Time{}, false
	}
	month := monthNumber(s[8:11])
	day, ok1 := twoDigits(s[5:7])
	year, ok2 := twoDigits(s[12:14])
	yy, ok3 := twoDigits(s[14:16])
	hour, ok4 := twoDigits(s[17:19])
	minute, ok5 := twoDigits(s[20:22])
	second, ok6 := twoDigits(s[23:25])
	if month == 0 || !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, false
	}
	year = year*100 + yy
	if day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || second > 59 {
		return time.Time{}, false
	}
	return time.Date(year, month, day, hour, minute, second, 0, time.UTC), true
}

// isDayName reports whether s (three bytes) is a day's short name, in any
// case.
func isDayName(s string) bool {
	switch lower3(s) {
	case "mon", "tue", "wed", "thu", "fri", "sat", "sun":
		return true
	}
	return false
}

// monthNumber is the month named by s (three bytes) in any case, or 0.
func monthNumber(s string) time.Month {
	switch lower3(s) {
	case "jan":
		return time.January
	case "feb":
		return time.February
	case "mar":
		return time.March
	case "apr":
		return time.April
	case "may":
		return time.May
	case "jun":
		return time.June
	case "jul":
		return time.July
	case "aug":
		return time.August
	case "sep":
		return time.September
	case "oct":
		return time.October
	case "nov":
		return time.November
	case "dec":
		return time.December
	}
	return 0
}

// lower3 returns the three bytes of s with ASCII letters in lower case.
// Setting bit 0x20 turns no byte but an upper-case letter into a
// lower-case one, so only names match.
func lower3(s string) string {
	var b [3]byte
	for i := range b {
		b[i] = s[i] | 0x20
	}
	return string(b[:])
}

func twoDigits(s string) (int, bool) {
	a, b := s[0]-'0', s[1]-'0'
	if a > 9 || b > 9 {
		return 0, false
	}
	return int(a)*10 + int(b), true
}

func daysIn(m time.Month, year int) int {
	switch m {
	case time.February:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case time.April, time.June, time.September, time.November:
		return 30
	}
	return 31
}
