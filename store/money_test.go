package store

import "testing"

func TestParseUSD(t *testing.T) {
	good := map[string]MicroUSD{
		"0": 0, "0.15": 150_000, "2": 2_000_000, "2.": 2_000_000, ".5": 500_000, "0.000125": 125,
		"100000": 100_000_000_000, "007.10": 7_100_000,
	}
	for in, want := range good {
		got, err := ParseUSD(in)
		if err != nil || got != want {
			t.Errorf("ParseUSD(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, _ := ParseUSD(got.String()); back != got {
			t.Errorf("%q: String %q does not read back", in, got.String())
		}
	}
	for _, in := range []string{"", ".", "-1", "-0.5", "1e3", "0.0000001", "1,5", " 1", "NaN", "1.2.3", "9999999999999999999"} {
		if got, err := ParseUSD(in); err == nil {
			t.Errorf("ParseUSD(%q) = %d, want an error", in, got)
		}
	}
	for m, want := range map[MicroUSD]string{0: "0", 150_000: "0.15", 125: "0.000125", -1_500_000: "-1.5", 3_000_000: "3",
		-9223372036854775808: "-9223372036854.775808", 9223372036854775807: "9223372036854.775807", 1_000_010: "1.00001"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", m, got, want)
		}
		if got := string(m.Append([]byte("x"))); got != "x"+want {
			t.Errorf("%d.Append = %q, want %q", m, got, "x"+want)
		}
	}
}
