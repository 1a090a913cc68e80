"""Runs one x86-64 function's machine code on Bochs's emulated Sapphire Rapids CPU (which has
AVX-512 and AVX512_BF16) and prints the memory it was asked for afterwards: how the test
command checks a kernel whose instructions the machine it runs on lacks.

Reads a case from stdin, one item a line (addresses and values in hex):
    page ADDR HEX      4 KiB of memory at ADDR (code or data, mapped at the same address)
    reg NAME VALUE     an argument register (rdi, rsi, rdx, rcx, r8, r9)
    call ADDR          the function to call
    out ADDR LEN       memory to print when it has returned
Prints `out ADDR HEX` for each requested range, or `error: ...` and exits 1: when the code
touches memory it was not given (it called out of itself or read a constant elsewhere), raises
an exception, or the emulated CPU lacks AVX512_BF16.

Needs bochscpu-python (scripts/bochs-tools.sh installs it and the loader shim that selects the
Sapphire Rapids model).
"""
import os
import sys

import bochscpu
import bochscpu.cpu
import bochscpu.memory

PAGE = 4096
STACK = 0x0000_0100_0000_0000  # 64 KiB of stack below this address
STUB = 0x0000_0100_1000_0000  # the return address: a page of int3
PROBE = 0x0000_0100_2000_0000
PROBE_CODE = bytes.fromhex("62f2764852c2c3")  # vdpbf16ps zmm0, zmm1, zmm2; ret


def done(code):
    """Exits at once: the binding crashes when the interpreter tears its objects down."""
    sys.stdout.flush()
    os._exit(code)


def fail(msg):
    print(f"error: {msg}")
    done(1)


def setup(pages, pml4=0x10_0000):
    """A session with `pages` mapped at their addresses (guest-physical pages in turn)."""
    sess = bochscpu.Session()

    def missing(gpa):
        fail(f"the code touched unmapped memory (physical {gpa:#x})")

    sess.missing_page_handler = missing
    pt = bochscpu.memory.PageMapLevel4Table()
    for i, (addr, data) in enumerate(sorted(pages.items())):
        gpa = 0x4000_0000 + i * PAGE
        bochscpu.memory.page_insert(gpa, bochscpu.memory.allocate_host_page())
        pt.insert(addr, gpa, 1)
        bochscpu.memory.phy_write(gpa, bytearray(data))
    for hva, g in pt.commit(pml4):
        bochscpu.memory.page_insert(g, hva)
    return sess, pt, pml4


def call(session, regs, rip, zmm=None):
    """Calls the code at `rip` with `regs` (and zmm registers, lists of 8 qwords); the state
    after it returned."""
    sess, _, pml4 = session
    st = bochscpu.State()
    bochscpu.cpu.set_long_mode(st)
    st.cr3 = pml4
    st.cr0 = (st.cr0 | 0x2) & ~0x4  # MP, not EM: SSE/AVX enabled
    st.cr4 = st.cr4 | (1 << 9) | (1 << 10) | (1 << 18)  # OSFXSR, OSXMMEXCPT, OSXSAVE
    st.xcr0 = 0xE7  # x87, SSE, AVX, AVX-512 opmask and upper halves
    st.mxcsr = 0x1F80
    cs = bochscpu.Segment()
    cs.present, cs.selector, cs.base, cs.limit, cs.attr = True, 0x33, 0, 0xFFFF_FFFF, 0x22FB
    ds = bochscpu.Segment()
    ds.present, ds.selector, ds.base, ds.limit, ds.attr = True, 0x2B, 0, 0xFFFF_FFFF, 0xCF3
    st.cs = cs
    st.ds = st.ss = st.es = st.fs = st.gs = ds
    for name, value in regs.items():
        setattr(st, name, value)
    if zmm:
        z = st.zmm
        for i, q in zmm.items():
            z[i].q = q
        st.zmm = z
    st.rsp = STACK - 8  # the return address's slot: rsp ≡ 8 (mod 16) on entry, as after a call
    st.rip = rip
    bochscpu.memory.virt_write(pml4, STACK - 8, bytearray(STUB.to_bytes(8, "little")))
    sess.cpu.state = st
    seen = []

    def exception(sess, cpu, vector, code):
        seen.append((vector, code))
        sess.stop()

    hook = bochscpu.Hook()
    hook.exception = exception
    sess.run([hook])
    end = sess.cpu.state
    if not seen:
        fail("the code did not return")
    vector, code = seen[0]
    # int3 at the stub: with no interrupt table it raises #GP naming IDT entry 3 (error code
    # 3·8 + 2), rip past the int3.
    if vector == 13 and code == 3 * 8 + 2:
        vector = 3
    if vector == 6:
        fail(f"invalid opcode near {end.rip:#x}: the emulated CPU lacks an instruction the code uses")
    if vector != 3 or end.rip not in (STUB, STUB + 1):
        fail(f"exception {vector} at {end.rip:#x}")
    return end


def main():
    pages, regs, rip, outs = {}, {}, None, []
    for line in sys.stdin:
        kind, *rest = line.split()
        if kind == "page":
            pages[int(rest[0], 16)] = bytes.fromhex(rest[1])
        elif kind == "reg":
            regs[rest[0]] = int(rest[1], 16)
        elif kind == "call":
            rip = int(rest[0], 16)
        elif kind == "out":
            outs.append((int(rest[0], 16), int(rest[1], 16)))
    if rip is None:
        fail("no call line")
    for p in range(STACK - 16 * PAGE, STACK, PAGE):
        pages[p] = bytes(PAGE)
    pages[STUB] = b"\xcc" * PAGE
    pages[PROBE] = PROBE_CODE + bytes(PAGE - len(PROBE_CODE))
    session = setup(pages)
    # The CPU model must have the instruction: lanes of 1.0 plus two products 1·2 are 5.0.
    ones = 0x3F800000_3F800000  # two f32 1.0
    pair = (0x3F80 << 16 | 0x3F80) * 0x1_0000_0001  # two lanes of the bf16 pair (1, 1)
    twos = (0x4000 << 16 | 0x4000) * 0x1_0000_0001
    st = call(session, {}, PROBE, {0: [ones] * 8, 1: [pair] * 8, 2: [twos] * 8})
    if st.zmm[0].q != [0x40A00000_40A00000] * 8:
        fail("the emulated CPU has no AVX512_BF16 (is the loader shim of scripts/bochs-tools.sh preloaded?)")
    call(session, regs, rip)
    pml4 = session[2]
    for addr, length in outs:
        data = bochscpu.memory.virt_read(pml4, addr, length)
        print(f"out {addr:x} {bytes(data).hex()}")
    done(0)


if __name__ == "__main__":
    main()
