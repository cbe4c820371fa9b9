package budget

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
)

// Alert is the webhook's JSON body: a budget reached a soft threshold.
type Alert struct {
	Event       string         `json:"event"` // "budget.threshold"
	ID          string         `json:"id"`    // budget, window and threshold: the same for a retried delivery
	OrgID       uuid.UUID      `json:"organization_id"`
	BudgetID    uuid.UUID      `json:"budget_id"`
	Level       string         `json:"level"`
	KeyID       *uuid.UUID     `json:"api_key_id"`
	EndUser     *string        `json:"end_user"`
	Threshold   string         `json:"threshold"` // fraction of the limit, decimal text ("0.8")
	Limit       store.MicroUSD `json:"limit_usd"`
	Spent       store.MicroUSD `json:"spent_usd"` // as the announcing replica saw it: reservations in flight and other replicas' leases included
	Window      string         `json:"window"`
	WindowStart time.Time      `json:"window_start"`
	At          time.Time      `json:"at"`
}

func newAlert(b store.Budget, window time.Time, permille int, spent store.MicroUSD) Alert {
	return Alert{Event: "budget.threshold", ID: b.ID.String() + ":" + strconv.FormatInt(window.Unix(), 10) + ":" + strconv.Itoa(permille),
		OrgID: b.OrgID, BudgetID: b.ID, Level: b.Level(), KeyID: b.KeyID, EndUser: b.EndUser,
		Threshold: strconv.FormatFloat(float64(permille)/1000, 'f', -1, 64), Limit: b.Limit, Spent: spent,
		Window: b.Window.String(), WindowStart: window, At: time.Now().UTC()}
}

// Signature headers: SignatureHeader carries "t=<unix seconds>,v1=<hex>",
// the HMAC-SHA256 under the secret of "<unix seconds>.<body>" (the
// timestamp lets a receiver refuse replays).
const SignatureHeader = "X-Bulkhead-Signature"

// Sign returns SignatureHeader's value for body at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// NotifierOptions configure a Notifier.
type NotifierOptions struct {
	URL    string // BULKHEAD_BUDGET_WEBHOOK_URL
	Secret []byte // BULKHEAD_BUDGET_WEBHOOK_SECRET
	// Attempts per alert (0: 8), the first retry after Backoff (0: 1s),
	// doubling up to a minute.
	Attempts int
	Backoff  time.Duration
	Timeout  time.Duration // one delivery; 0: 10s
	Client   *http.Client  // nil: one with Timeout, no redirects followed
	Log      *zap.Logger
	Metrics  prometheus.Registerer
}

// Notifier delivers alerts to the webhook from a bounded queue: a full
// queue drops the alert (counted), an alert failing every attempt is
// dropped too (counted, logged). An alert is claimed before delivery, so
// it is delivered at most once per threshold and window, never twice.
type Notifier struct {
	o        NotifierOptions
	queue    chan Alert
	wg       sync.WaitGroup
	outcomes *prometheus.CounterVec
}

const notifierQueue = 1024

// NewNotifier returns a Notifier; Run delivers.
func NewNotifier(o NotifierOptions) *Notifier {
	if o.Attempts <= 0 {
		o.Attempts = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	n := &Notifier{o: o, queue: make(chan Alert, notifierQueue), outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_budget_webhooks_total", Help: "Budget alert webhooks by outcome: delivered, failed (every attempt failed), dropped (queue full).",
	}, []string{"outcome"})}
	reg.MustRegister(n.outcomes)
	return n
}

// Send queues a for delivery, without blocking.
func (n *Notifier) Send(a Alert) {
	select {
	case n.queue <- a:
	default:
		n.outcomes.WithLabelValues("dropped").Inc()
		n.o.Log.Warn("budget alert dropped: webhook queue full", zap.String("alert", a.ID))
	}
}

// Run delivers queued alerts, two at a time, until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	for range 2 {
		n.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case a := <-n.queue:
					n.deliver(ctx, a)
				}
			}
		})
	}
	n.wg.Wait()
}

// deliver posts a until a 2xx answer, retrying with exponential backoff.
func (n *Notifier) deliver(ctx context.Context, a Alert) {
	body, err := json.Marshal(a)
	if err != nil {
		return
	}
	wait := n.o.Backoff
	for attempt := 1; ; attempt++ {
		status, err := n.post(ctx, body)
		if err == nil && status/100 == 2 {
			n.outcomes.WithLabelValues("delivered").Inc()
			return
		}
		if attempt == n.o.Attempts || ctx.Err() != nil {
			n.outcomes.WithLabelValues("failed").Inc()
			n.o.Log.Warn("budget alert webhook failed", zap.String("alert", a.ID), zap.Int("attempts", attempt),
				zap.Int("status", status), zap.Error(err))
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Minute)
	}
}

func (n *Notifier) post(ctx context.Context, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.o.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(n.o.Secret, time.Now(), body))
	resp, err := n.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may carry a token of the receiver's
		}
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
