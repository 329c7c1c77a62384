package harden

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The BPF program is assembled here rather than with go-seccomp-bpf's
// Policy (only its syscall tables are used): its argument conditions leave
// an argument in the accumulator and then compare the next syscall number
// against it, so kill(1, ...) matched "write" and was allowed. In this
// program every syscall with argument conditions ends in its own return.
//
// Layout:
//
//	ld arch; wrong arch (e.g. int 0x80 on x86_64)  -> EPERM
//	ld nr;   x32 ABI bit set                        -> EPERM
//	never-allowed nr                                -> EPERM (every mode)
//	clone3                                          -> ENOSYS (glibc falls back to clone)
//	allowed nr                                      -> ALLOW
//	conditional nr: args match                      -> ALLOW, else -> default
//	anything else                                   -> default (EPERM, or LOG in log mode)
//
// Unconditional ALLOWs are a constant per syscall number, which the kernel
// (5.11+) caches as a bitmap: the common syscalls do not run the filter.

// Seccomp return values.
const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retLog    = unix.SECCOMP_RET_LOG
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// seccomp_data layout.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

type condOp int

const (
	opEqual     condOp = iota // arg == val
	opBitsSet                 // arg & val == val (val must fit 32 bits)
	opBitsClear               // arg & val == 0
)

type cond struct {
	arg int
	op  condOp
	val uint64
}

// rule allows a syscall when any of alts holds; an alt holds when all its
// conditions do. A rule with no alts is unconditional.
type rule struct {
	name string
	alts [][]cond
}

type filterPolicy struct {
	prog    []bpf.RawInstruction
	flags   uintptr
	allowed int // distinct syscalls allowed (unconditionally or not)
}

// buildPolicy assembles the filter for mode (enforce or log) with extra
// syscalls allowed on top of the built-in list. pid is the process's own
// id: signals may be sent to ourselves only.
func buildPolicy(mode SeccompMode, extra []string, pid int) (*filterPolicy, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSeccomp, err)
	}
	if len(info.SyscallNames) == 0 {
		return nil, fmt.Errorf("%w: no syscall table for %s", ErrSeccomp, info.Name)
	}
	var def uint32
	switch mode {
	case SeccompEnforce:
		def = retEPERM
	case SeccompLog:
		def = retLog
	default:
		return nil, fmt.Errorf("%w: seccomp = %q", ErrConfig, mode)
	}

	never := make(map[string]bool, len(neverAllowed))
	for _, n := range neverAllowed {
		never[n] = true
	}
	for _, n := range extra {
		if never[n] {
			return nil, fmt.Errorf("%w: %q is never allowed", ErrSyscall, n)
		}
		if _, ok := info.SyscallNames[n]; !ok {
			return nil, fmt.Errorf("%w: %q is not a syscall on %s", ErrSyscall, n, info.Name)
		}
	}

	rules := builtinRules(pid)
	// extra_syscalls: unconditional, replacing a built-in conditional rule
	// for the same name (the operator asked for the whole syscall).
	for _, n := range extra {
		i := slices.IndexFunc(rules, func(r rule) bool { return r.name == n })
		if i >= 0 {
			rules[i].alts = nil
		} else {
			rules = append(rules, rule{name: n})
		}
	}
	clone3ENOSYS := !slices.Contains(extra, "clone3")

	nr := func(name string) (uint32, bool) {
		n, ok := info.SyscallNames[name]
		return uint32(n), ok
	}

	var p []bpf.Instruction
	ret := func(v uint32) { p = append(p, bpf.RetConstant{Val: v}) }
	// matchRet: if nr == n return v.
	matchRet := func(n, v uint32) {
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: n, SkipTrue: 0, SkipFalse: 1})
		ret(v)
	}

	p = append(p, bpf.LoadAbsolute{Off: offArch, Size: 4})
	p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1})
	ret(retEPERM)
	p = append(p, bpf.LoadAbsolute{Off: offNr, Size: 4})
	if info.ID == arch.X86_64.ID {
		p = append(p, bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(arch.X32.SeccompMask), SkipTrue: 0, SkipFalse: 1})
		ret(retEPERM)
	}
	for _, name := range neverAllowed {
		if n, ok := nr(name); ok {
			matchRet(n, retEPERM)
		}
	}
	if n, ok := nr("clone3"); ok && clone3ENOSYS {
		matchRet(n, retENOSYS)
	}
	allowed := 0
	seen := map[uint32]bool{}
	for _, r := range rules {
		if len(r.alts) > 0 {
			continue
		}
		n, ok := nr(r.name)
		if !ok || seen[n] {
			continue
		}
		seen[n] = true
		allowed++
		matchRet(n, retAllow)
	}
	for _, r := range rules {
		if len(r.alts) == 0 {
			continue
		}
		n, ok := nr(r.name)
		if !ok || seen[n] {
			continue
		}
		seen[n] = true
		allowed++
		body, err := condBlock(r, def)
		if err != nil {
			return nil, err
		}
		if len(body) > 255 {
			return nil, fmt.Errorf("%w: rule %s too long", ErrSeccomp, r.name)
		}
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: n, SkipTrue: 0, SkipFalse: uint8(len(body))})
		p = append(p, body...)
	}
	ret(def)

	raw, err := bpf.Assemble(p)
	if err != nil {
		return nil, fmt.Errorf("%w: assemble: %w", ErrSeccomp, err)
	}
	if len(raw) > 4096 { // BPF_MAXINSNS
		return nil, fmt.Errorf("%w: filter has %d instructions", ErrSeccomp, len(raw))
	}
	return &filterPolicy{
		prog: raw,
		// FLAG_LOG: refused calls are audited too, not only RET_LOG ones.
		flags:   unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_LOG,
		allowed: allowed,
	}, nil
}

// builtinRules is the allow-list: unconditional names plus the syscalls
// that are only allowed with certain arguments.
func builtinRules(pid int) []rule {
	var rules []rule
	for _, g := range allowGroups {
		for _, n := range g.names {
			rules = append(rules, rule{name: n})
		}
	}
	self := uint64(pid)
	one := func(cs ...cond) [][]cond { return [][]cond{cs} }
	anyOf := func(arg int, vals []uint64) [][]cond {
		alts := make([][]cond, 0, len(vals))
		for _, v := range vals {
			alts = append(alts, []cond{{arg: arg, op: opEqual, val: v}})
		}
		return alts
	}
	rules = append(rules,
		// Threads only: CLONE_THREAD set and no namespace flags. No fork,
		// so no child process to exec or to escape into.
		rule{name: "clone", alts: one(
			cond{arg: 0, op: opBitsSet, val: unix.CLONE_THREAD},
			cond{arg: 0, op: opBitsClear, val: cloneNamespaces},
		)},
		// Signals to ourselves only: runtime preemption (tgkill) and
		// raise/crash paths (kill).
		rule{name: "kill", alts: one(cond{arg: 0, op: opEqual, val: self})},
		rule{name: "tgkill", alts: one(cond{arg: 0, op: opEqual, val: self})},
		rule{name: "socket", alts: anyOf(0, socketDomains)},
		rule{name: "prctl", alts: anyOf(0, prctlOptions)},
		// Read-only rlimits of ourselves: RLIMIT_CORE must stay 0.
		rule{name: "prlimit64", alts: one(
			cond{arg: 0, op: opEqual, val: 0},
			cond{arg: 2, op: opEqual, val: 0},
		)},
		rule{name: "getrlimit"},
	)
	if runtime.GOARCH == "amd64" {
		rules = append(rules, rule{name: "arch_prctl", alts: anyOf(0, []uint64{archSetFS, archGetFS})})
	}
	return rules
}

// condBlock is the code after "nr matches": one block per alternative
// (fall to the next alternative on the first failed condition, ALLOW when
// all hold), then def.
func condBlock(r rule, def uint32) ([]bpf.Instruction, error) {
	var out []bpf.Instruction
	for _, alt := range r.alts {
		var blk []bpf.Instruction
		var fails []int // indexes of jumps to patch to "after this alt"
		failIfTrue := func(j bpf.JumpIf) {
			fails = append(fails, len(blk))
			blk = append(blk, j)
		}
		for _, c := range alt {
			lo, hi := argOffsets(c.arg)
			vlo, vhi := uint32(c.val), uint32(c.val>>32)
			switch c.op {
			case opEqual:
				blk = append(blk, bpf.LoadAbsolute{Off: hi, Size: 4})
				failIfTrue(bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: vhi})
				blk = append(blk, bpf.LoadAbsolute{Off: lo, Size: 4})
				failIfTrue(bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: vlo})
			case opBitsSet:
				if vhi != 0 {
					return nil, fmt.Errorf("%w: %s: 64-bit mask", ErrSeccomp, r.name)
				}
				// fail unless (A & v) == v: A &= v; A != v -> fail
				blk = append(blk, bpf.LoadAbsolute{Off: lo, Size: 4},
					bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: vlo})
				failIfTrue(bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: vlo})
			case opBitsClear:
				blk = append(blk, bpf.LoadAbsolute{Off: lo, Size: 4})
				failIfTrue(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: vlo})
				if vhi != 0 {
					blk = append(blk, bpf.LoadAbsolute{Off: hi, Size: 4})
					failIfTrue(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: vhi})
				}
			}
		}
		blk = append(blk, bpf.RetConstant{Val: retAllow})
		for _, i := range fails {
			skip := len(blk) - i - 1
			if skip > 255 {
				return nil, fmt.Errorf("%w: %s: jump too long", ErrSeccomp, r.name)
			}
			j := blk[i].(bpf.JumpIf)
			j.SkipTrue = uint8(skip)
			blk[i] = j
		}
		out = append(out, blk...)
	}
	out = append(out, bpf.RetConstant{Val: def})
	return out, nil
}

// argOffsets gives the offsets of the low and high 32-bit halves of a
// 64-bit syscall argument in seccomp_data.
func argOffsets(i int) (lo, hi uint32) {
	base := uint32(offArgs + 8*i)
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 { // little-endian
		return base, base + 4
	}
	return base + 4, base
}

// allowAllPolicy is a one-instruction filter: it exists to carry
// no_new_privs to every thread (TSYNC) when seccomp = "off".
func allowAllPolicy() *filterPolicy {
	raw, _ := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: retAllow}})
	return &filterPolicy{prog: raw, flags: unix.SECCOMP_FILTER_FLAG_TSYNC}
}

// installFilter sets no_new_privs (when asked) and installs p on every
// thread. Both happen on one locked OS thread: no_new_privs is per thread,
// and TSYNC copies it from the calling thread to the others.
func installFilter(p *filterPolicy, noNewPrivs bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if noNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("%w: prctl(PR_SET_NO_NEW_PRIVS): %w", ErrPrctl, err)
		}
	}
	filter := make([]unix.SockFilter, len(p.prog))
	for i, ins := range p.prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, p.flags, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filter)
	if errno != 0 {
		if errno == unix.EACCES {
			return fmt.Errorf("%w: install filter: %w (without no_new_privs it needs CAP_SYS_ADMIN)", ErrSeccomp, errno)
		}
		return fmt.Errorf("%w: install filter: %w", ErrSeccomp, errno)
	}
	if r != 0 {
		return fmt.Errorf("%w: thread %d could not be synchronised (TSYNC)", ErrSeccomp, r)
	}
	return nil
}
