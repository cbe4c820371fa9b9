package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// The admin listener's limits. It serves short requests only, and
// nothing is lost by cutting a scrape at shutdown.
const (
	adminReadHeaderTimeout = 10 * time.Second
	adminShutdownTimeout   = time.Second
)

// apiServer is what Run needs of the API listener's server (*Server).
type apiServer interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// drainer is what Run needs of the readiness report (*Health).
type drainer interface{ SetDraining() }

var (
	_ apiServer = (*Server)(nil)
	_ drainer   = (*Health)(nil)
)

// Process is a gateway process as Run starts and stops it: the API and
// admin listeners and the background loops behind them. RequestLog,
// Loops, Grace and Log may be left zero; the rest is required.
type Process struct {
	API      apiServer    // serves the OpenAI-compatible API on Listener (a *Server)
	Listener net.Listener // closed by API.Shutdown

	Admin         http.Handler // health, metrics and pprof (AdminHandler), served on AdminListener
	AdminListener net.Listener // closed last

	Health drainer // reports not ready from the moment shutdown begins (a *Health)

	// Control serves the control plane (gateway/control) on
	// ControlListener; both nil: none. It stops with the API, given the
	// same drain: its requests are short database work.
	Control         apiServer
	ControlListener net.Listener

	// RequestLog is the request log's loop (store.Writer.Run). It is
	// stopped once the API has drained, so that its final flush takes the
	// records of the streams cut at the drain deadline. An error from it
	// means records were lost: Run logs it and still returns nil.
	RequestLog func(ctx context.Context) error
	// Loops are the other background loops (key invalidations, health
	// probes, limiter heartbeats). They stop with the request log; each
	// should return nil when its ctx ends, and may return nil earlier if it
	// has nothing to do. An error is logged.
	Loops []Loop

	// Grace is how long the API keeps accepting connections, reporting not
	// ready, after shutdown begins, so that load balancers stop sending
	// first (BULKHEAD_SHUTDOWN_GRACE); 0: none. Drain is how long requests
	// and streams in flight then have before they are cut
	// (BULKHEAD_SHUTDOWN_TIMEOUT).
	Grace, Drain time.Duration

	// Log receives "shutting down", "stopped" and the loops' errors, as
	// is (not Named); nil: no logging.
	Log *zap.Logger
}

// Loop is a background goroutine of the process.
type Loop struct {
	Name string                          // names the loop in the log line if Run fails
	Run  func(ctx context.Context) error // returns when ctx ends
}

// Run serves the process until ctx ends or a listener fails, then shuts
// it down in this order:
//
//  1. Health reports not ready at once.
//  2. The API keeps accepting connections for Grace.
//  3. API.Shutdown stops accepting and lets requests and streams finish
//     until Drain has passed, then cuts the streams still open (they are
//     recorded with what arrived).
//  4. The loops' ctx ends: the request log flushes, with the records of
//     step 3.
//  5. Once every loop has returned, the admin listener closes, so that
//     /readyz and /metrics answer until the flush is over.
//
// One errgroup owns every goroutine; Run returns when all have returned.
// It returns nil after a clean shutdown that ctx started, and otherwise
// the first error of a listener (which starts the shutdown; it still runs
// in full) or of API.Shutdown. The shutdown does not watch ctx: Grace,
// Drain, the loops' own flush deadlines and a second for the admin
// listener bound it.
func Run(ctx context.Context, p Process) error {
	log := p.Log
	if log == nil {
		log = zap.NewNop()
	}
	// A loop's error is logged, not returned: a loop fails only as it
	// stops, and records lost by the request log do not change the exit.
	type loop struct {
		run    func(ctx context.Context) error
		failed func(err error)
	}
	var loops []loop
	if p.RequestLog != nil {
		loops = append(loops, loop{p.RequestLog, func(err error) {
			log.Error("request log stopped with records lost", zap.Error(err))
		}})
	}
	for _, l := range p.Loops {
		loops = append(loops, loop{l.Run, func(err error) {
			log.Error("background loop failed", zap.String("loop", l.Name), zap.Error(err))
		}})
	}
	admin := &http.Server{Handler: p.Admin, ReadHeaderTimeout: adminReadHeaderTimeout}

	// The loops outlive ctx: they stop after the API has drained.
	bg, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	stopped := make(chan struct{}, len(loops)) // one token per loop returned

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.API.Serve(p.Listener) })
	if p.Control != nil {
		g.Go(func() error { return p.Control.Serve(p.ControlListener) })
	}
	g.Go(func() error {
		if err := admin.Serve(p.AdminListener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	for _, l := range loops {
		g.Go(func() error {
			defer func() { stopped <- struct{}{} }()
			if err := l.run(bg); err != nil {
				l.failed(err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		p.Health.SetDraining()
		log.Info("shutting down", zap.Duration("grace", p.Grace), zap.Duration("drain", p.Drain))
		time.Sleep(p.Grace)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.Drain)
		defer cancel()
		err := p.API.Shutdown(sctx)
		if p.Control != nil {
			if cerr := p.Control.Shutdown(sctx); err == nil {
				err = cerr
			}
		}
		stopLoops()
		for range loops {
			<-stopped
		}
		actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), adminShutdownTimeout)
		defer acancel()
		admin.Shutdown(actx) //nolint:errcheck // the admin listener holds nothing worth waiting for
		return err
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}
