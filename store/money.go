package store

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MicroUSD is an amount of US dollars in millionths, exact: prices (per
// million tokens) and costs are never floats.
type MicroUSD int64

// MaxPrice is the highest price per million tokens the catalog takes
// ($100,000; the models table checks it too): anything above is a typo.
const MaxPrice MicroUSD = 100_000 * 1_000_000

// ParseUSD reads a non-negative decimal amount of dollars such as "0.15",
// "2" or "0.000125", with at most six decimal places (a micro-dollar).
func ParseUSD(s string) (MicroUSD, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" && (!dot || frac == "") {
		return 0, fmt.Errorf("%q is not an amount of US dollars (like 0.15)", s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("%q has more than 6 decimal places (a millionth of a dollar)", s)
	}
	for _, part := range []string{whole, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				if strings.HasPrefix(s, "-") {
					return 0, fmt.Errorf("%q is negative", s)
				}
				return 0, fmt.Errorf("%q is not an amount of US dollars (like 0.15)", s)
			}
		}
	}
	if len(strings.TrimLeft(whole, "0")) > 12 {
		return 0, errors.New("amount too large")
	}
	w := int64(0)
	if whole != "" {
		var err error
		if w, err = strconv.ParseInt(whole, 10, 64); err != nil {
			return 0, fmt.Errorf("%q: %w", s, err)
		}
	}
	f := int64(0)
	if frac != "" {
		frac += strings.Repeat("0", 6-len(frac))
		f, _ = strconv.ParseInt(frac, 10, 64) // six digits, checked above
	}
	return MicroUSD(w*1_000_000 + f), nil
}

// String writes m as decimal dollars with no trailing zeros: "0.15", "2",
// "0.000125", "-1.5".
func (m MicroUSD) String() string {
	var b [24]byte
	return string(m.Append(b[:0]))
}

// Append appends m to dst as String writes it, without allocating (the
// gateway writes budget headers with it on every request).
func (m MicroUSD) Append(dst []byte) []byte {
	u := uint64(m)
	if m < 0 {
		dst = append(dst, '-')
		u = -u // two's complement: right for math.MinInt64 too
	}
	dst = strconv.AppendUint(dst, u/1_000_000, 10)
	frac := u % 1_000_000
	if frac == 0 {
		return dst
	}
	var b [6]byte
	for i := 5; i >= 0; i-- {
		b[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := 6
	for b[n-1] == '0' {
		n--
	}
	return append(append(dst, '.'), b[:n]...)
}

// MarshalJSON writes m as decimal text ("0.15"): JSON numbers are floats
// to most readers.
func (m MicroUSD) MarshalJSON() ([]byte, error) { return []byte(`"` + m.String() + `"`), nil }

// UnmarshalJSON reads what MarshalJSON writes (decimal text; a JSON
// number is refused, as a float would be inexact). Negative amounts read
// too: a MicroUSD may be a difference.
func (m *MicroUSD) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("an amount of US dollars must be decimal text, got %s", b)
	}
	neg := strings.HasPrefix(s, "-")
	v, err := ParseUSD(strings.TrimPrefix(s, "-"))
	if err != nil {
		return err
	}
	if neg {
		v = -v
	}
	*m = v
	return nil
}
