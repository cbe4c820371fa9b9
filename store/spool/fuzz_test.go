package spool

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// frame builds one well-formed frame around p.
func frame(p []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(p)))
	b = binary.LittleEndian.AppendUint32(b, crc32c(p))
	return append(b, p...)
}

// FuzzRecover: whatever bytes a crash or a bad disk leaves in the newest
// segment, Open recovers without error or panic, keeps exactly the intact
// frames before the first bad one (their payloads byte for byte, with
// matching CRCs), truncates the rest, recovers the same again on the next
// Open, and appends after them.
func FuzzRecover(f *testing.F) {
	two := append(frame([]byte("first")), frame([]byte("second"))...)
	f.Add(two)
	f.Add(append(two, 0, 0, 0))
	f.Add(append(two, frame([]byte("torn"))[:7]...))
	bad := frame([]byte("crc"))
	bad[4] ^= 1
	f.Add(append(frame([]byte("ok")), bad...))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "00000000000000000001.seg"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		replay := func() [][]byte {
			s, err := Open(dir, Options{Sync: SyncNever})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			var got [][]byte
			if err := s.Replay(func(p []byte) error { got = append(got, bytes.Clone(p)); return nil }); err != nil {
				t.Fatalf("Replay: %v", err)
			}
			return got
		}
		got := replay()
		off := 0
		for i, p := range got {
			want := frame(p)
			if !bytes.Equal(data[off:off+len(want)], want) {
				t.Fatalf("payload %d is not the intact frame at offset %d", i, off)
			}
			off += len(want)
		}
		if st, err := os.Stat(filepath.Join(dir, "00000000000000000001.seg")); err != nil || st.Size() != int64(off) {
			t.Fatalf("newest segment not truncated to its %d intact bytes: %v %v", off, st, err)
		}
		if again := replay(); len(again) != len(got) {
			t.Fatalf("second recovery: %d payloads, first %d", len(again), len(got))
		}
		s, err := Open(dir, Options{Sync: SyncNever})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Append([]byte("after")); err != nil {
			t.Fatal(err)
		}
		var last []byte
		s.Replay(func(p []byte) error { last = bytes.Clone(p); return nil }) //nolint:errcheck // checked through last
		s.Close()
		if string(last) != "after" {
			t.Fatalf("the append after recovery replays as %q", last)
		}
	})
}
