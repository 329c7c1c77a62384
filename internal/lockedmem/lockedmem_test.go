//go:build linux

package lockedmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

func alloc(t *testing.T, size int) *Buffer {
	t.Helper()
	b, err := Alloc(size, Required)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", size, err)
	}
	t.Cleanup(func() { _ = b.Free() })
	return b
}

func TestAllocZeroedWritableLocked(t *testing.T) {
	for _, size := range []int{1, 32, os.Getpagesize(), os.Getpagesize() + 1} {
		b := alloc(t, size)
		d := b.Bytes()
		if len(d) != size || b.Len() != size {
			t.Fatalf("size %d: len %d", size, len(d))
		}
		if !bytes.Equal(d, make([]byte, size)) {
			t.Fatalf("size %d: fresh buffer not zeroed", size)
		}
		for i := range d {
			d[i] = byte(i)
		}
		if d[size-1] != byte(size-1) {
			t.Fatalf("size %d: write lost", size)
		}
		if !b.Locked() {
			t.Fatalf("size %d: not locked", size)
		}
	}
}

// TestKernelFlags reads /proc/self/smaps to check that the kernel really
// has the data pages locked ("lo") and excluded from core dumps ("dd"), and
// the guard pages inaccessible.
func TestKernelFlags(t *testing.T) {
	b := alloc(t, 32)
	inner := uintptr(unsafe.Pointer(&b.inner[0]))
	guard := uintptr(unsafe.Pointer(&b.mem[0]))
	innerFlags, innerPerm := smapsFor(t, inner)
	for _, f := range []string{"lo", "dd"} {
		if !strings.Contains(" "+innerFlags+" ", " "+f+" ") {
			t.Errorf("data pages VmFlags %q lack %q", innerFlags, f)
		}
	}
	if !strings.HasPrefix(innerPerm, "rw") {
		t.Errorf("data pages perms %q", innerPerm)
	}
	if _, perm := smapsFor(t, guard); !strings.HasPrefix(perm, "---") {
		t.Errorf("guard page perms %q, want ---", perm)
	}
	if err := b.Freeze(); err != nil {
		t.Fatal(err)
	}
	if _, perm := smapsFor(t, inner); !strings.HasPrefix(perm, "r--") {
		t.Errorf("frozen data perms %q, want r--", perm)
	}
}

// smapsFor returns the VmFlags and permissions of the mapping holding addr.
func smapsFor(t *testing.T, addr uintptr) (flags, perm string) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		var p string
		if n, _ := fmt.Sscanf(line, "%x-%x %s", &lo, &hi, &p); n == 3 {
			in = addr >= lo && addr < hi
			if in {
				perm = p
			}
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:")), perm
		}
	}
	t.Fatalf("no mapping for %#x in smaps", addr)
	return "", ""
}

// faults runs fn and reports whether it hit a memory fault.
func faults(fn func()) (faulted bool) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			faulted = true
		}
	}()
	fn()
	return false
}

func TestGuardPagesFault(t *testing.T) {
	b := alloc(t, 32)
	d := b.Bytes()
	end := unsafe.Add(unsafe.Pointer(&d[0]), len(d)) // first byte of the trailing guard page
	if !faults(func() { _ = *(*byte)(end) }) {
		t.Error("read just past the data did not fault")
	}
	before := unsafe.Pointer(&b.mem[0]) // leading guard page
	if !faults(func() { _ = *(*byte)(before) }) {
		t.Error("read of the leading guard page did not fault")
	}
	if faults(func() { _ = d[len(d)-1] }) {
		t.Error("read of the last data byte faulted")
	}
}

func TestFreezeMakesReadOnly(t *testing.T) {
	b := alloc(t, 32)
	copy(b.Bytes(), "0123456789abcdef0123456789abcdef")
	if err := b.Freeze(); err != nil {
		t.Fatal(err)
	}
	d := b.Bytes()
	if !faults(func() { d[0] = 'x' }) {
		t.Fatal("write to frozen buffer did not fault")
	}
	if d[0] != '0' {
		t.Fatal("frozen content changed")
	}
	if err := b.Wipe(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d, make([]byte, 32)) {
		t.Fatal("Wipe did not zero a frozen buffer")
	}
	d[0] = 1 // writable again after Wipe
}

func TestFreeIdempotentAndUnmaps(t *testing.T) {
	b, err := Alloc(32, Required)
	if err != nil {
		t.Fatal(err)
	}
	d := b.Bytes()
	copy(d, "secret")
	if err := b.Wipe(); err != nil || !bytes.Equal(d, make([]byte, 32)) {
		t.Fatalf("Wipe: %v, content zeroed: %v", err, bytes.Equal(d, make([]byte, 32)))
	}
	if err := b.Free(); err != nil {
		t.Fatal(err)
	}
	if err := b.Free(); err != nil {
		t.Fatalf("second Free: %v", err)
	}
	if b.Bytes() != nil || b.Locked() {
		t.Fatal("freed buffer still exposes memory")
	}
	if !errors.Is(b.Freeze(), ErrFreed) || !errors.Is(b.Wipe(), ErrFreed) {
		t.Fatal("operations on freed buffer must return ErrFreed")
	}
	// (Touching d now is undefined: the address range may already be
	// reused by another mapping.)
	_ = d
}

func TestInvalidSize(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := Alloc(n, BestEffort); !errors.Is(err, ErrSize) {
			t.Errorf("Alloc(%d) = %v, want ErrSize", n, err)
		}
	}
}

func TestLockFailure(t *testing.T) {
	s := sys{mlock: func([]byte) error { return syscall.ENOMEM }}
	if _, err := s.alloc(32, Required); !errors.Is(err, ErrLock) || !errors.Is(err, syscall.ENOMEM) {
		t.Fatalf("required lock: err = %v, want ErrLock wrapping ENOMEM", err)
	}
	for _, p := range []Policy{BestEffort, Off} {
		b, err := s.alloc(32, p)
		if err != nil {
			t.Fatalf("policy %d: %v", p, err)
		}
		if b.Locked() {
			t.Fatalf("policy %d: Locked() true although not locked", p)
		}
		copy(b.Bytes(), "usable")
		if string(b.Bytes()[:6]) != "usable" {
			t.Fatal("unlocked buffer not usable")
		}
		flags, _ := smapsFor(t, uintptr(unsafe.Pointer(&b.inner[0])))
		if strings.Contains(" "+flags+" ", " lo ") || !strings.Contains(" "+flags+" ", " dd ") {
			t.Fatalf("policy %d: VmFlags %q, want dd without lo", p, flags)
		}
		if err := b.Free(); err != nil {
			t.Fatal(err)
		}
	}
	// Off never calls mlock.
	called := false
	s = sys{mlock: func([]byte) error { called = true; return nil }}
	b, err := s.alloc(32, Off)
	if err != nil || called || b.Locked() {
		t.Fatalf("Off: err %v, mlock called %v", err, called)
	}
	_ = b.Free()
}
