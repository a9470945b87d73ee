# acpi_power.S - powers off or resets through the ACPI registers, found the
# way a kernel finds them: boot_params.acpi_rsdp_addr -> RSDP -> XSDT ->
# FACP (SLEEP_CONTROL_REG, RESET_REG, RESET_VALUE) and the DSDT's \_S5
# package (the SLP_TYP of soft-off).
#
# Command line: acpi.op=off (power off) or acpi.op=reset (reset).
# Output:
#   acpi-sleep-control: <port, hex>
#   acpi-reset: <port, hex> <value, hex>
#   acpi-s5: <SLP_TYP, hex>
#   acpi-poweroff          (then writes SLP_TYP << 2 | SLP_EN to the sleep control port)
#   acpi-reset-write       (then writes the reset value to the reset port)
# If the VM is still running after a bounded wait: "acpi-still-running",
# then ud2 (a triple fault: exit 3). Missing pieces print one of
# "acpi-no-rsdp", "acpi-no-facp", "acpi-no-s5", "acpi-no-op" and also
# triple-fault, so only a working ACPI power path exits 0.
        .include "lib.inc"

        .equ SDT_LENGTH,        4      # u32 table length
        .equ FADT_RESET_ADDR, 120      # RESET_REG (GAS at 116) address
        .equ FADT_RESET_VALUE, 128     # u8
        .equ FADT_X_DSDT,     140      # u64
        .equ FADT_SLEEP_CTL,  248      # SLEEP_CONTROL_REG (GAS at 244) address
        .equ NAME_S5,   0x5f35535f     # "_S5_"
        .equ SLP_EN,    0x20
        .equ WAIT_LOOPS, 3000000

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call acpi_fadt
        test rax, rax
        jnz 4f
        cmp ecx, 1
        jne 3f
        PRINT "acpi-no-rsdp\n"
        ud2
3:      PRINT "acpi-no-facp\n"
        ud2
4:      mov r12, rax                            # r12 = FADT
        mov r13, [r12 + FADT_SLEEP_CTL]         # r13 = sleep control port
        PRINT "acpi-sleep-control: "
        mov rax, r13
        call put_hex64
        call newline
        mov rbx, [r12 + FADT_RESET_ADDR]        # rbx = reset port
        movzx ebp, byte ptr [r12 + FADT_RESET_VALUE]    # rbp = reset value
        PRINT "acpi-reset: "
        mov rax, rbx
        call put_hex64
        mov al, ' '
        call putc
        mov rax, rbp
        call put_hex64
        call newline

        # \_S5: Name (_S5_, Package (n) {a, ...}): "_S5_" 12 <len> <n> then
        # the first element: 0a <byte>, or ZeroOp (00) / OneOp (01).
        mov rsi, [r12 + FADT_X_DSDT]
        mov ecx, [rsi + SDT_LENGTH]
        sub ecx, 9
        jbe .Lno_s5
        xor edx, edx
5:      cmp dword ptr [rsi + rdx], NAME_S5
        je 6f
        inc edx
        cmp edx, ecx
        jb 5b
.Lno_s5:
        PRINT "acpi-no-s5\n"
        ud2
6:      movzx eax, byte ptr [rsi + rdx + 7]
        cmp al, 0x0a
        jne 7f
        movzx eax, byte ptr [rsi + rdx + 8]
        jmp 8f
7:      cmp al, 1                               # ZeroOp -> 0, OneOp -> 1
        ja .Lno_s5
8:      mov r14, rax                            # r14 = SLP_TYP of S5
        PRINT "acpi-s5: "
        call put_hex64
        call newline

        mov rdi, r15
        call cmdline_ptr
        mov rdi, rax
        lea rsi, [rip + key_op]
        call cmdline_find
        test rcx, rcx
        jz .Lno_op
        cmp byte ptr [rax], 'o'
        je .Loff
        cmp byte ptr [rax], 'r'
        je .Lreset
.Lno_op:
        PRINT "acpi-no-op\n"
        ud2

.Loff:
        PRINT "acpi-poweroff\n"
        mov rax, r14
        shl eax, 2
        or eax, SLP_EN
        mov edx, r13d
        out dx, al
        jmp .Lwait
.Lreset:
        PRINT "acpi-reset-write\n"
        mov eax, ebp
        mov edx, ebx
        out dx, al

.Lwait:                                         # the VMM should stop us now
        mov ecx, WAIT_LOOPS
1:      dec ecx
        jnz 1b
        PRINT "acpi-still-running\n"
        ud2

        .section .rodata
key_op:
        .asciz "acpi.op"
