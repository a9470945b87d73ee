# counter.S - prints "tick 0", "tick 1", ... forever (for pause/resume and
# snapshot tests); never exits by itself.  Between lines it busy-waits
# TICK_SPIN iterations (~40k emulated instructions, a few tens of ms on the
# emulating dev hosts, far less on hardware).
        .include "lib.inc"

        .equ TICK_SPIN, 20000

        ELF_GUEST_ENTRY

main:
        xor ebx, ebx                    # rbx = tick number
1:      PRINT "tick "
        mov rax, rbx
        call put_dec64
        call newline
        inc rbx
        mov ecx, TICK_SPIN              # busy wait, no timer needed
2:      dec ecx
        jnz 2b
        jmp 1b
