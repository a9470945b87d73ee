# smp.S - brings up the application processors (APs) listed in the MP table.
#
# BSP (64-bit, from the ELF entry):
#   1. builds its own page tables: the first GiB identity-mapped again, plus
#      the 2 MiB page holding the local APIC (0xfee00000 is above the 1 GiB
#      the VMM maps), and loads them into CR3;
#   2. finds the MP floating pointer "_MP_" (16-byte aligned, in 0x9fc00..
#      0xa0000, then 0xf0000..0x100000), checks its checksum, then checks the
#      "PCMP" configuration table (signature, checksum) and walks its entries;
#   3. prints every processor entry and the count;
#   4. prints its own "cpu <id> up" (id from the LAPIC ID register);
#   5. copies the 16-bit trampoline below to 0x8000 and, for every enabled
#      processor entry whose APIC id is not its own: INIT, STARTUP, STARTUP
#      (vector 0x08 -> the AP starts in real mode at 0800:0000), polling the
#      ICR delivery-status bit instead of waiting;
#   6. polls the trampoline's counter (bounded) until every AP checked in,
#      prints "smp: <total> cpus up" and resets.
# AP (16-bit real mode, never leaves it): reads its initial APIC id from
# CPUID.1:EBX[31:24], takes the spinlock, prints "cpu <id> up", increments
# the counter, releases the lock and halts with interrupts off.
#
# Output:
#   mptable-at: <address of the floating pointer, hex>
#   mptable-cpu: <apic id> enabled=<0|1> bsp=<0|1>     (per processor entry)
#   mptable: <number of processor entries> cpus
#   bsp: <BSP APIC id>
#   cpu <BSP APIC id> up
#   cpu <AP APIC id> up                                 (per AP, any order)
#   smp: <1 + APs that checked in> cpus up
# Errors (each followed by a reset):
#   mptable-error: not found | bad config table | bad entry
#   smp-timeout: <APs that checked in> of <APs started>
# APIC ids are decimal.
        .include "lib.inc"

        .equ LAPIC_BASE,     0xfee00000
        .equ LAPIC_ID,       0x020      # bits 31:24 = APIC id
        .equ LAPIC_ICR_LO,   0x300      # writing it sends the IPI
        .equ LAPIC_ICR_HI,   0x310      # bits 31:24 = destination APIC id
        .equ ICR_BUSY,       1 << 12    # delivery status: send pending
        .equ ICR_INIT,       0x4500     # INIT, level assert, physical dest
        .equ ICR_STARTUP,    0x4608     # STARTUP, vector 0x08 -> 0x8000
        .equ ICR_POLLS,      100000

        .equ TRAMP_PHYS,     0x8000     # = STARTUP vector 0x08 << 12
        .equ TRAMP_MAX,      0x700      # the AP stack top is at 0x8800

        .equ MP_SIG,         0x5f504d5f # "_MP_" read as a little-endian u32
        .equ PCMP_SIG,       0x504d4350 # "PCMP"
        .equ MAX_APS,        255

        .equ WAIT_POLLS,     300000     # BSP waits at most this many counter polls

        # page-table entry bits
        .equ PTE_P,   1 << 0
        .equ PTE_RW,  1 << 1
        .equ PTE_PWT, 1 << 3
        .equ PTE_PCD, 1 << 4
        .equ PTE_PS,  1 << 7            # 2 MiB page in a page directory

        ELF_GUEST_ENTRY

main:
        call map_lapic

        # ---- find and check the MP table ---------------------------------
        mov edi, 0x9fc00                # last KiB of base memory (EBDA)
        mov edx, 0xa0000
        call scan_mp
        test rax, rax
        jnz 1f
        mov edi, 0xf0000                # BIOS ROM area
        mov edx, 0x100000
        call scan_mp
        test rax, rax
        jnz 1f
        PRINT "mptable-error: not found\n"
        jmp reset
1:      PRINT "mptable-at: "
        call put_hex64
        call newline

        mov ebx, [rax + 4]              # rbx = configuration table ("PCMP")
        test ebx, ebx
        jz .Lbad_config
        cmp rbx, IDENTITY_LIMIT - 0x10000
        jae .Lbad_config
        cmp dword ptr [rbx], PCMP_SIG
        jne .Lbad_config
        movzx ecx, word ptr [rbx + 4]   # base table length
        cmp ecx, 44
        jb .Lbad_config
        mov rsi, rbx
        call checksum
        test al, al
        jnz .Lbad_config

        # ---- BSP APIC id ---------------------------------------------------
        mov eax, LAPIC_BASE             # zero-extended: 0x00000000fee00000
        mov eax, [rax + LAPIC_ID]
        shr eax, 24
        mov [rip + bsp_id], al

        # ---- walk the entries ---------------------------------------------
        # rsi = entry, rdi = end of table, r12d = entries left,
        # r13d = processor entries, rbp = APs recorded in ap_ids
        movzx edi, word ptr [rbx + 4]
        add rdi, rbx
        lea rsi, [rbx + 44]
        movzx r12d, word ptr [rbx + 34]
        xor r13d, r13d
        xor ebp, ebp
.Lentry:
        test r12d, r12d
        jz .Lentries_done
        cmp rsi, rdi
        jae .Lbad_entry
        movzx eax, byte ptr [rsi]       # entry type
        test eax, eax
        jz .Lcpu
        cmp eax, 4                      # 1 bus, 2 ioapic, 3 io-int, 4 local-int
        ja .Lbad_entry
        add rsi, 8
        dec r12d
        jmp .Lentry
.Lcpu:                                  # processor entry, 20 bytes
        lea rax, [rsi + 20]
        cmp rax, rdi
        ja .Lbad_entry
        inc r13d
        PRINT "mptable-cpu: "
        movzx eax, byte ptr [rsi + 1]   # local APIC id
        call put_dec64
        PRINT " enabled="
        movzx eax, byte ptr [rsi + 3]   # flags: bit0 enabled, bit1 BSP
        and eax, 1
        call put_dec64
        PRINT " bsp="
        movzx eax, byte ptr [rsi + 3]
        shr eax, 1
        and eax, 1
        call put_dec64
        call newline
        test byte ptr [rsi + 3], 1      # start only enabled processors ...
        jz 2f
        mov al, [rsi + 1]
        cmp al, [rip + bsp_id]          # ... that are not ourselves
        je 2f
        cmp ebp, MAX_APS
        jae 2f
        lea rdx, [rip + ap_ids]
        mov [rdx + rbp], al
        inc ebp
2:      add rsi, 20
        dec r12d
        jmp .Lentry

.Lbad_config:
        PRINT "mptable-error: bad config table\n"
        jmp reset
.Lbad_entry:
        PRINT "mptable-error: bad entry\n"
        jmp reset

.Lentries_done:
        PRINT "mptable: "
        mov eax, r13d
        call put_dec64
        PRINT " cpus\n"

        PRINT "bsp: "
        movzx eax, byte ptr [rip + bsp_id]
        call put_dec64
        call newline
        PRINT "cpu "
        call put_dec64
        PRINT " up\n"

        # ---- install the trampoline at 0x8000 ------------------------------
        # The ELF cannot load below 1 MiB, so copy it now.  Its lock byte and
        # counter are inside the copied bytes (zero in the image).
        lea rsi, [rip + tramp_start]
        lea rcx, [rip + tramp_end]
        sub rcx, rsi
        mov edi, TRAMP_PHYS
        rep movsb
        mov r12d, TRAMP_PHYS + (tr_count - tramp_start)   # r12 = &counter

        # ---- INIT + STARTUP + STARTUP to every AP -------------------------
        xor ebx, ebx
3:      cmp ebx, ebp
        jae 4f
        lea rdx, [rip + ap_ids]
        movzx edi, byte ptr [rdx + rbx]
        mov esi, ICR_INIT
        call send_ipi
        mov esi, ICR_STARTUP
        call send_ipi
        call send_ipi                   # second STARTUP, as the MP spec says
        inc ebx
        jmp 3b

        # ---- wait for the APs (bounded) ------------------------------------
4:      mov ecx, WAIT_POLLS
5:      movzx eax, word ptr [r12]
        cmp eax, ebp
        jae 6f
        dec ecx
        jnz 5b
        PRINT "smp-timeout: "
        call put_dec64
        PRINT " of "
        mov eax, ebp
        call put_dec64
        call newline
        jmp reset
6:      PRINT "smp: "
        inc eax                         # + the BSP
        call put_dec64
        PRINT " cpus up\n"
        jmp reset

# send_ipi: EDI = destination APIC id, ESI = ICR low word.  Writes ICR high
# then ICR low (the write to ICR low sends), then polls the delivery-status
# bit until the IPI has been accepted (bounded; KVM's in-kernel APIC is
# never busy, real hardware is within microseconds).
send_ipi:
        push rax
        push rcx
        push rdx
        mov edx, LAPIC_BASE
        mov eax, edi
        shl eax, 24
        mov [rdx + LAPIC_ICR_HI], eax
        mov [rdx + LAPIC_ICR_LO], esi
        mov ecx, ICR_POLLS
1:      test dword ptr [rdx + LAPIC_ICR_LO], ICR_BUSY
        jz 2f
        dec ecx
        jnz 1b
2:      pop rdx
        pop rcx
        pop rax
        ret

# scan_mp: look for a valid MP floating pointer on 16-byte boundaries in
# [EDI, EDX).  Returns RAX = its address, or 0.
scan_mp:
        push rcx
        push rsi
1:      cmp rdi, rdx
        jae 3f
        cmp dword ptr [rdi], MP_SIG
        jne 2f
        movzx ecx, byte ptr [rdi + 8]   # length in 16-byte units (1)
        test ecx, ecx
        jz 2f
        shl ecx, 4
        mov rsi, rdi
        call checksum
        test al, al
        jnz 2f
        mov rax, rdi                    # found, checksum ok
        jmp 4f
2:      add rdi, 16
        jmp 1b
3:      xor eax, eax
4:      pop rsi
        pop rcx
        ret

# checksum: AL = sum of the ECX bytes at RSI (mod 256); 0 means valid.
checksum:
        push rcx
        push rdx
        push rsi
        xor eax, eax
        test ecx, ecx
        jz 2f
1:      add al, [rsi]
        inc rsi
        dec ecx
        jnz 1b
2:      pop rsi
        pop rdx
        pop rcx
        ret

# map_lapic: build PML4 -> PDPT -> {PD0: 0..1 GiB identity with 2 MiB
# pages, PD3: the 2 MiB page 0xfec00000 (LAPIC/IOAPIC), uncached} and load
# CR3.  Our code, data and low memory stay mapped exactly as before.
map_lapic:
        push rax
        push rcx
        push rdi
        lea rdi, [rip + pml4]           # the 4 tables are consecutive pages
        mov ecx, 4 * 512
        xor eax, eax
        rep stosq                       # zero them (do not trust .bss)
        lea rax, [rip + pdpt]
        or rax, PTE_P | PTE_RW
        mov [rip + pml4], rax           # PML4[0] -> PDPT (0..512 GiB)
        lea rax, [rip + pd0]
        or rax, PTE_P | PTE_RW
        mov [rip + pdpt], rax           # PDPT[0] -> PD0 (0..1 GiB)
        lea rax, [rip + pd3]
        or rax, PTE_P | PTE_RW
        mov [rip + pdpt + 3 * 8], rax   # PDPT[3] -> PD3 (3..4 GiB)
        lea rdi, [rip + pd0]
        mov eax, PTE_P | PTE_RW | PTE_PS
        mov ecx, 512
1:      mov [rdi], rax                  # PD0[i] = i * 2 MiB, identity
        add rax, 0x200000
        add rdi, 8
        dec ecx
        jnz 1b
        # PD3 index of 0xfee00000 = (0xfee00000 >> 21) & 511 = 503
        mov eax, (LAPIC_BASE & ~0x1fffff) | PTE_P | PTE_RW | PTE_PWT | PTE_PCD | PTE_PS
        mov [rip + pd3 + ((LAPIC_BASE >> 21) & 511) * 8], rax
        lea rax, [rip + pml4]
        mov cr3, rax                    # also flushes the TLB
        pop rdi
        pop rcx
        pop rax
        ret

# ---------------------------------------------------------------------------
# AP trampoline: 16-bit real mode, copied to TRAMP_PHYS (0x8000) and entered
# at 0800:0000 by STARTUP vector 0x08.  Everything is addressed relative to
# tramp_start with DS = CS = 0x0800.  Only code in here runs on the APs.
# ---------------------------------------------------------------------------
        .balign 16
tramp_start:
        .code16
        cli
        cld
        mov ax, cs                      # 0x0800
        mov ds, ax
        mov ss, ax
        mov eax, 1
        cpuid
        shr ebx, 24                     # bl = initial APIC id
        mov di, bx                      # di = APIC id (cpuid clobbers bx..)
        # spinlock: lock xchg (xchg with memory is always locked)
1:      mov al, 1
        xchg al, byte ptr [tr_lock - tramp_start]
        test al, al
        jz 3f
2:      cmp byte ptr [tr_lock - tramp_start], 0   # spin on plain reads
        jne 2b
        jmp 1b
3:      # we own the lock, and with it the one shared AP stack
        mov sp, TRAMP_MAX + 0x100       # SS:SP = 0800:0800 -> 0x8800
        lea si, [tr_msg_cpu - tramp_start]
        call tr_puts
        mov ax, di
        call tr_putdec
        lea si, [tr_msg_up - tramp_start]
        call tr_puts
        lock inc word ptr [tr_count - tramp_start]
        mov byte ptr [tr_lock - tramp_start], 0   # release
4:      cli                             # park forever
        hlt
        jmp 4b

# tr_putc: AL -> COM1 (polls LSR.THRE, bounded).  Clobbers CX, DX.
tr_putc:
        mov ah, al
        mov cx, 0xffff
        mov dx, COM1_LSR
1:      in al, dx
        test al, LSR_THRE
        jnz 2f
        dec cx
        jnz 1b
2:      mov al, ah
        mov dx, COM1_DATA
        out dx, al
        ret

# tr_puts: print the NUL-terminated string at DS:SI.  Clobbers AX, CX, DX, SI.
tr_puts:
1:      mov al, [si]
        test al, al
        jz 2f
        call tr_putc
        inc si
        jmp 1b
2:      ret

# tr_putdec: print AX (0..65535) in decimal.  Clobbers AX, BX, CX, DX.
tr_putdec:
        mov bx, 10
        xor cx, cx                      # digits pushed
1:      xor dx, dx
        div bx
        push dx
        inc cx
        test ax, ax
        jnz 1b
2:      pop ax
        add al, '0'
        push cx
        call tr_putc
        pop cx
        dec cx
        jnz 2b
        ret

tr_msg_cpu:
        .asciz "cpu "
tr_msg_up:
        .asciz " up\n"
        .balign 2
tr_count:                               # APs that checked in
        .word 0
tr_lock:                                # 0 free, 1 taken
        .byte 0
tramp_end:
        # Size check: as fails with "attempt to move .org backwards" if the
        # trampoline would reach the AP stack (only tramp_start..tramp_end
        # is copied; the padding stays in the ELF).
        .org tramp_start + TRAMP_MAX
        .code64

        .section .bss
bsp_id:
        .byte 0
ap_ids:
        .skip MAX_APS
        .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd0:    .skip 4096
pd3:    .skip 4096
