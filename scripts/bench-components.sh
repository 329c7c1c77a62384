#!/usr/bin/env bash
# Component benchmarks (go test -bench): HSM wrap/unwrap on SoftHSM, DEK-cached
# seal/open, store put (single, parallel/batched, explicit batch) and get,
# redaction, audit record/verify, policy. Writes docs/benchmarks-components.md
# with the machine it ran on. Not part of the test suite; bounded run time
# (-benchtime per benchmark, -count 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1
out=docs/benchmarks-components.md
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
go test -run '^$' -bench . -benchmem -count 3 -benchtime "${BENCHTIME:-2s}" \
  ./hsm/pkcs11 ./vaultd/envelope ./storage/bolt ./vaultd/proxy ./vaultd/audit ./policy | tee "$raw"
{
  echo "# vaultd component benchmarks"
  echo
  echo "Produced by \`scripts/bench-components.sh\` (go test -bench, -count 3, -benchtime ${BENCHTIME:-2s});"
  echo "system-level figures (proxy vs nginx, HTTP/3, refresh storm) are in [benchmarks.md](benchmarks.md)."
  echo "Numbers are from one run on a shared 2-vCPU machine; compare runs with benchstat, not by eye."
  echo
  echo "## Machine"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) vCPU)"
  echo "- kernel: $(uname -r); $(go version | cut -d' ' -f3-)"
  echo "- SoftHSM: $(softhsm2-util --version 2>/dev/null || echo unknown); storage on $(df -T . | awk 'NR==2{print $2}')"
  echo
  echo "## What each benchmark measures"
  echo
  echo "| benchmark | what |"
  echo "|---|---|"
  echo "| hsm Wrap / Unwrap / WrapParallel | one DEK wrap/unwrap by the KEK inside SoftHSM (C_Encrypt/C_Decrypt, CKM_AES_GCM), pooled sessions |"
  echo "| envelope SealField / OpenField | seal/open one token field with the tenant's DEK already cached in locked memory (no HSM call; the benchmark fails if one happens) |"
  echo "| envelope Seal | AES-256-GCM seal of 1 KiB in the v1 format |"
  echo "| bolt PutIntegration | one ~1 KiB integration record, one writer, fsync per commit |"
  echo "| bolt PutIntegrationParallel | concurrent writers sharing commits through db.Batch |"
  echo "| bolt PutIntegrationsBatch | explicit batch of 100 records in one transaction (per record) |"
  echo "| bolt GetIntegration | one record read (copy out of the transaction) |"
  echo
  echo "## Summary (median of 3 runs)"
  echo
  echo "| benchmark | ns/op | per second |"
  echo "|---|---:|---:|"
  grep -E '^Benchmark' "$raw" | awk '{n=$1; sub(/-[0-9]+$/,"",n); v[n]=v[n]" "$3; if(!(n in seen)){seen[n]=1; order[++k]=n}}
    END{for(i=1;i<=k;i++){n=order[i]; c=split(v[n],a," ");
      for(x=2;x<=c;x++){t=a[x]+0; y=x-1; while(y>0 && a[y]+0>t){a[y+1]=a[y]; y--} a[y+1]=t} m=a[int((c+1)/2)];
      printf "| %s | %.0f | %.0f |\n", n, m, (m>0?1e9/m:0)}}'
  echo
  echo "## Raw results"
  echo
  echo '```'
  grep -E '^(goos|goarch|pkg|cpu|Benchmark)' "$raw"
  echo '```'
} > "$out"
echo "wrote $out"
