package main

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
)

// controlShutdown bounds the control plane's drain: its requests are
// short database work.
const controlShutdown = 5 * time.Second

// controlCmd serves the control plane alone, for deployments whose
// gateways must not hold the owner role's DSN (the Kubernetes fleet sets
// BULKHEAD_CONTROL_LISTEN empty): the same server `serve` runs on
// BULKHEAD_CONTROL_LISTEN, with no OpenAI-compatible API beside it.
func controlCmd(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "control")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	if cfg.ControlListen == "" {
		return errors.New("control: BULKHEAD_CONTROL_LISTEN is empty; give the control plane an address")
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync fails on terminals; nothing to do about it
	routeRedisLog(log)
	st, err := store.Open(ctx, cfg.DatabaseURL.Reveal(), store.Options{MaxConns: 4, Lazy: true,
		TransactionScopedStatements: !cfg.DatabasePreparedStatements})
	if err != nil {
		return err
	}
	defer st.Close()
	var ao auth.Options
	if cfg.RedisURL != "" {
		rdb, err := newRedis(cfg)
		if err != nil {
			return err
		}
		defer rdb.Close()
		ao.Redis = rdb
	}
	if ao.JWT, err = jwtVerifier(cfg); err != nil {
		return err
	}
	ctl, ln, err := controlPlane(ctx, cfg, st, ao, log)
	if err != nil {
		return err
	}
	defer ctl.admin.Close()
	log.Info("control plane", zap.String("listen", ln.Addr().String()))
	done := make(chan error, 1)
	go func() { done <- ctl.srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), controlShutdown)
	defer cancel()
	err = ctl.srv.Shutdown(sctx)
	if serr := <-done; err == nil {
		err = serr
	}
	return err
}
