package proxy

import (
	"bytes"
)

// matcher finds every secret in one pass over the input, however many
// there are (tokenVariants yields dozens; bytes.Index per secret cost a
// pass each). It is Wu-Manber: with w the length of the shortest secret
// (at most maxWindow), a window of w bytes slides over the input, and the
// last two bytes of the window tell how far it may jump before any
// secret's first w bytes could end there; only where that is 0 is the
// window hashed, looked up in a bit filter of the secrets' prefix hashes
// and, on a hit, compared. Secrets shorter than minShiftWindow use the
// same filter with a rolling hash at every byte.
type matcher struct {
	secrets [][]byte // longest first
	win     int
	pow     uint32   // hashBase^(win-1), for the rolling hash
	pre     []uint32 // hash of each secret's first win bytes
	filter  []uint64 // bit filterSlot(pre[k]) set for every k
	shift   []uint8  // by blockSlot of the window's last two bytes; nil below minShiftWindow
}

const (
	hashBase       = 16777619
	maxWindow      = 32 // longer windows jump further
	minShiftWindow = 4  // below this, jumps are too short to pay for the table
	filterBits     = 12
	blockBits      = 12
)

func filterSlot(h uint32) uint32 { return (h * 0x9E3779B1) >> (32 - filterBits) }

// blockSlot hashes two bytes; a collision only shortens a jump.
func blockSlot(c0, c1 byte) uint32 { return (uint32(c0)<<4 ^ uint32(c1)) & (1<<blockBits - 1) }

func (m *matcher) init(ss [][]byte) {
	m.secrets = ss
	w := min(len(ss[len(ss)-1]), maxWindow)
	m.win, m.pow = w, 1
	for range w - 1 {
		m.pow *= hashBase
	}
	m.pre = make([]uint32, len(ss))
	m.filter = make([]uint64, 1<<filterBits/64)
	for k, s := range ss {
		h := rollHash(s[:w])
		m.pre[k] = h
		slot := filterSlot(h)
		m.filter[slot/64] |= 1 << (slot % 64)
	}
	if w < minShiftWindow {
		return
	}
	m.shift = make([]uint8, 1<<blockBits)
	for i := range m.shift {
		m.shift[i] = uint8(w - 1)
	}
	for _, s := range ss {
		for j := 1; j < w; j++ { // the block s[j-1:j+1] ends w-1-j before the window's end
			if slot := blockSlot(s[j-1], s[j]); m.shift[slot] > uint8(w-1-j) {
				m.shift[slot] = uint8(w - 1 - j)
			}
		}
	}
}

func rollHash(b []byte) uint32 {
	var h uint32
	for _, c := range b {
		h = h*hashBase + uint32(c)
	}
	return h
}

// at returns the length of the longest secret starting at p and ending
// within b (0: none), given h, the hash of b[p:p+win].
func (m *matcher) at(b []byte, p int, h uint32) int {
	if slot := filterSlot(h); m.filter[slot/64]&(1<<(slot%64)) == 0 {
		return 0
	}
	for k, s := range m.secrets {
		if m.pre[k] == h && len(s) <= len(b)-p && bytes.Equal(b[p:p+len(s)], s) {
			return len(s)
		}
	}
	return 0
}

// next finds the leftmost match starting in [i, limit) that ends within b,
// the longest at a tie.
func (m *matcher) next(b []byte, i, limit int) (int, int) {
	w := m.win
	end := min(limit, len(b)-w+1) // every secret is at least w long
	if i >= end {
		return -1, 0
	}
	if m.shift == nil {
		h := rollHash(b[i : i+w])
		for p := i; ; p++ {
			if l := m.at(b, p, h); l > 0 {
				return p, l
			}
			if p+1 >= end {
				return -1, 0
			}
			h = (h-uint32(b[p])*m.pow)*hashBase + uint32(b[p+w])
		}
	}
	for p := i; p < end; {
		q := p + w - 1
		if s := m.shift[blockSlot(b[q-1], b[q])]; s != 0 {
			p += int(s)
			continue
		}
		if l := m.at(b, p, rollHash(b[p:p+w])); l > 0 {
			return p, l
		}
		p++
	}
	return -1, 0
}
