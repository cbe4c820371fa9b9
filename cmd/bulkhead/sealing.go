package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/seal"
)

// parseSeal reads --seal: on, off, or empty (the default: on when a KEK
// is configured).
func parseSeal(v string) (*bool, error) {
	switch v {
	case "":
		return nil, nil
	case "on", "off":
		on := v == "on"
		return &on, nil
	}
	return nil, fmt.Errorf("--seal must be on or off, got %q", v)
}

// useKEK loads the configured KEK, checks it against the one recorded by
// key-encryption init, and gives it to a. Without a configured KEK it
// returns false (and, when required, an error).
func useKEK(ctx context.Context, a *store.Admin, cfg config.Config, required bool) (bool, error) {
	kek, err := cfg.SealKEK()
	if err != nil {
		return false, err
	}
	if kek == nil {
		if required {
			return false, store.ErrNoKEK
		}
		return false, nil
	}
	if err := a.VerifyKEK(ctx, kek); err != nil {
		return false, err
	}
	a.UseKEK(kek)
	return true, nil
}

// orgRekey gives an organization a new data key.
func orgRekey(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org rekey")
	id, err := parseOneID(fs, args, "usage: bulkhead org rekey ID")
	if err != nil {
		return err
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		if _, err := useKEK(ctx, a, cfg, true); err != nil {
			return fmt.Errorf("org rekey: %w", err)
		}
		n, err := a.RekeyOrg(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("org rekey: organization %s has no data key (not sealed, or no such organization)", id)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "organization %s: new rows are sealed with a new data key (%d keys; older rows stay readable); running gateways take it up within BULKHEAD_SEAL_KEY_CACHE_TTL (%s)\n",
			id, n, cfg.SealKeyCacheTTL)
		return nil
	})
}

func keyEncryptionCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead key-encryption init|rotate")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "init":
		return kekInit(ctx, e, args)
	case "rotate":
		return kekRotate(ctx, e, args)
	default:
		return fmt.Errorf("unknown key-encryption command %q: want init or rotate", sub)
	}
}

// kekInit creates the KEK file if BULKHEAD_SEAL_KEYSET_FILE names none
// yet (or takes the configured keyset as it is), and records its check in
// the database, which `serve` verifies at start from then on.
func kekInit(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key-encryption init")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	var kek seal.KEK
	switch {
	case cfg.SealKeysetFile != "":
		if _, err := os.Stat(cfg.SealKeysetFile); errors.Is(err, os.ErrNotExist) {
			k, err := seal.NewLocalKEK()
			if err != nil {
				return err
			}
			if err := k.WriteFile(cfg.SealKeysetFile); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote a new key-encryption keyset to %s (mode 0600): keep a copy where the database's backups are not\n", cfg.SealKeysetFile)
		}
		if kek, err = cfg.SealKEK(); err != nil {
			return err
		}
	case cfg.SealKeyset != "":
		if kek, err = cfg.SealKEK(); err != nil {
			return err
		}
	default:
		return errors.New("key-encryption init: set BULKHEAD_SEAL_KEYSET_FILE (created if missing) or BULKHEAD_SEAL_KEYSET")
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		created, err := a.InitKEK(ctx, kek)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(e.stdout, "recorded key-encryption key %d: gateways now refuse to start without it; new organizations are sealed by default\n", kek.KeyID())
		} else {
			fmt.Fprintf(e.stdout, "key-encryption key %d was already recorded\n", kek.KeyID())
		}
		return nil
	})
}

// kekRotate replaces the KEK: a new key is added to the keyset file as its
// primary (the old ones kept, so gateways, which re-read the file when a
// data key does not unwrap, read both), every data key is re-wrapped under
// it, the check is recorded under it, and the old keys are removed from
// the file (unless --keep-old). Rows are not touched. A backup taken
// before the rotation needs the old keyset to be read: with the old keys
// gone, an organization deleted before the rotation is unreadable in it.
func kekRotate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key-encryption rotate")
	keepOld := fs.Bool("keep-old", false, "keep the old keys in the keyset file (backups taken before the rotation stay readable with it)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		if cfg.SealKeysetFile == "" {
			return errors.New("key-encryption rotate: rewrites the keyset file: set BULKHEAD_SEAL_KEYSET_FILE (with BULKHEAD_SEAL_KEYSET, write it to a file first, rotate, and give the gateways the new one)")
		}
		old, err := seal.LoadLocalKEK(cfg.SealKeysetFile)
		if err != nil {
			return err
		}
		if err := a.VerifyKEK(ctx, old); err != nil {
			return fmt.Errorf("key-encryption rotate: %w", err)
		}
		rotated, err := old.Rotated()
		if err != nil {
			return err
		}
		if err := rotated.WriteFile(cfg.SealKeysetFile); err != nil {
			return err
		}
		n, err := a.RewrapAll(ctx, rotated)
		if err != nil {
			return fmt.Errorf("key-encryption rotate: %w (the keyset file holds the old and the new keys: run it again)", err)
		}
		left, err := a.WrappedUnder(ctx, rotated.KeyID())
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "re-wrapped the data keys of %d organizations under key-encryption key %d\n", n, rotated.KeyID())
		if *keepOld || left > 0 {
			if left > 0 {
				fmt.Fprintf(e.stdout, "%d organizations' keys were added meanwhile under an old key: run it again\n", left)
			}
			fmt.Fprintf(e.stdout, "the old keys stay in %s\n", cfg.SealKeysetFile)
			return nil
		}
		retired, err := rotated.PrimaryOnly()
		if err != nil {
			return err
		}
		if err := retired.WriteFile(cfg.SealKeysetFile); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed the old keys from %s: backups taken before now need the old keyset\n", cfg.SealKeysetFile)
		return nil
	})
}
