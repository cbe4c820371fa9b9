package gateway

import (
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
)

// BenchmarkAuthFlood is THREATS 25 and 59 as a measurement: in each round
// one address sends 2,000 unique well-formed keys for a real organization
// over 4 connections, while that organization's legitimate client sends
// chat requests one at a time with its cached key from another address.
// The attacker either paces itself at 2,000 keys a second (the rate the
// outside test reached against the unthrottled gateway) or sends as fast
// as it is answered (closed). It reports the look-ups that reached
// PostgreSQL per round (pg_lookups), the legitimate client's p99 before
// the flood (legit_p99_ms_quiet) and during it (legit_p99_ms_flood), their
// ratio, and the attacker's answers. Run it with -benchtime=3x; the target
// is a few hundred look-ups at most and a ratio within 1.5.
// "off" is the gateway without the failure budgets, for comparison;
// "floor" floods with keys that fail the checksum, which cost no I/O at
// all: what the attacker's requests cost the legitimate client on a
// shared machine whatever auth does.
func BenchmarkAuthFlood(b *testing.B) {
	type variant struct {
		name            string
		perAddr, perOrg int
		malformed       bool
		rate            int // keys per second; 0: closed loop
	}
	var variants []variant
	for _, rate := range []int{2000, 0} {
		pace := "closed"
		if rate > 0 {
			pace = strconv.Itoa(rate) + "rps"
		}
		variants = append(variants,
			variant{"attack=" + pace + "/budgets=off", 0, 0, false, rate},
			variant{"attack=" + pace + "/budgets=default", 60, 600, false, rate},
			variant{"attack=" + pace + "/floor=bad-checksum", 60, 600, true, rate})
	}
	for _, tc := range variants {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarnessWith(b, mock.Options{}, func(c *config.Config) {
				c.AuthFailuresPerMinutePerAddress, c.AuthFailuresPerMinutePerOrg = tc.perAddr, tc.perOrg
			})
			h.rec.discard = true
			var quiet, flood, attack []time.Duration
			var lookups, throttled, floodTime float64
			round := 0
			for b.Loop() {
				round++
				// A fresh organization and attacker address each round, so
				// that rounds do not inherit spent budgets.
				n := attackers.Add(1)
				ip := "127.1." + strconv.Itoa(int(n/250%250)) + "." + strconv.Itoa(int(n%250+1))
				r := floodRound(b, h, ip, tc.malformed, tc.rate)
				quiet, flood, attack = append(quiet, r.quiet...), append(flood, r.flood...), append(attack, r.attack...)
				lookups += float64(r.lookups)
				throttled += float64(r.status[429])
				floodTime += r.took.Seconds()
			}
			n := float64(round)
			q, f := percentile(quiet, 99), percentile(flood, 99)
			b.ReportMetric(lookups/n, "pg_lookups/op")
			b.ReportMetric(throttled/n, "throttled/op")
			b.ReportMetric(floodTime/n, "flood_s/op")
			b.ReportMetric(ms(q), "legit_p99_ms_quiet")
			b.ReportMetric(ms(f), "legit_p99_ms_flood")
			b.ReportMetric(float64(f)/float64(q), "p99_flood/quiet")
			b.ReportMetric(ms(percentile(quiet, 50)), "legit_p50_ms_quiet")
			b.ReportMetric(ms(percentile(flood, 50)), "legit_p50_ms_flood")
			b.ReportMetric(float64(len(flood))/n, "legit_reqs_in_flood/op")
			b.ReportMetric(2000/(floodTime/n), "attack_rps")
			b.ReportMetric(ms(percentile(attack, 50)), "attack_p50_ms")
			b.ReportMetric(ms(percentile(attack, 99)), "attack_p99_ms")
		})
	}
}

// attackers numbers the attacking addresses of this process.
var attackers atomic.Int64

type floodResult struct {
	quiet, flood []time.Duration
	attack       []time.Duration // the attacker's answers
	lookups      uint64
	status       map[int]int
	took         time.Duration
}

func floodRound(b *testing.B, h *harness, attackerIP string, malformed bool, rate int) floodResult {
	org, valid, _ := h.tenant(1_000_000_000)
	keys := make([]string, 2000)
	for i := range keys {
		keys[i], _ = apikey.Generate(org)
		if malformed { // refused by the checksum, without any I/O
			keys[i] = keys[i][:len(keys[i])-1] + string(rune('A'+(keys[i][len(keys[i])-1]+1)%26))
		}
	}
	legit := benchClient(b, h, "127.0.0.1", 1)
	attacker := benchClient(b, h, attackerIP, 4)
	if legit.send(valid) != 200 { // fills L1
		b.Fatal("valid key refused")
	}
	var res floodResult
	// Quiet for a second before the flood and a second after it, so that
	// the machine's drift falls on both sides of the comparison.
	quiet := func() {
		for end := time.Now().Add(time.Second); time.Now().Before(end); {
			start := time.Now()
			if s := legit.send(valid); s != 200 {
				b.Fatalf("legit status %d", s)
			}
			res.quiet = append(res.quiet, time.Since(start))
		}
	}
	quiet()

	before := h.auth.Stats()
	res.status = map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	start := time.Now()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += 4 {
				if rate > 0 { // key i is due at i/rate seconds; late keys go at once
					if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
						time.Sleep(wait)
					}
				}
				t0 := time.Now()
				s := attacker.send(keys[i])
				took := time.Since(t0)
				mu.Lock()
				res.status[s]++
				res.attack = append(res.attack, took)
				mu.Unlock()
			}
		}()
	}
	go func() { wg.Wait(); close(stop) }()
	for done := false; !done; {
		t0 := time.Now()
		if s := legit.send(valid); s != 200 {
			b.Fatalf("legit status %d during the flood", s)
		}
		res.flood = append(res.flood, time.Since(t0))
		select {
		case <-stop:
			done = true
		default:
		}
	}
	res.took = time.Since(start)
	res.lookups = h.auth.Stats().L3Lookups - before.L3Lookups
	quiet()
	return res
}

// benchConn sends chat completions from one loopback address.
type benchConn struct {
	b   *testing.B
	c   *fasthttp.HostClient
	url string
}

func benchClient(b *testing.B, h *harness, ip string, conns int) *benchConn {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &fasthttp.HostClient{Addr: h.url[len("http://"):], MaxConns: conns, Dial: func(a string) (net.Conn, error) { return d.Dial("tcp", a) }}
	return &benchConn{b: b, c: c, url: h.url + "/v1/chat/completions"}
}

func (bc *benchConn) send(key string) int {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(bc.url)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.SetBodyString(chatBody)
	if err := bc.c.DoTimeout(req, resp, 10*time.Second); err != nil {
		bc.b.Error(err)
		return 0
	}
	return resp.StatusCode()
}

// percentile is the p-th percentile of d (nearest rank).
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)*p+99)/100-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
