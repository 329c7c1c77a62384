package ctl

import (
	"bufio"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/audit"
)

const verifyUsage = "usage: vaultctl audit verify [-from-anchor SEQ:HASH] [-pubkey PEMFILE] FILE... (- for standard input)"

// cmdAuditVerify checks the hash chain across FILEs taken in order (rotated
// mirror segments then the current file, or export pages) from seq 1, or
// from -from-anchor. A chain that starts later without an anchor is
// refused as unanchored: its first prev_hash would be taken on trust, so a
// file with its first lines cut off would otherwise pass.
//
// A filtered export (tenant, integration or action) skips the other
// events' seqs by construction: it is not a contiguous chain and fails at
// its first gap. Verify the unfiltered export or the mirror instead.
//
// With -pubkey every audit.checkpoint event must carry a valid signature
// over the previous event's seq and hash, so a trail rewritten with
// recomputed hashes fails at its first checkpoint after the change; input
// without any checkpoint is refused.
func cmdAuditVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	anchorArg := fs.String("from-anchor", "", "SEQ:HASH: the files continue the chain after event SEQ, whose hash (from a trusted copy) is HASH")
	pubkeyArg := fs.String("pubkey", "", "PEM file of the audit checkpoint public key (`vaultctl audit pubkey`): also verify every signed checkpoint")
	// Flags may follow the files, as in the API commands.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) == 0 {
		return errors.New(verifyUsage)
	}
	var v audit.Verifier
	if *pubkeyArg != "" {
		pub, err := readPubkey(*pubkeyArg)
		if err != nil {
			return err
		}
		v.SetCheckpointKey(pub)
	}
	if *anchorArg != "" {
		seq, hash, err := parseAnchor(*anchorArg)
		if err != nil {
			return err
		}
		v.Anchor(seq, hash)
	}
	stdin := false
	for _, name := range files {
		if name == "-" {
			if stdin {
				return errors.New("standard input (-) given twice")
			}
			stdin = true
		}
		if err := verifyFile(&v, name); err != nil {
			if errors.As(err, new(*os.PathError)) {
				return err // names the file already
			}
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	res := v.Result()
	if res.Events > 0 && !res.Anchored {
		return fmt.Errorf("unanchored: first event is seq %d, not 1 (its prev_hash would be taken on trust); "+
			"pass -from-anchor %d:<hash> with the hash of seq %d from a trusted copy (a SIEM, the previous segment) "+
			"to verify from a known point, or give the earlier segments first",
			res.FirstSeq, res.FirstSeq-1, res.FirstSeq-1)
	}
	// The last hash is the anchor for the next segment or a later check.
	if *pubkeyArg != "" && res.Events > 0 && res.Checkpoints == 0 {
		// Dropping every checkpoint and recomputing the hashes would
		// otherwise pass.
		return errors.New("-pubkey: no signed checkpoint (audit.checkpoint event) in the files; " +
			"vaultd writes one every [audit] checkpoint_interval while events are added and at shutdown")
	}
	fmt.Fprintf(stdout, "ok: %d events chain (last seq %d, hash %s)\n", res.Events, res.LastSeq, res.LastHash)
	if *pubkeyArg != "" {
		fmt.Fprintf(stdout, "ok: %d signed checkpoints verify, the last at seq %d; events after it are covered by the hash chain only\n",
			res.Checkpoints, res.LastCheckpoint)
	}
	return nil
}

// parseAnchor reads SEQ:HASH (HASH: 64 lowercase hex digits, as events
// carry them).
func parseAnchor(s string) (uint64, string, error) {
	bad := fmt.Errorf("-from-anchor %q: want SEQ:HASH, the seq of the event before the files and its hash (64 lowercase hex digits)", s)
	seqText, hash, ok := strings.Cut(s, ":")
	if !ok || seqText == "" || strings.Trim(seqText, "0123456789") != "" {
		return 0, "", bad
	}
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || len(hash) != len(storage.GenesisHash) || strings.Trim(hash, "0123456789abcdef") != "" {
		return 0, "", bad
	}
	return seq, hash, nil
}

// verifyFile feeds one file (gzip-compressed, as logrotate leaves old
// segments, or plain) to v.
func verifyFile(v *audit.Verifier, name string) error {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	br := bufio.NewReaderSize(r, 1<<16)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		return v.AddReader(zr)
	}
	return v.AddReader(br)
}
