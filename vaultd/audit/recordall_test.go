package audit

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// What Record returns is exactly what the store committed, although it is
// no longer decoded from the stored line: the fake store builds twice per
// append (a retried batch; build must be pure, so both agree), and odd
// inputs (control bytes, invalid UTF-8, an over-long detail) are
// sanitised the same way on both paths.
func TestRecordReturnsTheCommittedEvent(t *testing.T) {
	st := &fakeStore{}
	c := newClock()
	l := newTestLog(t, st, "", c)
	odd := sampleEvent(1)
	odd.Detail = "ctl\x01\x7f bad\xff utf8 " + strings.Repeat("é", 3000)
	odd.OnBehalfOf = "user\nwith newline"
	evs := []Event{sampleEvent(0), odd, sampleEvent(2)}
	for i, ev := range evs {
		c.Advance(time.Millisecond)
		got, err := l.Record(t.Context(), ev)
		if err != nil {
			t.Fatalf("Record %d: %v", i, err)
		}
		var stored storage.AuditRecord
		if err := st.ScanAudit(t.Context(), got.Seq-1, func(r storage.AuditRecord) (bool, error) { stored = r; return false, nil }); err != nil {
			t.Fatal(err)
		}
		line, err := marshalLine(got)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Seq != got.Seq || stored.Hash != got.Hash || !bytes.Equal(line, stored.Data) {
			t.Fatalf("event %d: returned\n%s\nstored\n%s", i, line, stored.Data)
		}
	}
}
