package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

// FuzzVerify: Verify never panics, fails only with a *ChainError or a read
// error, and a success describes a consecutive chain.
func FuzzVerify(f *testing.F) {
	golden, err := os.ReadFile("testdata/golden.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add(bytes.SplitN(golden, []byte("\n"), 2)[1])
	f.Add([]byte(""))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"seq":1}`))
	f.Add(bytes.Replace(golden, []byte(`"seq":2`), []byte(`"seq":2.0`), 1))
	f.Add([]byte(`{"seq":1,"seq":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Verify(bytes.NewReader(data))
		if err != nil {
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("non-chain error from an in-memory reader: %v", err)
			}
			return
		}
		if res.Events > 0 && res.LastSeq-res.FirstSeq+1 != uint64(res.Events) {
			t.Fatalf("inconsistent result %+v", res)
		}
		if res.Anchored && res.FirstSeq != 1 {
			t.Fatalf("anchored chain starting at %d", res.FirstSeq)
		}
	})
}

func BenchmarkRecord(b *testing.B) {
	for _, mirror := range []bool{false, true} {
		name := "store-only"
		path := ""
		if mirror {
			name = "with-mirror"
			path = mirrorPath(b)
		}
		b.Run(name, func(b *testing.B) {
			l := newTestLog(b, &fakeStore{}, path, newClock())
			ev := sampleEvent(1)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.Record(context.Background(), ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	l := newTestLog(b, &fakeStore{}, "", newClock())
	record(b, l, 0, 1000)
	exp := export(b, l)
	b.SetBytes(int64(len(exp)))
	for b.Loop() {
		if _, err := Verify(bytes.NewReader(exp)); err != nil {
			b.Fatal(err)
		}
	}
}
