# vmgenid.S - finds the VM generation id the way Linux's vmgenid driver
# does, as far as a guest without an AML interpreter can:
# boot_params.acpi_rsdp_addr -> RSDP -> XSDT -> FACP -> DSDT, then
#
#   1. the device: the first Device (ExtOpPrefix 0x5b, DeviceOp 0x82,
#      PkgLength) whose body holds Name (_HID, "VMGENCTR") (08 "_HID" 0d
#      "VMGENCTR" 00), the id Linux's driver matches;
#   2. its ADDR method, in the shape podvm writes it:
#      Method (ADDR, 0) { Return (Package (2) { low, high }) } =
#      14 <PkgLength> "ADDR" <flags: 0 arguments> a4 (Return) 12 (Package)
#      <PkgLength> 02 0c <low u32> 0c <high u32> (two DWordConsts; the
#      first "ADDR" in the body that MethodOp and a PkgLength precede);
#      the address is low | high << 32, as the driver computes it;
#   3. the Generic Event Device: the first Device whose body holds
#      Name (_HID, "ACPI0013"), and the first extended interrupt
#      descriptor (89 06 00 <flags> <count> <GSI u32>) in it, its _CRS.
#
# Output:
#   vmgenid-addr: <address, hex>
#   vmgenid: <the 16 bytes there, 32 hex digits in memory order>
#   vmgenid-ged-gsi: <the GED's interrupt, decimal>
# then resets; with vmgenid.wait=1 on the command line it first prints
#   vmgenid-waiting
# and polls the 16 bytes (WAIT_POLLS times at most) until they change:
#   vmgenid-changed: <the new 16 bytes, once two reads in a row agree>
#   vmgenid-irq: <GSI>   (the 8259's IRR shows an edge on the GED's line;
#                         "vmgenid-irq: none" if none came in IRQ_POLLS reads)
# or, when they never change, "vmgenid-unchanged".  A missing table or
# object prints "vmgenid-no-rsdp" / "vmgenid-no-facp" / "vmgenid-no-device"
# / "vmgenid-bad-addr" / "vmgenid-addr-unmapped" / "vmgenid-no-ged", then
# ud2 (exit 3).
        .include "lib.inc"

        .equ SDT_LENGTH,         4      # u32 table length
        .equ SDT_HEADER,        36      # table header size
        .equ FADT_X_DSDT,      140      # u64
        .equ NAME_ADDR,   0x52444441    # "ADDR"
        .equ NAME_HID,    0x4449485f    # "_HID"
        .equ AML_NAME_OP,     0x08
        .equ AML_STRING_PREFIX, 0x0d
        .equ AML_METHOD_OP,   0x14
        .equ AML_PACKAGE_OP,  0x12
        .equ AML_RETURN_OP,   0xa4
        .equ AML_DWORD_PREFIX, 0x0c
        .equ AML_EXT_PREFIX,  0x5b
        .equ AML_DEVICE_OP,   0x82
        .equ HID_MATCH_LEN,     15      # 08 "_HID" 0d <8 characters> 00
        .equ CRS_EXT_IRQ,     0x89      # extended interrupt descriptor tag
        .equ WAIT_POLLS,    500000      # ~2.5 M instructions: 1-5 s here
        .equ SETTLE_READS,    1000      # re-reads until the id is stable
        .equ IRQ_POLLS,      10000      # IRR reads (each an exit, ~12 us)
        .equ PIC_MASTER,      0x20      # 8259 command port (slave: 0xa0)
        .equ PIC_SLAVE,       0xa0
        .equ OCW3_READ_IRR,   0x0a      # OCW3: the next read returns IRR

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call acpi_fadt
        test rax, rax
        jnz 1f
        cmp ecx, 1
        jne 2f
        PRINT "vmgenid-no-rsdp\n"
        ud2
2:      PRINT "vmgenid-no-facp\n"
        ud2
1:      mov r12, [rax + FADT_X_DSDT]            # r12 = DSDT
        mov r13d, [r12 + SDT_LENGTH]
        add r13, r12                            # r13 = its end
        add r12, SDT_HEADER                     # r12 = its AML

        mov rbx, [rip + hid_vmgenid]
        call find_device
        jnc 1f
        PRINT "vmgenid-no-device\n"
        ud2
1:      call find_addr                          # rax = the id's address
        jnc 1f
        PRINT "vmgenid-bad-addr\n"
        ud2
1:      lea rcx, [rax + 16]
        cmp rcx, IDENTITY_LIMIT
        jbe 1f
        PRINT "vmgenid-addr-unmapped\n"
        ud2
1:      mov rbx, rax                            # rbx = the id
        PRINT "vmgenid-addr: "
        call put_hex64
        call newline
        PRINT "vmgenid: "
        mov rsi, rbx
        mov ecx, 16
        call put_hex_bytes
        call newline

        push rbx
        mov rbx, [rip + hid_ged]
        call find_device
        pop rbx
        jc .Lno_ged
        mov rcx, rdi
        sub rcx, 9                              # last place a descriptor fits
1:      cmp rsi, rcx
        ja .Lno_ged
        cmp byte ptr [rsi], CRS_EXT_IRQ
        jne 2f
        cmp word ptr [rsi + 1], 0x0006          # length 6
        je 3f
2:      inc rsi
        jmp 1b
3:      mov r14d, [rsi + 5]                     # r14 = the GED's GSI
        PRINT "vmgenid-ged-gsi: "
        mov rax, r14
        call put_dec64
        call newline

        mov rdi, r15
        call cmdline_ptr
        mov rdi, rax
        lea rsi, [rip + key_wait]
        call cmdline_find
        cmp rcx, 1
        jne reset
        cmp byte ptr [rax], '1'
        jne reset

        # The id to compare with is taken before "vmgenid-waiting" goes
        # out: a VM paused once that line is out and restored with a new id
        # must see the change.
        mov r8, [rbx]
        mov r9, [rbx + 8]
        PRINT "vmgenid-waiting\n"
        mov ecx, WAIT_POLLS
1:      cmp r8, [rbx]
        jne 2f
        cmp r9, [rbx + 8]
        jne 2f
        dec ecx
        jnz 1b
        PRINT "vmgenid-unchanged\n"
        jmp reset

        # The VMM may be writing the 16 bytes as we read them: take them
        # once two reads in a row agree.
2:      mov ecx, SETTLE_READS
        mov r8, [rbx]
        mov r9, [rbx + 8]
3:      mov r10, [rbx]
        mov r11, [rbx + 8]
        cmp r10, r8
        jne 4f
        cmp r11, r9
        je 5f
4:      mov r8, r10
        mov r9, r11
        dec ecx
        jnz 3b
5:      push r9
        push r8
        PRINT "vmgenid-changed: "
        mov rsi, rsp
        mov ecx, 16
        call put_hex_bytes
        call newline
        add rsp, 16

        # The change comes with an edge on the GED's line. The 8259s are
        # masked, but an edge still sets the line's bit in IRR.
        cmp r14, 16
        jae .Lno_irq
        mov edx, PIC_MASTER
        mov ecx, r14d
        cmp ecx, 8
        jb 1f
        mov edx, PIC_SLAVE
        sub ecx, 8
1:      mov ebx, 1
        shl ebx, cl                             # ebx = the line's IRR bit
        mov ecx, IRQ_POLLS
2:      mov al, OCW3_READ_IRR
        out dx, al
        in al, dx
        test al, bl
        jnz 3f
        dec ecx
        jnz 2b
.Lno_irq:
        PRINT "vmgenid-irq: none\n"
        jmp reset
3:      PRINT "vmgenid-irq: "
        mov rax, r14
        call put_dec64
        call newline
        jmp reset

.Lno_ged:
        PRINT "vmgenid-no-ged\n"
        ud2

# find_device: RBX = the 8 characters of a _HID string (a little-endian
# qword), R12..R13 = the AML to search.  Finds the first Device whose body
# (PkgLength bytes from its PkgLength on) holds 08 "_HID" 0d <RBX> 00.
# Returns CF=0, RSI = the first byte after its PkgLength and RDI = its
# end; or CF=1 (none).  RAX, RCX, RDX are clobbered.
find_device:
        mov rsi, r12
1:      lea rax, [rsi + 3]
        cmp rax, r13
        jae 6f
        cmp byte ptr [rsi], AML_EXT_PREFIX
        jne 5f
        cmp byte ptr [rsi + 1], AML_DEVICE_OP
        jne 5f
        lea rdx, [rsi + 2]
        call pkg_length                         # rax = length, rcx = its bytes
        lea rdi, [rdx + rax]                    # rdi = the device's end
        cmp rdi, r13
        ja 5f
        add rdx, rcx                            # rdx = its name, then body
        mov rax, rdi
        sub rax, HID_MATCH_LEN                  # rax = last place a match fits
2:      cmp rdx, rax
        ja 5f
        cmp byte ptr [rdx], AML_NAME_OP
        jne 3f
        cmp dword ptr [rdx + 1], NAME_HID
        jne 3f
        cmp byte ptr [rdx + 5], AML_STRING_PREFIX
        jne 3f
        cmp rbx, [rdx + 6]
        jne 3f
        cmp byte ptr [rdx + 14], 0
        jne 3f
        lea rsi, [rsi + 2]
        add rsi, rcx                            # rsi = after the PkgLength
        clc
        ret
3:      inc rdx
        jmp 2b
5:      inc rsi
        jmp 1b
6:      stc
        ret

# find_addr: RSI..RDI = a device's body.  Finds its ADDR method (see the
# top of the file) and returns CF=0 and RAX = low | high << 32, or CF=1.
# RCX, RDX, RSI are clobbered; RDI and R12 are kept.
find_addr:
        push rbx
        lea rbx, [rsi + 1]                      # a name needs an opcode before it
1:      lea rax, [rbx + 4]
        cmp rax, rdi
        jae 9f
        cmp dword ptr [rbx], NAME_ADDR
        je 2f
        inc rbx
        jmp 1b
        # MethodOp, then a PkgLength of 1..4 bytes that ends right before
        # the name.
2:      mov ecx, 1
4:      lea rdx, [rbx - 1]
        sub rdx, rcx                            # rdx = where MethodOp would be
        cmp rdx, rsi                            # (inside the device)
        jb 5f
        cmp byte ptr [rdx], AML_METHOD_OP
        jne 5f
        push rcx
        inc rdx
        call pkg_length
        mov rdx, rcx
        pop rcx
        cmp rdx, rcx
        je 7f
5:      inc ecx
        cmp ecx, 4
        jbe 4b
        inc rbx                                 # not ADDR's declaration
        jmp 1b
7:      test byte ptr [rbx + 4], 0x07           # MethodFlags: no arguments
        jnz 9f
        cmp byte ptr [rbx + 5], AML_RETURN_OP
        jne 9f
        cmp byte ptr [rbx + 6], AML_PACKAGE_OP  # Package (2) { low, high }
        jne 9f
        lea rdx, [rbx + 7]
        call pkg_length
        lea rsi, [rdx + rcx]                    # rsi = NumElements
        lea rax, [rsi + 11]
        cmp rax, rdi                            # 2 DWordConsts in the device
        ja 9f
        cmp byte ptr [rsi], 2
        jne 9f
        cmp byte ptr [rsi + 1], AML_DWORD_PREFIX
        jne 9f
        cmp byte ptr [rsi + 6], AML_DWORD_PREFIX
        jne 9f
        mov eax, [rsi + 7]                      # high
        shl rax, 32
        mov ecx, [rsi + 2]                      # low
        or rax, rcx
        pop rbx
        clc
        ret
9:      pop rbx
        stc
        ret

# pkg_length: RDX = an AML PkgLength (ACPI 6.5, 20.2.4: bits 7-6 of the
# first byte count the bytes that follow; alone, its bits 5-0 are the
# length, else bits 3-0 are its low nibble and each following byte the
# next 8 bits).  Returns RAX = the length and RCX = the PkgLength's size
# in bytes (1-4).
pkg_length:
        push rbx
        push r8
        push r9
        push r10
        movzx eax, byte ptr [rdx]
        mov r10d, eax
        shr r10d, 6                             # r10 = bytes that follow
        jnz 1f
        and eax, 0x3f
        mov ecx, 1
        jmp 3f
1:      and eax, 0x0f
        mov ebx, 1                              # rbx = index of the next byte
        mov r8d, 4                              # r8 = its shift
2:      movzx r9d, byte ptr [rdx + rbx]
        mov ecx, r8d
        shl r9, cl
        or rax, r9
        add r8d, 8
        inc ebx
        cmp rbx, r10
        jbe 2b
        mov ecx, ebx
3:      pop r10
        pop r9
        pop r8
        pop rbx
        ret

        .section .rodata
hid_vmgenid:
        .ascii "VMGENCTR"
hid_ged:
        .ascii "ACPI0013"
key_wait:
        .asciz "vmgenid.wait"
