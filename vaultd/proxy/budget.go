package proxy

import (
	"errors"
	"io"
	"sync/atomic"
)

// ErrBufferBudget: buffering one more execute answer would pass the memory
// budget all execute answers share.
var ErrBufferBudget = errors.New("proxy: execute buffer budget exhausted")

// ExecuteBufferBudget is the memory all buffered execute answers may hold
// at once: room for four answers of the largest size, and never less than
// 64 MiB. Without it, a few upstreams answering max-size bodies at once
// (or many callers) could take the process's memory; with it, the excess
// calls fail (503) while the rest are served.
func ExecuteBufferBudget(maxBody int64) int64 { return max(4*maxBody, 64<<20) }

// Budget is a non-blocking counting budget: reservations either fit or
// fail at once (waiting would hold upstream connections and callers for
// memory that other answers may hold for minutes).
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// reserve takes n bytes or reports false (taking nothing).
func (b *Budget) reserve(n int64) bool {
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

// Release gives back n bytes that ReadAnswer held.
func (b *Budget) Release(n int64) { b.used.Add(-n) }

// ReadAnswer reads an execute answer of at most maxBody+1 bytes into memory
// (one byte more than allowed, so the caller can tell a too-large answer),
// reserving what it holds from b as it grows. The caller releases held
// once the answer is written, whatever the error. ErrBufferBudget means
// the budget could not cover the answer.
func (b *Budget) ReadAnswer(body io.Reader, maxBody int64) (data []byte, held int64, err error) {
	limit := maxBody + 1
	r := io.LimitReader(body, limit)
	for {
		if len(data) == cap(data) {
			if int64(len(data)) >= limit {
				return data, held, nil
			}
			grow := min(max(int64(cap(data)), 64<<10), limit-int64(cap(data)))
			if !b.reserve(grow) {
				return nil, held, ErrBufferBudget
			}
			held += grow
			nd := make([]byte, len(data), int64(cap(data))+grow)
			copy(nd, data)
			clear(data) // it held the (redacted) answer
			data = nd
		}
		n, rerr := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if rerr == io.EOF {
			return data, held, nil
		}
		if rerr != nil {
			return nil, held, rerr
		}
	}
}
