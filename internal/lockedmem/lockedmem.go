//go:build linux

// Package lockedmem allocates small buffers for key material outside the Go
// heap: each buffer is its own anonymous mapping
//
//	[guard page PROT_NONE][data pages, mlocked, MADV_DONTDUMP][guard page PROT_NONE]
//
// with the data placed flush against the trailing guard page, so an overrun
// faults instead of reading a neighbour. The Go garbage collector never
// copies or moves the bytes, mlock keeps them out of swap, MADV_DONTDUMP keeps
// them out of core dumps, and Free zeroes them before unmapping.
//
// Locking is per buffer rather than mlockall(2) because vaultd also maps its
// bbolt database file: mlockall(MCL_CURRENT|MCL_FUTURE) would pin the whole
// database mapping (and every future heap arena) in RAM, while only a few
// hundred 32-byte keys need protecting.
//
// Each buffer costs one locked page, so RLIMIT_MEMLOCK (systemd
// LimitMEMLOCK=) must allow the expected number of buffers times the page size.
// Whether a failed mlock is fatal is the caller's decision (Alloc's Policy):
// ErrLock if it is, otherwise the buffer is still guarded, excluded from
// dumps and zeroed on Free, just not locked.
package lockedmem

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	// ErrLock: the kernel refused to lock the pages (RLIMIT_MEMLOCK too
	// low, no CAP_IPC_LOCK) and the caller required locking.
	ErrLock = errors.New("lockedmem: cannot lock memory")
	// ErrAlloc: the mapping itself could not be created or protected.
	ErrAlloc = errors.New("lockedmem: cannot allocate guarded memory")
	// ErrSize: the requested size is not positive.
	ErrSize = errors.New("lockedmem: invalid size")
	// ErrFreed: the buffer was already freed.
	ErrFreed = errors.New("lockedmem: buffer freed")
)

// Buffer is one guarded allocation. Bytes is valid until Free; using it after
// Free faults, so owners must make sure no reader is left (the envelope cache
// reference-counts its entries for that reason). Methods are safe for
// concurrent use, but the data itself is not synchronised.
type Buffer struct {
	mu      sync.Mutex
	mem     []byte // whole mapping including guard pages
	inner   []byte // the accessible, locked pages
	data    []byte // the caller's bytes, at the end of inner
	locked  bool
	frozen  bool
	freed   bool
	cleanup runtime.Cleanup
}

// Policy says what Alloc does about mlock.
type Policy int

const (
	// Required: fail with ErrLock if the pages cannot be locked.
	Required Policy = iota
	// BestEffort: try to lock; on failure return an unlocked buffer.
	BestEffort
	// Off: do not lock (guard pages, MADV_DONTDUMP and zeroing remain).
	Off
)

// sys is the set of system calls Alloc uses; tests replace mlock to exercise
// the fallback path (root is never refused an mlock).
type sys struct {
	mlock func([]byte) error
}

var defaultSys = sys{mlock: unix.Mlock}

// Alloc returns a zeroed buffer of size bytes. If mlock fails under
// Required it returns an error wrapping ErrLock; otherwise it returns an
// unlocked (but still guarded, undumpable, zeroed-on-free) buffer whose
// Locked method reports false.
func Alloc(size int, p Policy) (*Buffer, error) {
	return defaultSys.alloc(size, p)
}

func (s sys) alloc(size int, p Policy) (*Buffer, error) {
	if size <= 0 {
		return nil, ErrSize
	}
	page := os.Getpagesize()
	innerLen := (size + page - 1) / page * page
	mem, err := unix.Mmap(-1, 0, innerLen+2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap: %w", ErrAlloc, err)
	}
	b := &Buffer{
		mem:   mem,
		inner: mem[page : page+innerLen : page+innerLen],
	}
	b.data = b.inner[innerLen-size:]
	fail := func(sentinel error, what string, err error) (*Buffer, error) {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("%w: %s: %w", sentinel, what, err)
	}
	if err := unix.Mprotect(mem[:page], unix.PROT_NONE); err != nil {
		return fail(ErrAlloc, "mprotect guard", err)
	}
	if err := unix.Mprotect(mem[page+innerLen:], unix.PROT_NONE); err != nil {
		return fail(ErrAlloc, "mprotect guard", err)
	}
	// Keep key pages out of core dumps even if locking fails. Older kernels
	// without MADV_DONTDUMP only lose this extra layer, so the error is
	// not fatal.
	_ = unix.Madvise(b.inner, unix.MADV_DONTDUMP)
	if p != Off {
		if err := s.mlock(b.inner); err != nil {
			if p == Required {
				return fail(ErrLock, "mlock", err)
			}
		} else {
			b.locked = true
		}
	}
	// Safety net for a Buffer dropped without Free: zero and unmap. The
	// cleanup holds the mapping, not the Buffer, so it does not keep the
	// Buffer alive.
	b.cleanup = runtime.AddCleanup(b, releaseMapping, mapping{mem: mem, inner: b.inner})
	return b, nil
}

type mapping struct{ mem, inner []byte }

func releaseMapping(m mapping) {
	// The inner pages may be read-only (Freeze); make them writable to
	// zero them. Failure leaves nothing better to do than unmap.
	if unix.Mprotect(m.inner, unix.PROT_READ|unix.PROT_WRITE) == nil {
		clear(m.inner)
	}
	_ = unix.Munlock(m.inner)
	_ = unix.Munmap(m.mem)
}

// Bytes returns the buffer's memory (not a copy). Nil after Free.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return nil
	}
	return b.data
}

// Len is the buffer size in bytes.
func (b *Buffer) Len() int { return len(b.data) }

// Locked reports whether the pages are mlocked.
func (b *Buffer) Locked() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.locked && !b.freed
}

// Freeze makes the buffer read-only, so a stray write faults instead of
// silently changing a key.
func (b *Buffer) Freeze() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return ErrFreed
	}
	if err := unix.Mprotect(b.inner, unix.PROT_READ); err != nil {
		return fmt.Errorf("%w: mprotect read-only: %w", ErrAlloc, err)
	}
	b.frozen = true
	return nil
}

// Wipe zeroes the buffer (making it writable again if frozen). The buffer
// stays allocated.
func (b *Buffer) Wipe() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return ErrFreed
	}
	return b.wipeLocked()
}

func (b *Buffer) wipeLocked() error {
	if b.frozen {
		if err := unix.Mprotect(b.inner, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return fmt.Errorf("%w: mprotect read-write: %w", ErrAlloc, err)
		}
		b.frozen = false
	}
	clear(b.inner)
	return nil
}

// Free zeroes the buffer, unlocks and unmaps it. Calling it again is a
// no-op. If the pages cannot be made writable to zero them, they are
// unmapped anyway (the kernel hands out only zeroed pages) and the error is
// returned.
func (b *Buffer) Free() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.freed {
		return nil
	}
	b.freed = true
	b.cleanup.Stop()
	werr := b.wipeLocked()
	if b.locked {
		_ = unix.Munlock(b.inner)
	}
	uerr := unix.Munmap(b.mem)
	b.mem, b.inner, b.data = nil, nil, nil
	if uerr != nil {
		uerr = fmt.Errorf("%w: munmap: %w", ErrAlloc, uerr)
	}
	return errors.Join(werr, uerr)
}
