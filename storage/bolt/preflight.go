package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"

	"github.com/vaultd/vaultd/storage"
)

// bbolt's on-disk meta page (format version 2, unchanged since boltdb):
// a 16-byte page header, then magic, version, pageSize, flags (uint32
// each), root bucket (pgid, sequence), freelist pgid, high-water pgid,
// txid, and an FNV-64a checksum of everything before it, in host byte
// order.
const (
	pageHeaderSize = 16
	metaSize       = 64
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
)

type metaInfo struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // pages in use: the file must hold at least hwm*pageSize bytes
	txid     uint64
}

// parseMeta decodes one meta page; ok is false when it is not a valid one.
func parseMeta(b []byte) (metaInfo, bool) {
	if len(b) < pageHeaderSize+metaSize {
		return metaInfo{}, false
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	ne := binary.NativeEndian
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return metaInfo{}, false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return metaInfo{}, false
	}
	return metaInfo{
		pageSize: ne.Uint32(m[8:]), root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]),
		hwm: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:]),
	}, true
}

// Preflight checks an existing database file the way Open does before
// mapping it (see preflight), without opening or locking it, so a daemon
// can refuse a damaged file before it touches anything else. A missing
// file passes.
func Preflight(path string) error { return preflight(path) }

// preflight runs before bbolt maps an existing file. bbolt trusts the meta
// page's high-water mark and reads pages up to it from the mapping; on a
// file cut short (a partial copy, a full disk, a backup that stopped) that
// is a memory fault that kills the process (SIGSEGV, etcd-io/bbolt#1225),
// not an error. So the newest valid meta page, as bbolt would choose it,
// must fit in the file, and its root and freelist pages must lie below the
// high-water mark. Invalid meta pages are left to bbolt, which reports
// them as errors. The meta is read before the size: a live writer only
// grows the file before it publishes a larger mark.
func preflight(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // bbolt creates it
	}
	if err != nil {
		return fmt.Errorf("storage: open %s: %w", path, err)
	}
	defer f.Close()
	return checkHeader(path, f, func() (int64, error) {
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	})
}

// checkHeader is preflight on any reader; size is called after the meta
// pages are read.
func checkHeader(path string, f io.ReaderAt, size func() (int64, error)) error {
	buf := make([]byte, pageHeaderSize+metaSize)
	var metas []metaInfo
	if _, err := f.ReadAt(buf, 0); err == nil {
		if m, ok := parseMeta(buf); ok {
			metas = append(metas, m)
		}
	}
	off := int64(os.Getpagesize())
	if len(metas) == 1 {
		off = int64(metas[0].pageSize)
	}
	if _, err := f.ReadAt(buf, off); err == nil {
		if m, ok := parseMeta(buf); ok {
			metas = append(metas, m)
		}
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("storage: open %s: %w", path, err)
	}
	if len(metas) == 0 {
		return nil // empty or not a bbolt file: bbolt says which
	}
	m := metas[0]
	if len(metas) == 2 && metas[1].txid > m.txid {
		m = metas[1]
	}
	fsize, err := size()
	if err != nil {
		return fmt.Errorf("storage: open %s: %w", path, err)
	}
	const noFreelist = ^uint64(0)
	need := m.hwm * uint64(m.pageSize)
	switch {
	case m.pageSize < 512 || m.pageSize > 1<<20 || m.hwm < 2 || m.hwm > 1<<40:
		return fmt.Errorf("%w: %s: implausible metadata (page size %d, %d pages)", storage.ErrCorrupt, path, m.pageSize, m.hwm)
	case uint64(fsize) < need:
		return fmt.Errorf("%w: %s is truncated: %d bytes, its metadata needs %d (a partial copy or a full disk?)",
			storage.ErrCorrupt, path, fsize, need)
	case m.root >= m.hwm || (m.freelist != noFreelist && m.freelist >= m.hwm):
		return fmt.Errorf("%w: %s: metadata points past its last page", storage.ErrCorrupt, path)
	}
	return nil
}
