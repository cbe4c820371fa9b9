package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
	"github.com/bulkheadhq/bulkhead/gateway/control"
	"github.com/bulkheadhq/bulkhead/gateway/memory"
	"github.com/bulkheadhq/bulkhead/gateway/telemetry"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
)

// budgets sets deps.Budgets: dollar budgets, enforced from the budgets
// and costs in PostgreSQL in counters shared by the replicas (Redis's;
// PostgreSQL's without Redis, and while Redis is unreachable), with the
// soft-threshold webhook when configured, and returns the loops to run
// (the enforcer's reconciliations, the webhook's deliveries).
func budgets(cfg config.Config, st *store.Store, rdb redis.UniversalClient, reg prometheus.Registerer, log *zap.Logger, deps *gateway.Deps) ([]gateway.Loop, error) {
	if rdb == nil {
		log.Info("dollar budgets are counted in PostgreSQL (no BULKHEAD_REDIS_URL): a transaction per lease instead of a Redis call")
	}
	var n *budget.Notifier
	if cfg.BudgetWebhookURL != "" {
		n = budget.NewNotifier(budget.NotifierOptions{URL: cfg.BudgetWebhookURL, Secret: []byte(cfg.BudgetWebhookSecret.Reveal()),
			Log: log.Named("budget"), Metrics: reg})
	}
	enf, err := budget.New(budget.Options{Source: st, Redis: rdb, Counters: st, RedisTimeout: cfg.RedisTimeout, Notifier: n, Log: log.Named("budget"), Metrics: reg})
	if err != nil {
		return nil, err
	}
	deps.Budgets = enf
	loops := []gateway.Loop{{Name: "budgets", Run: func(ctx context.Context) error { enf.Run(ctx); return nil }}}
	if n != nil {
		loops = append(loops, gateway.Loop{Name: "budget-webhook", Run: func(ctx context.Context) error { n.Run(ctx); return nil }})
	}
	return loops, nil
}

func serveCmd(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "serve")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync fails on terminals; nothing to do about it
	routeRedisLog(log)
	if limit := cfg.MemoryLimitBytes(); limit > 0 {
		// Process-wide: put back what was there (GOMEMLIMIT's, or none)
		// when serve returns, for the tests that run it in process.
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(limit))
		log.Info("memory limit set", zap.String("limit", cfg.MemoryLimit))
	}

	kek, err := cfg.SealKEK()
	if err != nil {
		return err
	}
	dbOpts := store.Options{MaxConns: cfg.DatabaseMaxConns, TransactionScopedStatements: !cfg.DatabasePreparedStatements,
		Seal: store.SealOptions{KEK: kek, KeyCacheTTL: cfg.SealKeyCacheTTL, KeyCacheSize: cfg.SealKeyCacheSize}}
	st, err := store.Open(ctx, cfg.DatabaseURL.Reveal(), dbOpts)
	if err == nil {
		// A gateway that could neither seal nor read sealed rows must not
		// start. While PostgreSQL is unreachable this cannot be checked;
		// the writer then refuses (spools) what it cannot seal.
		if err := st.CheckKEK(ctx); errors.Is(err, store.ErrKEKMissing) || errors.Is(err, store.ErrKEKWrong) {
			st.Close()
			return err
		} else if err != nil {
			log.Warn("could not check the key-encryption key", zap.Error(err))
		}
	} else {
		// Start anyway: keys cached in Redis keep working, the rest gets 503.
		log.Warn("PostgreSQL is unreachable; starting without it", zap.Error(err))
		dbOpts.Lazy = true
		if st, err = store.Open(ctx, cfg.DatabaseURL.Reveal(), dbOpts); err != nil {
			return err
		}
	}
	defer st.Close()
	st.UseTargets(cfg.Targets(), store.TargetPoolOptions{MaxConns: max(cfg.DatabaseMaxConns/4, 2)})
	for _, t := range cfg.Targets() {
		// A target whose runtime role could escape RLS refuses the start;
		// one that cannot be reached now only delays its tenants' records.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := store.CheckTarget(cctx, t)
		cancel()
		if errors.Is(err, store.ErrTargetRole) {
			return err
		} else if err != nil {
			log.Warn("a database target could not be checked; its tenants' records wait in its spool", zap.String("target", t.Name), zap.Error(err))
		}
	}

	authOpts := auth.Options{
		Store: st, Log: log,
		CacheTTL: cfg.AuthCacheTTL, CacheSize: cfg.AuthCacheSize,
		NegativeTTL: cfg.AuthNegativeCacheTTL, NegativeSize: cfg.AuthNegativeCacheSize,
		RedisTTL: cfg.AuthRedisTTL, RedisTimeout: cfg.RedisTimeout,
		JWTRateLimitPerMinute: cfg.JWTRateLimitPerMinute, JWTTokensPerMinute: cfg.JWTTokensPerMinute,
		FailuresPerMinutePerAddress: cfg.AuthFailuresPerMinutePerAddress, FailuresPerMinutePerOrg: cfg.AuthFailuresPerMinutePerOrg,
		// A move's switches reach the writer's and the read API's cached
		// placements at once (store.MoveOptions.Notify).
		OrgChanged: func(org uuid.UUID) {
			if org == uuid.Nil {
				st.InvalidatePlacements()
			} else {
				st.InvalidatePlacement(org)
			}
		},
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
	authOpts.Failures = failureLimiter(cfg, authOpts.Redis, log)
	authn, err := auth.New(authOpts)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	releaser := memory.New(memory.Options{Quiet: cfg.MemoryReturnAfter, Log: log.Named("memory")})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), authn, releaser)
	wopts := store.WriterOptions{SpoolDir: cfg.SpoolDir, SpoolMaxBytes: cfg.SpoolMaxBytes, Fsync: cfg.SpoolSyncPolicy(), Log: log.Named("requestlog")}
	writer, err := store.NewWriter(st, wopts)
	if err != nil {
		return fmt.Errorf("request log (BULKHEAD_SPOOL_DIR): %w", err)
	}
	reg.MustRegister(writer, st.SealCollector())
	var rec interface {
		Record(store.LogRecord)
		Admit() error
	} = writer
	if !cfg.RequestLog {
		log.Warn("BULKHEAD_REQUEST_LOG=false: requests are not written to PostgreSQL")
		rec = noLog{}
	}

	checks := []gateway.Check{{Name: "postgres", Probe: st.Ping}, {Name: "log", Probe: func(context.Context) error { return writer.Admit() }}}
	for _, name := range st.TargetNames() {
		// Reported, not deciding readiness: a target down concerns its
		// own tenants, whose records wait in its spool.
		checks = append(checks, gateway.Check{Name: "database:" + name, Probe: func(ctx context.Context) error { return st.PingTarget(ctx, name) }})
	}
	if authOpts.Redis != nil {
		rdb := authOpts.Redis
		checks = append(checks, gateway.Check{Name: "redis", Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }})
	}
	// Ready while keys can be verified (PostgreSQL or Redis answers) and the
	// request log can take records.
	health := gateway.NewHealth(reg, func(up map[string]bool) bool { return (up["postgres"] || up["redis"]) && up["log"] }, checks...)

	limOpts := ratelimit.Options{Timeout: cfg.RedisTimeout, Lease: cfg.RateLimitLease, Log: log.Named("ratelimit")}
	if cfg.RateLimitFailClosed {
		limOpts.FailMode = ratelimit.FailClosed
	}
	var lim *ratelimit.Limiter
	if authOpts.Redis != nil {
		lim = ratelimit.New(authOpts.Redis, limOpts)
	} else {
		lim = ratelimit.New(nil, limOpts)
	}

	models, err := catalog.New(catalog.Options{Source: st, Redis: authOpts.Redis, TTL: cfg.ModelCacheTTL,
		DefaultAllow: cfg.ModelAccessDefault == config.ModelAccessAll, Log: log})
	if err != nil {
		return err
	}
	deps := gateway.Deps{Auth: authn, Recorder: rec, Prompts: st, Limiter: lim, Catalog: models, Metrics: reg}
	tp, err := telemetry.New(ctx, cfg, buildVersion())
	if err != nil {
		return err
	}
	if tp != nil {
		// The SDK's export errors (a collector down) go to our log, once
		// each, not to the standard logger.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", zap.Error(err)) }))
		deps.Tracer = tp
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil { // flushes the batched spans
				log.Warn("opentelemetry shutdown", zap.Error(err))
			}
		}()
		log.Info("tracing on: spans exported by OTLP", zap.Bool("tenant_attribute", cfg.OTelTenantAttribute))
	}
	budgetLoops, err := budgets(cfg, st, authOpts.Redis, reg, log, &deps)
	if err != nil {
		return err
	}
	srv, err := gateway.New(cfg, log, deps)
	if err != nil {
		return err
	}
	health.Report(srv.UpstreamStates)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listening on %s: %w", cfg.AdminListen, err)
	}
	ctl, ctlLn, err := controlPlane(ctx, cfg, st, authOpts, log)
	if err != nil {
		ln.Close()
		adminLn.Close()
		return err
	}
	if ctl != nil {
		defer ctl.admin.Close()
		log.Info("control plane", zap.String("listen", ctlLn.Addr().String()))
	}
	log.Info("serving", zap.String("listen", ln.Addr().String()), zap.String("admin", adminLn.Addr().String()),
		zap.String("upstream", cfg.UpstreamURL), zap.Int("routes", len(cfg.Upstreams)))

	loops := []gateway.Loop{
		{Name: "auth", Run: authn.Run},     // invalidation events
		{Name: "catalog", Run: models.Run}, // the model catalog's invalidation events
		{Name: "health", Run: health.Run},
		{Name: "ratelimit", Run: lim.Run}, // heartbeats count the replicas that share the fallback
	}
	loops = append(loops, budgetLoops...)
	if cfg.MemoryReturnAfter > 0 {
		loops = append(loops, gateway.Loop{Name: "memory", Run: releaser.Run}) // a burst's heap back to the OS
	}
	if cfg.RetentionInterval > 0 {
		loops = append(loops, gateway.Loop{Name: "retention", Run: func(ctx context.Context) error {
			return st.RunRetention(ctx, cfg.RetentionInterval, log.Named("retention"))
		}})
	}

	// On SIGTERM (ctx done) Run stops in order: not ready, grace, drain,
	// then the request log's flush; see gateway.Run.
	p := gateway.Process{
		API: srv, Listener: ln,
		Admin: gateway.AdminHandler(health, reg), AdminListener: adminLn,
		Health:     health,
		RequestLog: writer.Run,
		Loops:      loops,
		Grace:      cfg.ShutdownGrace, Drain: cfg.ShutdownTimeout,
		Log: log,
	}
	if ctl != nil {
		p.Control, p.ControlListener = ctl.srv, ctlLn
	}
	return gateway.Run(ctx, p)
}

// controlServer is the control plane as serve runs it.
type controlServer struct {
	srv   *control.Server
	admin *store.Admin
}

// controlPlane builds the control plane on BULKHEAD_CONTROL_LISTEN, or
// nothing when it is empty: then serve holds no owner connection. Its
// operators act as the owner role, tenant administrators as the app role
// (st), and key changes reach the gateways through Redis when there is one.
func controlPlane(ctx context.Context, cfg config.Config, st *store.Store, ao auth.Options, log *zap.Logger) (*controlServer, net.Listener, error) {
	if cfg.ControlListen == "" {
		return nil, nil, nil
	}
	admin, err := store.OpenAdminLazy(ctx, cfg.AdminDatabaseURL.Reveal(), "control", 4)
	if err != nil {
		return nil, nil, fmt.Errorf("control plane (BULKHEAD_ADMIN_DATABASE_URL): %w", err)
	}
	admin.UseTargets(cfg.Targets())
	// Organizations created over HTTP are sealed by default when a KEK is
	// configured, as with org create, once it matches the database's
	// record: a wrong one refuses to start, and one that cannot be checked
	// yet (PostgreSQL down) is not used: organizations are then created
	// unsealed and asking for sealing is refused.
	kek, err := cfg.SealKEK()
	if err == nil && kek != nil {
		if err = admin.VerifyKEK(ctx, kek); err == nil {
			admin.UseKEK(kek)
		} else if !errors.Is(err, store.ErrKEKWrong) {
			log.Warn("control plane: the key-encryption key could not be checked; creating organizations unsealed", zap.Error(err))
			err = nil
		}
	}
	if err != nil {
		admin.Close()
		return nil, nil, err
	}
	opts := control.Options{Admin: admin, Store: st, JWT: ao.JWT, Upstreams: cfg.UpstreamNames(),
		SessionTTL: cfg.ControlSessionTTL, Log: log.Named("control")}
	if ao.Redis != nil {
		opts.Notify = control.RedisNotifier(ao.Redis, cfg.AuthRedisTTL)
		opts.Sessions = ao.Redis // console sessions shared by the replicas, kept across restarts
	}
	// Refused credentials are counted apart from the data plane's failed
	// API keys, in Redis when there is one (ao.Redis nil: in process).
	opts.Failures = ratelimit.New(ao.Redis, ratelimit.Options{Prefix: controlFailurePrefix, Timeout: cfg.RedisTimeout,
		FailMode: ratelimit.FailLocal, Log: log.Named("controlfail")})
	opts.FailuresPerMinutePerAddress, opts.FailuresPerMinutePerPrefix = cfg.ControlFailuresPerMinutePerAddress, cfg.ControlFailuresPerMinutePerPrefix
	srv, err := control.New(opts)
	if err == nil {
		var ln net.Listener
		if ln, err = net.Listen("tcp", cfg.ControlListen); err == nil {
			return &controlServer{srv: srv, admin: admin}, ln, nil
		}
		err = fmt.Errorf("listening on %s (BULKHEAD_CONTROL_LISTEN): %w", cfg.ControlListen, err)
	}
	admin.Close()
	return nil, nil, err
}

// authFailurePrefix starts the Redis keys of the failed-authentication
// budgets, apart from the per-key limits'.
const authFailurePrefix = "bulkhead:authfail"

// controlFailurePrefix starts the Redis keys of the control listener's
// failure budgets.
const controlFailurePrefix = "bulkhead:ctlfail"

// failureLimiter holds the budgets of failed API-key look-ups, shared
// through rdb (nil: in process). It always falls back to the local
// limiter while Redis is down, whatever BULKHEAD_RATE_LIMIT_FAIL_CLOSED
// says: refusing every uncached key would be worse than each replica
// throttling on its own.
func failureLimiter(cfg config.Config, rdb redis.UniversalClient, log *zap.Logger) *ratelimit.Limiter {
	return ratelimit.New(rdb, ratelimit.Options{Prefix: authFailurePrefix, Timeout: cfg.RedisTimeout,
		FailMode: ratelimit.FailLocal, Log: log.Named("authfail")})
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
	console := cfg.LogFormat == "console"
	zc := zap.NewProductionConfig()
	if console {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.DisableStacktrace = true // stack traces help us, not operators; errors carry context
	zc.Sampling = nil
	if console {
		return zc.Build() // someone is watching: every line at once
	}
	// A write(2) per access line is a cost at saturation (make bench:
	// the gateway's CPU per request), so JSON lines are buffered up to
	// 256 KiB and written at least every second; serve's deferred Sync
	// flushes the rest at exit.
	out := &zapcore.BufferedWriteSyncer{WS: zapcore.Lock(os.Stderr), Size: 256 << 10, FlushInterval: time.Second}
	return zc.Build(zap.WrapCore(func(zapcore.Core) zapcore.Core {
		return zapcore.NewCore(zapcore.NewJSONEncoder(zc.EncoderConfig), out, zc.Level)
	}))
}

// noLog is the request log switched off (BULKHEAD_REQUEST_LOG=false).
type noLog struct{}

func (noLog) Record(store.LogRecord) {}
func (noLog) Admit() error           { return nil }

// buildVersion is the module version the binary was built from, for the
// traces' service.version ("(devel)" in a work tree).
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return "unknown"
}
