package config

import (
	"fmt"
	"net/url"
)

// Secret is a string that must not be shown: a password-bearing DSN or a
// provider key. Every way of printing or marshalling it (fmt verbs, JSON,
// text, YAML, zap's reflection encoder) yields a redacted form; Reveal
// returns the value itself and is the only way to get it.
//
// A URL keeps its scheme, user name, host and path when redacted, which is
// enough to tell which server and role are meant; password and query are
// dropped.
type Secret string

// Reveal returns the secret value. Call it only where the value is used.
func (s Secret) Reveal() string { return string(s) }

// String returns the redacted form: "" for an empty secret, a URL without
// credentials and query, or "[redacted]".
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	if u, err := url.Parse(string(s)); err == nil && u.Scheme != "" && u.Host != "" {
		r := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
		if u.User != nil {
			r.User = url.User(u.User.Username()) // the role name helps operators and is no secret
		}
		return r.String()
	}
	return "[redacted]"
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %q) print the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	fmt.Fprint(f, s.String())
}

// MarshalText redacts; it also serves JSON and YAML encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML redacts.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }
