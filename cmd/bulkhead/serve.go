package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
)

func serveCmd(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "serve")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path, e.lookup)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync fails on terminals; nothing to do about it

	st, err := store.Open(ctx, cfg.DatabaseURL.Reveal(), store.Options{MaxConns: cfg.DatabaseMaxConns})
	if err != nil {
		// Start anyway: keys cached in Redis keep working, the rest gets 503.
		log.Warn("PostgreSQL is unreachable; starting without it", zap.Error(err))
		if st, err = store.Open(ctx, cfg.DatabaseURL.Reveal(), store.Options{MaxConns: cfg.DatabaseMaxConns, Lazy: true}); err != nil {
			return err
		}
	}
	defer st.Close()

	authOpts := auth.Options{
		Store: st, Log: log,
		CacheTTL: cfg.AuthCacheTTL, CacheSize: cfg.AuthCacheSize,
		NegativeTTL: cfg.AuthNegativeCacheTTL, NegativeSize: cfg.AuthNegativeCacheSize,
		RedisTTL: cfg.AuthRedisTTL, RedisTimeout: cfg.RedisTimeout,
	}
	if cfg.RedisURL != "" {
		rdb, err := newRedis(cfg)
		if err != nil {
			return err
		}
		defer rdb.Close()
		authOpts.Redis = rdb
	} else {
		log.Info("no Redis configured: single-instance mode (in-process key cache; revocations apply within BULKHEAD_AUTH_CACHE_TTL)")
	}
	if authOpts.JWT, err = jwtVerifier(cfg); err != nil {
		return err
	}
	authn, err := auth.New(authOpts)
	if err != nil {
		return err
	}

	srv, err := gateway.New(cfg, log, gateway.Deps{Auth: authn, Recorder: accessOnly{}, Prompts: st})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	log.Info("serving", zap.String("listen", ln.Addr().String()), zap.String("upstream", cfg.UpstreamURL),
		zap.Int("routes", len(cfg.Upstreams)))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ln) })
	g.Go(func() error { return authn.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", zap.Duration("drain", cfg.ShutdownTimeout))
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// jwtVerifier builds the JWT verifier the configuration asks for, or nil.
func jwtVerifier(cfg config.Config) (*auth.JWTVerifier, error) {
	if cfg.JWTHS256Secret == "" && cfg.JWTPublicKeyFile == "" {
		return nil, nil
	}
	jc := auth.JWTConfig{
		HS256Secret: []byte(cfg.JWTHS256Secret.Reveal()), Issuer: cfg.JWTIssuer,
		Audience: cfg.JWTAudience, Leeway: cfg.JWTLeeway,
	}
	if cfg.JWTPublicKeyFile != "" {
		b, err := os.ReadFile(cfg.JWTPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("BULKHEAD_JWT_PUBLIC_KEY_FILE: %w", err)
		}
		jc.PublicKeyPEM = b
	}
	v, err := auth.NewJWTVerifier(jc)
	if err != nil {
		return nil, fmt.Errorf("JWT configuration: %w", err)
	}
	return v, nil
}

// newLogger builds the process logger from the log settings.
func newLogger(cfg config.Config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("BULKHEAD_LOG_LEVEL: %w", err)
	}
	zc := zap.NewProductionConfig()
	if cfg.LogFormat == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.DisableStacktrace = true // stack traces help us, not operators; errors carry context
	zc.Sampling = nil
	return zc.Build()
}
