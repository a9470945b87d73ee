# hello_bzimage.S - the hello guest as a Linux bzImage (boot protocol 2.15).
#
# File layout (bzimage.ld links it as a flat binary):
#   0x0000 .. 0x09ff  real-mode setup: (SETUP_SECTS + 1) * 512 bytes, with
#                     the setup header at 0x1f1.  Its 16-bit code is only a
#                     halt loop: podvm never runs it (it boots 64-bit).
#   0x0a00 ..         protected-mode payload, loaded at code32_start (1 MiB):
#                     payload + 0x000  startup_32: halt loop (32-bit boot unsupported)
#                     payload + 0x200  startup_64: 64-bit, position independent,
#                                      entered with RSI = boot_params
# The payload needs no .bss: its 4 KiB stack lies right after the loaded
# bytes, inside init_size.  Header fields that depend on the payload size
# (syssize, init_size) are computed by bzimage.ld.
#
# Prints "Hello from podvm bzImage guest" and resets.
        .include "lib.inc"

        .equ SETUP_SECTS, 4             # setup = (4 + 1) * 512 = 0xa00 bytes

        # ---------------- real-mode setup (file offset 0) -----------------
        .section .setup, "ax"
        .code16
        .globl hdr, hdr_end
setup_start:
        # Boot sector area: a real bootloader would jump past the header.
        cli
1:      hlt
        jmp 1b

        .org 0x1f1
hdr:
        .byte SETUP_SECTS               # 0x1f1 setup_sects
        .word 0                         # 0x1f2 root_flags
        .long _bz_syssize               # 0x1f4 syssize: payload in 16-byte units
        .word 0                         # 0x1f8 ram_size (obsolete)
        .word 0xffff                    # 0x1fa vid_mode: NORMAL_VGA
        .word 0                         # 0x1fc root_dev
        .word 0xaa55                    # 0x1fe boot_flag
        .byte 0xeb                      # 0x200 jump: jmp short setup_code
        .byte setup_code - 0x202
        .ascii "HdrS"                   # 0x202 header magic
        .word 0x020f                    # 0x206 version 2.15
        .long 0                         # 0x208 realmode_swtch
        .word 0x1000                    # 0x20c start_sys_seg (obsolete)
        .word kernel_version - 0x200    # 0x20e kernel_version (offset - 0x200)
        .byte 0                         # 0x210 type_of_loader (set by the loader)
        .byte 0x01                      # 0x211 loadflags: LOADED_HIGH
        .word 0x8000                    # 0x212 setup_move_size
        .long 0x100000                  # 0x214 code32_start
        .long 0                         # 0x218 ramdisk_image (set by the loader)
        .long 0                         # 0x21c ramdisk_size (set by the loader)
        .long 0                         # 0x220 bootsect_kludge
        .word 0                         # 0x224 heap_end_ptr
        .byte 0                         # 0x226 ext_loader_ver
        .byte 0                         # 0x227 ext_loader_type
        .long 0                         # 0x228 cmd_line_ptr (set by the loader)
        .long 0x7fffffff                # 0x22c initrd_addr_max
        .long 0x200000                  # 0x230 kernel_alignment
        .byte 0                         # 0x234 relocatable_kernel: no
        .byte 21                        # 0x235 min_alignment: 2^21
        .word 0x0001                    # 0x236 xloadflags: XLF_KERNEL_64
        .long 2047                      # 0x238 cmdline_size
        .long 0                         # 0x23c hardware_subarch: default PC
        .quad 0                         # 0x240 hardware_subarch_data
        .long 0                         # 0x248 payload_offset (not compressed)
        .long 0                         # 0x24c payload_length
        .quad 0                         # 0x250 setup_data
        .quad 0x100000                  # 0x258 pref_address
        .long _bz_init_size             # 0x260 init_size
        .long 0                         # 0x264 handover_offset: no EFI
        .long 0                         # 0x268 kernel_info_offset: none
hdr_end:                                # 0x26c (checked by bzimage.ld)

setup_code:                             # 16-bit entry of the setup: unsupported
        cli
1:      hlt
        jmp 1b
kernel_version:
        .asciz "podvm-test-guest hello.bzimage"

        .org (SETUP_SECTS + 1) * 512    # pad the setup to whole sectors

        # ---------------- protected-mode payload (loaded at 1 MiB) --------
        .section .text.payload, "ax"
        .code32
startup_32:                             # 32-bit boot protocol: not supported
        cli
1:      hlt
        jmp 1b

        .code64
        .org 0x200
        .globl startup_64
startup_64:                             # 64-bit boot protocol entry
        cli
        cld
        lea rsp, [rip + _bz_stack_top]  # our own stack (the protocol gives none)
        PRINT "Hello from podvm bzImage guest\n"
        jmp reset
