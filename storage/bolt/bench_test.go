package bolt

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// benchCT is the stand-in ciphertext size of each token field: a sealed
// access token plus refresh token make a record of a little over 1 KiB.
const benchCT = 512

func benchStore(b *testing.B) *Store {
	b.Helper()
	s := openT(b, newPath(b), Options{}) // fsync on: these measure real commits
	if _, err := storagetest.NoEvent(s).CreateTenant(context.Background(), storagetest.NewTenant("acme")); err != nil {
		b.Fatal(err)
	}
	return s
}

func benchRecords(n int) []storage.Integration {
	out := make([]storage.Integration, n)
	for i := range out {
		out[i] = storagetest.NewIntegration("acme", fmt.Sprintf("int-%05d", i), benchCT)
	}
	return out
}

// BenchmarkPutIntegration: one writer, one fsync per write.
func BenchmarkPutIntegration(b *testing.B) {
	s := benchStore(b)
	recs := benchRecords(1000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutIntegrationParallel: concurrent writers share commits via db.Batch.
func BenchmarkPutIntegrationParallel(b *testing.B) {
	s := benchStore(b)
	recs := benchRecords(1000)
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16) // many in-flight requests, as in the server
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", recs[int(i)%len(recs)]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutIntegrationsBatch: explicit batches of 100 records in one
// transaction; reported per record.
func BenchmarkPutIntegrationsBatch(b *testing.B) {
	s := benchStore(b)
	recs := benchRecords(1000)
	ctx := context.Background()
	const batch = 100
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		start := (i / batch * batch) % len(recs)
		n := min(batch, b.N-i)
		if _, err := s.PutIntegrations(ctx, "acme", recs[start:start+n]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetIntegration(b *testing.B) {
	s := benchStore(b)
	recs := benchRecords(1000)
	ctx := context.Background()
	if _, err := s.PutIntegrations(ctx, "acme", recs); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.GetIntegration(ctx, "acme", recs[i%len(recs)].ID); err != nil {
			b.Fatal(err)
		}
	}
}
