# perf_spin.S - keeps every vCPU busy (for the performance suite's
# pause/resume scenario).  The BSP maps the local APIC, copies a 16-bit
# trampoline to 0x8000 and broadcasts INIT, STARTUP, STARTUP to all other
# processors (ICR destination shorthand "all excluding self": no MP table
# needed).  Each AP, in real mode, counts itself in (`lock inc`) and then
# spins forever on a `jmp` to itself.  The BSP waits (bounded) until
# perf.cpus=<n> - 1 APs checked in (default n = 1), prints
# "spin-ready: <cpus running, decimal>", then prints "tick 0", "tick 1", …
# with a busy wait between lines, as `counter` does, forever.  If the APs
# do not all check in: "spin-timeout: <APs in> of <APs expected>", reset.
        .include "lib.inc"

        .equ LAPIC_BASE,     0xfee00000
        .equ LAPIC_ICR_LO,   0x300      # writing it sends the IPI
        .equ ICR_BUSY,       1 << 12    # delivery status: send pending
        .equ ICR_ALL_BUT_SELF, 3 << 18  # destination shorthand
        .equ ICR_INIT,       0x4500 | ICR_ALL_BUT_SELF
        .equ ICR_STARTUP,    0x4608 | ICR_ALL_BUT_SELF  # vector 0x08 -> 0x8000
        .equ ICR_POLLS,      100000
        .equ TRAMP_PHYS,     0x8000
        .equ WAIT_POLLS,     300000
        .equ TICK_SPIN,      20000

        .equ PTE_P,   1 << 0
        .equ PTE_RW,  1 << 1
        .equ PTE_PWT, 1 << 3
        .equ PTE_PCD, 1 << 4
        .equ PTE_PS,  1 << 7

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call cmdline_ptr
        mov rdi, rax
        lea rsi, [rip + key_cpus]
        call cmdline_find               # rax = value, rcx = length
        mov ebp, 1                      # rbp = vCPUs expected
        test rax, rax
        jz 1f
        mov rsi, rax
        call parse_num
        jc 1f
        mov ebp, eax
1:      dec ebp                         # rbp = APs expected
        jz 6f

        call map_lapic
        lea rsi, [rip + tramp_start]
        lea rcx, [rip + tramp_end]
        sub rcx, rsi
        mov edi, TRAMP_PHYS
        rep movsb
        mov r12d, TRAMP_PHYS + (tr_count - tramp_start)
        mov esi, ICR_INIT
        call send_ipi
        mov esi, ICR_STARTUP
        call send_ipi
        call send_ipi                   # second STARTUP, as the MP spec says
        mov ecx, WAIT_POLLS
2:      movzx eax, word ptr [r12]
        cmp eax, ebp
        jae 6f
        dec ecx
        jnz 2b
        PRINT "spin-timeout: "
        call put_dec64
        PRINT " of "
        mov eax, ebp
        call put_dec64
        call newline
        jmp reset

6:      PRINT "spin-ready: "
        lea rax, [rbp + 1]
        call put_dec64
        call newline
        xor ebx, ebx                    # rbx = tick number
7:      PRINT "tick "
        mov rax, rbx
        call put_dec64
        call newline
        inc rbx
        mov ecx, TICK_SPIN
8:      dec ecx
        jnz 8b
        jmp 7b

# send_ipi: ESI = ICR low word (with a destination shorthand).  Writes it
# and polls the delivery-status bit (bounded).
send_ipi:
        push rcx
        push rdx
        mov edx, LAPIC_BASE
        mov [rdx + LAPIC_ICR_LO], esi
        mov ecx, ICR_POLLS
1:      test dword ptr [rdx + LAPIC_ICR_LO], ICR_BUSY
        jz 2f
        dec ecx
        jnz 1b
2:      pop rdx
        pop rcx
        ret

# map_lapic: as in smp.S: PML4 -> PDPT -> {PD0: the first GiB identity
# mapped with 2 MiB pages, PD3: the uncached 2 MiB page of the LAPIC}; CR3.
map_lapic:
        push rax
        push rcx
        push rdi
        lea rdi, [rip + pml4]
        mov ecx, 4 * 512
        xor eax, eax
        rep stosq
        lea rax, [rip + pdpt]
        or rax, PTE_P | PTE_RW
        mov [rip + pml4], rax
        lea rax, [rip + pd0]
        or rax, PTE_P | PTE_RW
        mov [rip + pdpt], rax
        lea rax, [rip + pd3]
        or rax, PTE_P | PTE_RW
        mov [rip + pdpt + 3 * 8], rax
        lea rdi, [rip + pd0]
        mov eax, PTE_P | PTE_RW | PTE_PS
        mov ecx, 512
1:      mov [rdi], rax
        add rax, 0x200000
        add rdi, 8
        dec ecx
        jnz 1b
        mov eax, (LAPIC_BASE & ~0x1fffff) | PTE_P | PTE_RW | PTE_PWT | PTE_PCD | PTE_PS
        mov [rip + pd3 + ((LAPIC_BASE >> 21) & 511) * 8], rax
        lea rax, [rip + pml4]
        mov cr3, rax
        pop rdi
        pop rcx
        pop rax
        ret

# AP trampoline: 16-bit real mode at 0800:0000 (STARTUP vector 0x08).
        .balign 16
tramp_start:
        .code16
        cli
        mov ax, cs
        mov ds, ax
        lock inc word ptr [tr_count - tramp_start]
1:      jmp 1b                          # busy forever
tr_count:
        .word 0
tramp_end:
        .code64

        .section .rodata
key_cpus:       .asciz "perf.cpus"

        .section .bss
        .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd0:    .skip 4096
pd3:    .skip 4096
