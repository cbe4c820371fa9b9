package spool

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// SyncPolicy says when appended frames are forced to stable storage.
type SyncPolicy int

const (
	// SyncBatch (the zero value, the default): Append returns only after an
	// fsync that covers its frames — one fsync per call, shared by calls
	// made at the same time (group commit) — and the directory is fsynced
	// when a segment file is created. A payload whose Append returned nil
	// survives a crash of the process and of the machine.
	SyncBatch SyncPolicy = iota
	// SyncNever leaves flushing to the operating system. A crash of the
	// process loses nothing that Append accepted (the data is in the page
	// cache); a crash of the machine can lose the last seconds, and Open
	// then truncates the torn tail.
	SyncNever
	// SyncInterval is SyncNever plus an fsync every Options.SyncEvery (and
	// when a segment is sealed or created) on a goroutine of the Spool's
	// own: a crash of the machine loses at most about SyncEvery of
	// appends, and Append never waits for the disk.
	SyncInterval
)

// String names the policy as configuration spells it.
func (p SyncPolicy) String() string {
	switch p {
	case SyncBatch:
		return "batch"
	case SyncNever:
		return "never"
	case SyncInterval:
		return "interval"
	}
	return "SyncPolicy(" + strconv.Itoa(int(p)) + ")"
}

// ParseSyncPolicy parses "batch" (or ""), "interval" and "never".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch strings.ToLower(s) {
	case "", "batch":
		return SyncBatch, nil
	case "interval":
		return SyncInterval, nil
	case "never":
		return SyncNever, nil
	}
	return 0, fmt.Errorf("spool: unknown sync policy %q (want batch, interval or never)", s)
}

// syncLoop is SyncInterval's goroutine: an fsync of what was appended
// since the last one, every SyncEvery, until Close.
func (s *Spool) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.opts.SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopSync:
			return
		case <-t.C:
			if err := s.Sync(); err != nil && !errors.Is(err, ErrClosed) {
				return // the spool is broken: Append reports it from now on
			}
		}
	}
}

// Sync forces every frame appended so far to stable storage (SyncBatch
// and SyncInterval; with SyncNever it does nothing). A failed fsync breaks
// the spool, as in Append.
func (s *Spool) Sync() error {
	if s.opts.Sync == SyncNever {
		return nil
	}
	s.mu.Lock()
	gen := s.written
	s.mu.Unlock()
	return s.syncTo(gen)
}

func (s *Spool) syncFile(path string) error {
	if s.opts.Sync == SyncNever {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spool: syncing %s: %w", path, err)
	}
	return nil
}

// syncTo returns once the write of generation gen is on stable storage.
// One caller at a time fsyncs the active segment, covering every write
// made before it; the callers that queued behind it find their write
// covered and return at once. (A sealed segment was fsynced when sealed.)
//
// The fsync runs without s.mu: appends go on into the page cache while
// the disk works (a later fsync covers them), so a slow fsync — seconds,
// on a disk busy with other writes — never holds up the request that
// appends to the journal meanwhile. If the segment is sealed during the
// fsync, sealing fsynced it (or broke the spool) under s.mu.
func (s *Spool) syncTo(gen uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.synced >= gen {
		return nil
	}
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	target, f := s.written, s.active
	s.mu.Unlock()
	if f != nil {
		if err := s.opts.fsync(f); err != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.broken == nil && (s.active == f || !errors.Is(err, os.ErrClosed)) {
				s.breakLocked(err)
			}
			if s.broken != nil {
				return s.broken
			}
			// f was sealed and closed meanwhile, and sealing fsynced it.
		}
	}
	s.synced = target
	return nil
}

// breakLocked marks the spool broken after a failed fsync.
func (s *Spool) breakLocked(err error) {
	s.broken = fmt.Errorf("spool: fsync failed, the spool takes no more appends: %w", err)
	s.log.Error("spool: fsync failed; refusing further appends until reopened", zap.Error(err))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: syncing %s: %w", dir, err)
	}
	return nil
}
