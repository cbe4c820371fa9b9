package budget

import (
	"time"

	"github.com/bulkheadhq/bulkhead/store"
)

// rollingSlots: a rolling window is counted in this many buckets of
// Rolling/rollingSlots each (at least a second), so the spend it sums
// covers between Rolling minus one bucket and Rolling: the last 24h at a
// granularity of 24 minutes.
const rollingSlots = 60

// slot places now in w's counter: the bucket a spend at now is added to,
// the lowest bucket still in the window (buckets below it are dropped),
// how long the counter must outlive its last write, and where the window
// an alert belongs to starts (UTC day, UTC month, or for a rolling window
// the current multiple of its duration since the Unix epoch: an alert
// fires at most once per such period).
func slot(w store.BudgetWindow, now time.Time) (bucket, low int64, ttl time.Duration, alertWindow time.Time) {
	now = now.UTC()
	switch w.Kind {
	case "day":
		bucket = now.Unix() / 86400
		return bucket, bucket, 49 * time.Hour, w.Start(now)
	case "month":
		bucket = int64(now.Year())*12 + int64(now.Month()) - 1
		return bucket, bucket, 33 * 24 * time.Hour, w.Start(now)
	}
	size := max(int64(w.Rolling/time.Second)/rollingSlots, 1)
	n := (int64(w.Rolling/time.Second) + size - 1) / size
	bucket = now.Unix() / size
	period := int64(w.Rolling / time.Second)
	return bucket, bucket - n + 1, w.Rolling + time.Duration(size)*time.Second + time.Hour,
		time.Unix(now.Unix()/period*period, 0).UTC()
}
