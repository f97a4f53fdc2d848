#!/usr/bin/env python3
"""Cortex-M4F cycle estimate of one call of a function, from a QEMU execution trace.

QEMU counts instructions, not cycles. This weighs every executed instruction of the last call of
FUNCTION (default pose_decode) with its issue time in the Cortex-M4 TRM, conservatively: loads
are never overlapped (LDR 2, VLDR/VSTR 2, LDM/VLDM/PUSH/POP 1+N), VMLA 3 (no forwarding), VDIV and
VSQRT 14, MLA 2, divisions 7, everything else 1, plus 2 for every taken branch, call or return
(pipeline refill). No wait states, no interrupts.

  qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \\
      -semihosting-config enable=on,target=native -kernel harness.elf \\
      -d in_asm,exec,nochain -D trace.log
  scripts/m4_cycle_estimate.py harness.elf trace.log [FUNCTION]

(harness.elf: the firmware test's, kept with POSEKD_FIRMWARE_KEEP=1; see docs/deploy.md.)
"""
import bisect
import collections
import re
import subprocess
import sys


def symbols(elf):
    out = subprocess.run(["arm-none-eabi-nm", "-S", "-n", elf], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW":
            syms.append((int(p[0], 16), int(p[1], 16), p[3]))
    return sorted(syms)


def nregs(ops):
    m = re.search(r"\{([^}]*)\}", ops)
    if not m:
        return 1
    n = 0
    for part in m.group(1).split(","):
        r = re.match(r"\s*[rsd](\d+)\s*-\s*[rsd](\d+)", part)
        n += int(r.group(2)) - int(r.group(1)) + 1 if r else 1
    return n


def cost(mnemonic, ops):
    b = mnemonic.split(".")[0]
    if b.startswith("v"):
        if b in ("vldr", "vstr"):
            return 2
        if b in ("vldmia", "vldmdb", "vstmia", "vstmdb", "vpush", "vpop", "vldm", "vstm"):
            return 1 + nregs(ops)
        if b in ("vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"):
            return 3
        if b in ("vdiv", "vsqrt"):
            return 14
        return 1
    if b in ("push", "pop", "ldm", "ldmia", "ldmdb", "stm", "stmia", "stmdb"):
        return 1 + nregs(ops)
    if b.startswith("ldr"):
        return 3 if b.startswith("ldrd") else 2
    if b.startswith("str"):
        return 2 if b.startswith("strd") else 1
    if b in ("mla", "mls"):
        return 2
    if b in ("sdiv", "udiv"):
        return 7
    return 1


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    elf, log = sys.argv[1], sys.argv[2]
    func = sys.argv[3] if len(sys.argv) > 3 else "pose_decode"
    syms = symbols(elf)
    starts = [s[0] for s in syms]

    def fn(a):
        i = bisect.bisect_right(starts, a) - 1
        return syms[i][2] if i >= 0 and a < syms[i][0] + syms[i][1] else "?"

    entry = {s[2]: s[0] for s in syms}.get(func)
    if entry is None:
        sys.exit(f"{elf}: no function {func}")
    blocks, execs, cur = {}, [], None
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("IN:"):
                cur = None
                continue
            m = re.match(r"^0x([0-9a-f]{8}):\s+([0-9a-f]{4}(?: [0-9a-f]{4})?)\s+(\S+)\s*(.*)$", line)
            if m:
                a = int(m.group(1), 16)
                if cur is None:
                    cur = a
                    blocks[cur] = []
                blocks[cur].append((a, 4 if " " in m.group(2) else 2, m.group(3), m.group(4)))
                continue
            if not line.strip():
                cur = None
            m = re.search(r"Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/", line)
            if m:
                execs.append(int(m.group(1), 16))
    calls = [i for i, pc in enumerate(execs) if pc == entry]
    if not calls:
        sys.exit(f"{log}: {func} never runs (trace with -d in_asm,exec,nochain)")
    i0 = calls[-1]
    caller = fn(execs[i0 - 1]) if i0 > 0 else None
    cycles = instructions = 0
    per = collections.Counter()
    for k in range(i0, len(execs)):
        pc = execs[k]
        if fn(pc) == caller:
            break
        nxt = execs[k + 1] if k + 1 < len(execs) else None
        block = blocks.get(pc, [])
        for j, (a, size, mnemonic, ops) in enumerate(block):
            c = cost(mnemonic, ops)
            if j == len(block) - 1 and nxt is not None and nxt != a + size:
                c += 2  # left the block elsewhere: a taken branch, a call or a return
            cycles += c
            instructions += 1
            per[fn(a)] += c
    print(f"{func}: {instructions} instructions, ~{cycles} cycles ({cycles / instructions:.2f} per instruction)"
          f" = {cycles / 100e3:.2f} ms at 100 MHz")
    for name, c in per.most_common(8):
        print(f"  {name:28s} {c:9d} cycles")


if __name__ == "__main__":
    main()
