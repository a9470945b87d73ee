# bootparams.S - prints what the VMM put in boot_params, one fact per line.
#
# Output (numbers: hex = "0x" + significant digits, lowercase; decimal
# where stated; the hdr fields are fixed-width hex without "0x"):
#   zero-page: <RSI at entry, hex>
#   entry-rsp: <RSP at entry, hex>
#   hdr-magic: <the 4 bytes at 0x202 as text, non-printable bytes as '.'>
#   boot-flag: <u16 at 0x1fe, 4 hex digits>
#   hdr-version: <u16 at 0x206, 4 hex digits>
#   loader-type: <u8 at 0x210, 2 hex digits>
#   cmdline-size: <u32 at 0x238, decimal>
#   cmdline-ptr: <cmd_line_ptr | ext_cmd_line_ptr << 32, hex>
#   cmdline: <the command line, exactly, at most 4096 bytes>
#       (instead: "cmdline-absent" if the pointer is 0,
#        "cmdline-unmapped" if it is not inside the identity-mapped 1 GiB)
#   cmdline-tag: <value of the parameter podvm.tag=...>   or   cmdline-tag-absent
#   e820-entries: <u8 at 0x1e8, decimal>
#   e820: <addr hex> <size hex> <type decimal>      (one line per entry, max 128)
#   e820-ram-total: <sum of the sizes of type-1 entries, decimal bytes>
#   initrd: <addr hex> <size hex>                  (ramdisk_image/size + ext_ high bits)
#   initrd-head: <first min(size,16) bytes, 2 hex digits each, no spaces>
#       (only if size > 0; "initrd-head-unmapped" if not inside the first GiB)
#   acpi-rsdp: <acpi_rsdp_addr, u64 at 0x70, hex>
#   acpi-rsdp-sig: <the 8 bytes there as text>    (only if the address is not 0)
#   bootparams-done
# then resets.
        .include "lib.inc"

        .equ CMDLINE_PRINT_MAX, 4096
        .equ INITRD_HEAD, 16

        ELF_GUEST_ENTRY

main:
        # r15 = boot_params, r14 = entry RSP (from ELF_GUEST_ENTRY)
        PRINT "zero-page: "
        mov rax, r15
        call put_hex64
        call newline

        PRINT "entry-rsp: "
        mov rax, r14
        call put_hex64
        call newline

        # --- setup header -------------------------------------------------
        PRINT "hdr-magic: "
        xor ebx, ebx
1:      mov al, [r15 + BP_HDR_MAGIC + rbx]
        cmp al, 0x20                    # printable ASCII only, else '.'
        jb 2f
        cmp al, 0x7e
        jbe 3f
2:      mov al, '.'
3:      call putc
        inc ebx
        cmp ebx, 4
        jb 1b
        call newline

        PRINT "boot-flag: "
        movzx eax, word ptr [r15 + BP_BOOT_FLAG]
        mov ecx, 4
        call put_hexn
        call newline

        PRINT "hdr-version: "
        movzx eax, word ptr [r15 + BP_VERSION]
        mov ecx, 4
        call put_hexn
        call newline

        PRINT "loader-type: "
        movzx eax, byte ptr [r15 + BP_TYPE_OF_LOADER]
        mov ecx, 2
        call put_hexn
        call newline

        # --- command line -------------------------------------------------
        PRINT "cmdline-size: "
        mov eax, [r15 + BP_CMDLINE_SIZE]
        call put_dec64
        call newline

        mov rdi, r15
        call cmdline_ptr                # rax = command line address
        mov r12, rax                    # r12 = command line (0 if none)
        PRINT "cmdline-ptr: "
        call put_hex64
        call newline

        test r12, r12
        jnz 1f
        PRINT "cmdline-absent\n"
        jmp .Le820
1:      mov rax, IDENTITY_LIMIT - CMDLINE_PRINT_MAX
        cmp r12, rax
        jbe 2f
        PRINT "cmdline-unmapped\n"
        xor r12d, r12d                  # do not parse it below
        jmp .Le820
2:      PRINT "cmdline: "
        mov rsi, r12
        mov ecx, CMDLINE_PRINT_MAX
        call puts_max
        call newline

        # look up podvm.tag=<value> with the shared parser
        mov rdi, r12
        lea rsi, [rip + key_tag]
        call cmdline_find
        test rax, rax
        jnz 3f
        PRINT "cmdline-tag-absent\n"
        jmp .Le820
3:      PRINT "cmdline-tag: "
        mov rsi, rax
        call putsn                      # rcx = value length
        call newline

        # --- e820 map -----------------------------------------------------
.Le820:
        PRINT "e820-entries: "
        movzx r12d, byte ptr [r15 + BP_E820_ENTRIES]
        mov eax, r12d
        call put_dec64
        call newline
        cmp r12d, E820_MAX_ENTRIES      # never read past the zero page table
        jbe 1f
        mov r12d, E820_MAX_ENTRIES
1:      lea rbx, [r15 + BP_E820_TABLE]  # rbx = current entry
        xor r13d, r13d                  # r13 = RAM total
        test r12d, r12d
        jz 4f
2:      PRINT "e820: "
        mov rax, [rbx]                  # addr
        call put_hex64
        mov al, ' '
        call putc
        mov rax, [rbx + 8]              # size
        call put_hex64
        mov al, ' '
        call putc
        mov eax, [rbx + 16]             # type
        call put_dec64
        call newline
        cmp dword ptr [rbx + 16], E820_RAM
        jne 3f
        add r13, [rbx + 8]
3:      add rbx, E820_ENTRY_SIZE
        dec r12d
        jnz 2b
4:      PRINT "e820-ram-total: "
        mov rax, r13
        call put_dec64
        call newline

        # --- initrd -------------------------------------------------------
        mov r12d, [r15 + BP_RAMDISK_IMAGE]      # r12 = initrd address
        mov eax, [r15 + BP_EXT_RAMDISK_IMAGE]
        shl rax, 32
        or r12, rax
        mov r13d, [r15 + BP_RAMDISK_SIZE]       # r13 = initrd size
        mov eax, [r15 + BP_EXT_RAMDISK_SIZE]
        shl rax, 32
        or r13, rax
        PRINT "initrd: "
        mov rax, r12
        call put_hex64
        mov al, ' '
        call putc
        mov rax, r13
        call put_hex64
        call newline
        test r13, r13
        jz .Ldone
        mov rax, IDENTITY_LIMIT - INITRD_HEAD
        cmp r12, rax
        jbe 1f
        PRINT "initrd-head-unmapped\n"
        jmp .Ldone
1:      PRINT "initrd-head: "
        cmp r13, INITRD_HEAD            # print min(size, 16) bytes
        jbe 2f
        mov r13d, INITRD_HEAD
2:      xor ebx, ebx
3:      movzx eax, byte ptr [r12 + rbx]
        mov ecx, 2
        call put_hexn
        inc rbx
        cmp rbx, r13
        jb 3b
        call newline

.Ldone:
        mov r12, [r15 + BP_ACPI_RSDP_ADDR]
        PRINT "acpi-rsdp: "
        mov rax, r12
        call put_hex64
        call newline
        test r12, r12
        jz 5f
        PRINT "acpi-rsdp-sig: "
        mov rsi, r12
        mov ecx, 8
        call put_printable
        call newline
5:      PRINT "bootparams-done\n"
        jmp reset

        .section .rodata
key_tag:
        .asciz "podvm.tag"
