# sse.S - executes one SSE2 instruction.
# Prints "sse-start", enables SSE the way an OS must before using it in long
# mode (CR0.EM=0, CR0.MP=1, CR4.OSFXSR=1, CR4.OSXMMEXCPT=1; without that,
# real hardware raises #UD), then runs `paddq xmm0, xmm1`.  The KVM on the
# podvm dev hosts only emulates guests and cannot emulate SSE: the VMM sees
# KVM_EXIT_INTERNAL_ERROR (emulation failure) and must report it.  On real
# hardware the guest continues, prints "sse-ok" and resets.
        .include "lib.inc"

        .equ CR0_MP, 1 << 1             # monitor coprocessor
        .equ CR0_EM, 1 << 2             # x87/SSE emulation (must be 0)
        .equ CR4_OSFXSR, 1 << 9         # OS supports fxsave/SSE
        .equ CR4_OSXMMEXCPT, 1 << 10    # OS handles #XM

        ELF_GUEST_ENTRY

main:
        PRINT "sse-start\n"
        mov rax, cr0
        and rax, ~CR0_EM
        or rax, CR0_MP
        mov cr0, rax
        mov rax, cr4
        or rax, CR4_OSFXSR | CR4_OSXMMEXCPT
        mov cr4, rax
        paddq xmm0, xmm1                # emulation failure on the dev hosts
        PRINT "sse-ok\n"
        jmp reset
