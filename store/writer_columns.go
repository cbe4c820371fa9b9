package store

import (
	"math"

	"github.com/google/uuid"
)

// fill sets the columns to the records idx of recs, their text through sl
// (sealed or not; nil: in clear).
func (c *columns) fill(recs []LogRecord, idx []int, sl *rowSealer) error {
	a := &c.arrays
	for i := range a {
		a[i].reset(columnOIDs[i])
	}
	for _, i := range idx {
		r := &recs[i]
		a[colRequestID].text(r.RequestID)
		if r.KeyID == uuid.Nil {
			a[colKeyID].null()
		} else {
			a[colKeyID].uuid(r.KeyID)
		}
		a[colEndpoint].text(r.Endpoint)
		a[colModel].text(r.Model)
		if err := sl.sealText(a, r); err != nil {
			return err
		}
		a[colPromptTok].int4(clamp32(int64(r.PromptTokens)))
		a[colComplTok].int4(clamp32(int64(r.CompletionTokens)))
		a[colTotalTok].int4(clamp32(int64(r.TotalTokens)))
		us := r.UsageSource
		if us == "" {
			us = "none"
		}
		a[colUsage].text(us)
		a[colStatus].int4(clamp32(int64(r.Status)))
		a[colLatency].int4(clamp32(r.Latency.Milliseconds()))
		a[colStream].bool(r.Stream)
		a[colCreated].timestamptz(r.CreatedAt)
		a[colID].uuid(r.ID)
		if r.Upstream == "" {
			a[colUpstream].null()
		} else {
			a[colUpstream].text(r.Upstream)
		}
		a[colAttempts].int4(int32(min(max(r.Attempts, 0), 1<<15-1))) // a smallint column
		a[colCacheCreation].int4(clamp32(int64(r.CacheCreationTokens)))
		a[colCacheRead].int4(clamp32(int64(r.CacheReadTokens)))
		fillMoney(a, r)
	}
	return nil
}

// fillMoney sets r's end user and, for a priced request, its cost and
// price snapshot; NULL otherwise.
func fillMoney(a *[len(columnOIDs)]binArray, r *LogRecord) {
	if r.EndUser == "" {
		a[colEndUser].null()
	} else {
		a[colEndUser].text(r.EndUser)
	}
	for i, v := range [...]MicroUSD{r.Cost, r.Prices.Input, r.Prices.CachedInput, r.Prices.Output} {
		if r.Priced {
			a[colCost+i].int8(int64(v))
		} else {
			a[colCost+i].null()
		}
	}
}

func clamp32(v int64) int32 {
	return int32(min(max(v, math.MinInt32), math.MaxInt32))
}
