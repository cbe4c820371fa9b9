package apikey

import (
	"bytes"
	"hash/crc32"
	"testing"

	"github.com/google/uuid"
)

// FuzzCheck: Check never panics, accepts only keys of the exact layout
// whose checksum matches, and returns the organization segment as a valid
// canonical UUID; Display shows only the org prefix and the checksum's end.
func FuzzCheck(f *testing.F) {
	good, _ := Generate(uuid.MustParse("0b5f5e3c-1a2b-4c3d-8e9f-0123456789ab"))
	f.Add([]byte(good))
	f.Add([]byte(good[:Len-1] + "A"))
	f.Add([]byte("sk_" + good[3:39] + "_" + good[40:]))
	f.Add([]byte(""))
	f.Add([]byte("sk_"))
	f.Add(bytes.Repeat([]byte("a"), Len))
	f.Fuzz(func(t *testing.T, key []byte) {
		org, ok := Check(key)
		if !ok {
			if org != nil {
				t.Fatalf("rejected key with an org segment %q", org)
			}
			return
		}
		if len(key) != Len || !bytes.HasPrefix(key, []byte(prefix)) || key[orgEnd] != '_' {
			t.Fatalf("accepted a key of another layout: %q", key)
		}
		id, err := uuid.ParseBytes(org)
		if err != nil || id.String() != string(org) {
			t.Fatalf("accepted org segment %q is not a canonical UUID (%v)", org, err)
		}
		var sum [4]byte
		if n, err := b64.Decode(sum[:], key[sumStart:]); err != nil || n != 4 ||
			crc32.ChecksumIEEE(key[:sumStart]) != uint32(sum[0])<<24|uint32(sum[1])<<16|uint32(sum[2])<<8|uint32(sum[3]) {
			t.Fatalf("accepted a key whose checksum does not match: %q", key)
		}
		if d := Display(string(key)); d != string(key[:orgStart+8])+"..."+string(key[Len-4:]) {
			t.Fatalf("Display(%q) = %q: more than the org prefix and the last 4 characters", key, d)
		}
	})
}
