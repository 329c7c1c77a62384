package main

import (
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/vaultd/vaultd/storage/bolt"
)

// integrationRecordSize reads the stored size of one integration record
// from vaultd's database (after vaultd stopped: bbolt locks the file).
func integrationRecordSize(path, tenant, id string) (int, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bbolt.Tx) error {
		tb := tx.Bucket([]byte("t/" + tenant))
		if tb == nil {
			return fmt.Errorf("no bucket t/%s", tenant)
		}
		ib := tb.Bucket([]byte("integrations"))
		if ib == nil {
			return fmt.Errorf("no integrations bucket")
		}
		n = len(ib.Get([]byte(id)))
		if n == 0 {
			return fmt.Errorf("integration %s not stored", id)
		}
		return nil
	})
	return n, err
}

// rawBolt measures bbolt itself: writers goroutines each putting records
// of size bytes with db.Batch (fsync on, vaultd's MaxBatchDelay) for d or
// maxPerWriter puts, whichever comes first. One writer uses db.Update, as
// storage/bolt does when no other write is in flight.
func rawBolt(path string, writers, size int, d time.Duration, maxPerWriter int) (result, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return result{}, err
	}
	defer db.Close()
	db.MaxBatchDelay = bolt.DefaultMaxBatchDelay
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("b")); return err }); err != nil {
		return result{}, err
	}
	val := make([]byte, size)
	_, _ = rand.Read(val) // incompressible, like ciphertext
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, writers)
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; n < maxPerWriter && time.Now().Before(deadline); n++ {
				key := fmt.Appendf(nil, "w%02d-%08d", w, n)
				t0 := time.Now()
				put := func(tx *bbolt.Tx) error { return tx.Bucket([]byte("b")).Put(key, val) }
				var err error
				if writers == 1 {
					err = db.Update(put) // as storage/bolt does for a lone writer
				} else {
					err = db.Batch(put)
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return result{}, firstErr
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{Name: "raw bbolt Batch put", Callers: writers, N: len(all), Elapsed: el, RPS: float64(len(all)) / el.Seconds()}
	if r.N > 0 {
		r.P50, r.P99 = all[r.N/2], all[min(r.N-1, r.N*99/100)]
	}
	return r, nil
}
