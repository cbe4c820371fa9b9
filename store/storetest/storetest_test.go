package storetest

import "testing"

// Any non-empty CI makes a missing service a failure, as does
// BULKHEAD_REQUIRE_SERVICES; "false" or "0" turn it off.
func TestRequireServices(t *testing.T) {
	cases := []struct {
		ci, require string
		want        bool
	}{
		{"", "", false},
		{"true", "", true},
		{"1", "", true},
		{"yes", "", true},
		{"false", "", false},
		{"0", "", false},
		{"", "1", true},
		{"", "true", true},
		{"true", "0", false},
		{"", "false", false},
	}
	for _, c := range cases {
		t.Setenv("CI", c.ci)
		t.Setenv("BULKHEAD_REQUIRE_SERVICES", c.require)
		if got := RequireServices(); got != c.want {
			t.Errorf("CI=%q BULKHEAD_REQUIRE_SERVICES=%q: RequireServices() = %v, want %v", c.ci, c.require, got, c.want)
		}
	}
}
