# acpi_devices.S - finds the virtio-mmio devices the way a stock Linux
# kernel does, through ACPI instead of the command line:
# boot_params.acpi_rsdp_addr -> RSDP -> XSDT -> FACP -> DSDT, then every
# LNRO0005 device's _CRS (Memory32Fixed window, extended interrupt), and
# reads the device's registers at that window.
#
# Output, one line per LNRO0005 device in DSDT order, then a count:
#   acpi-virtio: <base hex> gsi=<decimal> magic=<MagicValue hex> id=<DeviceID decimal>
#   acpi-virtio-count: <decimal>
# then resets. A missing table prints "acpi-no-rsdp" / "acpi-no-facp" and
# a device without its resources "acpi-virtio-bad-crs", then ud2 (exit 3).
        .include "lib.inc"
        .include "virtio.inc"

        .equ SDT_LENGTH,         4      # u32 table length
        .equ SDT_HEADER,        36      # table header size
        .equ FADT_X_DSDT,      140      # u64
        .equ HID_LO,    0x4f524e4c      # "LNRO"
        .equ HID_HI,    0x35303030      # "0005"
        .equ CRS_SCAN,          64      # bytes searched for each descriptor

        ELF_GUEST_ENTRY

main:
        call vio_map_4g                 # the windows are above the first GiB
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
4:      mov rsi, [rax + FADT_X_DSDT]            # rsi = DSDT
        mov r12d, [rsi + SDT_LENGTH]
        add r12, rsi
        sub r12, 8                              # r12 = last place a HID fits
        add rsi, SDT_HEADER
        xor r13d, r13d                          # r13 = devices found

.Lscan:
        cmp rsi, r12
        ja .Ldone
        cmp dword ptr [rsi], HID_LO
        jne .Lnext
        cmp dword ptr [rsi + 4], HID_HI
        jne .Lnext
        # Memory32Fixed: 86 09 00 <rw> <base u32> <length u32>
        lea rdi, [rsi + 8]
        mov ecx, CRS_SCAN
5:      cmp byte ptr [rdi], 0x86
        jne 6f
        cmp word ptr [rdi + 1], 0x0009
        je 7f
6:      inc rdi
        dec ecx
        jnz 5b
        jmp .Lbad
7:      mov ebx, [rdi + 4]                      # rbx = window base
        # Extended interrupt: 89 06 00 <flags> <count> <gsi u32>
        mov ecx, CRS_SCAN
8:      cmp byte ptr [rdi], 0x89
        jne 9f
        cmp word ptr [rdi + 1], 0x0006
        je 10f
9:      inc rdi
        dec ecx
        jnz 8b
        jmp .Lbad
10:     mov r14d, [rdi + 5]                     # r14 = GSI
        PRINT "acpi-virtio: "
        mov rax, rbx
        call put_hex64
        PRINT " gsi="
        mov rax, r14
        call put_dec64
        PRINT " magic="
        mov eax, [rbx + VIRTIO_MMIO_MAGIC]
        call put_hex64
        PRINT " id="
        mov eax, [rbx + VIRTIO_MMIO_DEVICE_ID]
        call put_dec64
        call newline
        inc r13
        mov rsi, rdi
.Lnext:
        inc rsi
        jmp .Lscan

.Lbad:
        PRINT "acpi-virtio-bad-crs\n"
        ud2
.Ldone:
        PRINT "acpi-virtio-count: "
        mov rax, r13
        call put_dec64
        call newline
        jmp reset

        .section .rodata
vio_name:
        .asciz "acpi"
