package server

import (
	"errors"
	"sync/atomic"
)

// errBufferBudget: buffering one more execute answer would pass the memory
// budget all execute answers share.
var errBufferBudget = errors.New("server: execute buffer budget exhausted")

// executeBufferBudget is the memory all buffered execute answers may hold
// at once: room for four answers of the largest size, and never less than
// 64 MiB. Without it, a few upstreams answering max-size bodies at once
// (or many callers) could take the process's memory; with it, the excess
// calls fail (503) while the rest are served.
func executeBufferBudget(maxBody int64) int64 { return max(4*maxBody, 64<<20) }

// byteBudget is a non-blocking counting budget: reservations either fit or
// fail at once (waiting would hold upstream connections and callers for
// memory that other answers may hold for minutes).
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

func newByteBudget(limit int64) *byteBudget { return &byteBudget{limit: limit} }

// reserve takes n bytes or reports false (taking nothing).
func (b *byteBudget) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *byteBudget) release(n int64) { b.used.Add(-n) }
