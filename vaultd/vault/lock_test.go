package vault

import (
	"context"
	"errors"
	"sync"
	"testing"
)

func TestKeyedMutexExclusive(t *testing.T) {
	t.Parallel()
	km := NewKeyedMutex()
	var (
		wg      sync.WaitGroup
		inside  int
		maxSeen int
		mu      sync.Mutex
		counter int
	)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := km.Lock(t.Context(), "t/a")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			if inside > maxSeen {
				maxSeen = inside
			}
			mu.Unlock()
			counter++ // protected by the keyed lock only: -race checks it
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
			unlock() // idempotent
		}()
	}
	wg.Wait()
	if maxSeen != 1 || counter != 100 {
		t.Fatalf("maxSeen=%d counter=%d", maxSeen, counter)
	}
	if km.Len() != 0 {
		t.Fatalf("entries leaked: %d", km.Len())
	}
}

func TestKeyedMutexIndependentKeysAndCancel(t *testing.T) {
	t.Parallel()
	km := NewKeyedMutex()
	u1, err := km.Lock(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is not blocked.
	u2, err := km.Lock(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	u2()
	// The same key with a cancelled context fails closed.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := km.Lock(ctx, "a"); !errors.Is(err, ErrLockUnavailable) {
		t.Fatalf("want ErrLockUnavailable, got %v", err)
	}
	u1()
	u3, err := km.Lock(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	u3()
	if km.Len() != 0 {
		t.Fatalf("entries leaked: %d", km.Len())
	}
}
