# pvh.S - a guest entered through the PVH boot protocol (Xen's
# arch-x86/hvm/start_info.h, as Linux's arch/x86/platform/pvh/head.S uses
# it); prints what the VMM put in hvm_start_info, one fact per line.
#
# The ELF carries a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY (18) whose
# descriptor is the 32-bit physical address of pvh_start; pvh.ld puts it in
# a PT_NOTE program header.  A VMM that finds the note enters pvh_start in
# 32-bit protected mode, paging off, CS = 0x8 (flat 32-bit code), DS/ES/SS
# = 0x10 (flat data), interrupts off, EBX = hvm_start_info (0x6000 in
# podvm), and no stack.  The whole PVH path stays in 32-bit protected mode:
# flat segments and no paging reach every address below 4 GiB, so it uses
# its own 32-bit copies of the print helpers (pm_*, below) instead of the
# 64-bit ones in lib.inc.
#
# e_entry is still the usual 64-bit `_start` (ELF_GUEST_ENTRY).  A VMM that
# misses the note enters there in long mode; the guest then only prints
# "pvh-entry: 64-bit" and resets, so that failure is obvious.
#
# Output (hex = "0x" + significant digits, lowercase, as in bootparams):
#   pvh-entry: 32-bit
#   pvh-magic: <u32 at +0, 8 hex digits, no "0x">   (336ec578)
#       (instead, if the magic is wrong: "pvh-bad-magic", then reset)
#   pvh-version: <u32 at +4, decimal>
#   cmdline: <the NUL-terminated string at cmdline_paddr, at most 4096 bytes>
#       (instead: "cmdline-absent" if cmdline_paddr is 0,
#        "cmdline-unmapped" if the 4096 bytes from it are not all below 4 GiB)
#   memmap-entries: <u32 at +48, decimal>
#   memmap: <addr hex> <size hex> <type decimal>   (one line per entry, max 128)
#       (instead: "memmap-unmapped" if the table is not below 4 GiB)
#   memmap-ram-total: <sum of the sizes of type-1 entries, decimal bytes>
#   modules: <nr_modules, decimal>
#   module: <paddr hex> <size hex>      (the first module; only if nr_modules > 0)
#       (instead: "module-unmapped" if modlist_paddr is 0 or not below 4 GiB)
#   rsdp: <rsdp_paddr, hex>
#   rsdp-sig: <the 8 bytes there as text>    (only if rsdp_paddr is not 0 and below 4 GiB)
#   pvh-done
# then resets.
        .include "lib.inc"

        # struct hvm_start_info (all little-endian)
        .equ SI_MAGIC,          0       # u32
        .equ SI_VERSION,        4       # u32
        .equ SI_FLAGS,          8       # u32
        .equ SI_NR_MODULES,     12      # u32
        .equ SI_MODLIST_PADDR,  16      # u64
        .equ SI_CMDLINE_PADDR,  24      # u64
        .equ SI_RSDP_PADDR,     32      # u64
        .equ SI_MEMMAP_PADDR,   40      # u64
        .equ SI_MEMMAP_ENTRIES, 48      # u32
        .equ HVM_START_MAGIC,   0x336ec578      # "xEn3" with bit 7 of 'x' set
        # struct hvm_memmap_table_entry: u64 addr, u64 size, u32 type, u32 reserved
        .equ MM_ADDR,           0
        .equ MM_SIZE,           8
        .equ MM_TYPE,           16
        .equ MM_ENTRY_SIZE,     24
        .equ MM_MAX_ENTRIES,    128     # print at most this many
        # struct hvm_modlist_entry: u64 paddr, u64 size, u64 cmdline_paddr, u64 reserved
        .equ MOD_PADDR,         0
        .equ MOD_SIZE,          8
        .equ MOD_ENTRY_SIZE,    32

        .equ XEN_ELFNOTE_PHYS32_ENTRY, 18
        .equ CMDLINE_PRINT_MAX, 4096

        ELF_GUEST_ENTRY

# ---------------------------------------------------------------------------
# 64-bit `main`: only reached when the VMM ignored the PVH note.
# ---------------------------------------------------------------------------
main:
        PRINT "pvh-entry: 64-bit\n"
        jmp reset

# ---------------------------------------------------------------------------
# The PVH ELF note (Linux: ELFNOTE(Xen, XEN_ELFNOTE_PHYS32_ENTRY,
# .long pvh_start_xen) in .note.Xen): namesz, descsz, type, "Xen\0", then
# the 32-bit physical entry address.
# ---------------------------------------------------------------------------
        .pushsection .note.Xen, "a", @note
        .balign 4
        .long 2f - 1f                   # namesz = 4 ("Xen" + NUL)
        .long 4f - 3f                   # descsz = 4
        .long XEN_ELFNOTE_PHYS32_ENTRY
1:      .asciz "Xen"
2:      .balign 4
3:      .long pvh_start
4:      .balign 4
        .popsection

# ---------------------------------------------------------------------------
# Everything below is 32-bit protected-mode code (flat segments, no paging).
# Same register convention as lib.inc: all general-purpose registers are
# preserved unless a comment says otherwise.  Addresses are absolute: the
# guest is linked and loaded at its fixed physical address.
# ---------------------------------------------------------------------------
        .code32

# PM_PRINT "text": the 32-bit PRINT (string literal to .rodata.str).
.macro PM_PRINT str:req
        .pushsection .rodata.str, "a"
.Lpm_print_str\@:
        .asciz "\str"
        .popsection
        push esi
        mov esi, offset .Lpm_print_str\@
        call pm_puts
        pop esi
.endm

# pvh_start: the PVH entry point (the address in the note).
        .globl pvh_start
        .type pvh_start, @function
pvh_start:
        cli                             # already off; stays off
        cld
        mov ebp, ebx                    # ebp = hvm_start_info, for the whole guest
        mov esp, offset guest_stack_top # the VMM gives no stack: use ELF_GUEST_ENTRY's
        jmp pvh_main

pvh_main:
        PM_PRINT "pvh-entry: 32-bit\n"
        cmp dword ptr [ebp + SI_MAGIC], HVM_START_MAGIC
        je 1f
        PM_PRINT "pvh-bad-magic\n"
        jmp pm_reset
1:      PM_PRINT "pvh-magic: "
        mov eax, [ebp + SI_MAGIC]
        mov ecx, 8
        call pm_put_hexn
        call pm_newline

        PM_PRINT "pvh-version: "
        mov eax, [ebp + SI_VERSION]
        xor edx, edx
        call pm_put_dec64
        call pm_newline

        # --- command line -------------------------------------------------
        mov esi, [ebp + SI_CMDLINE_PADDR]
        cmp dword ptr [ebp + SI_CMDLINE_PADDR + 4], 0
        jne 2f                          # at or above 4 GiB
        test esi, esi
        jnz 1f
        PM_PRINT "cmdline-absent\n"
        jmp .Lmemmap
1:      cmp esi, 0x100000000 - CMDLINE_PRINT_MAX
        jbe 3f
2:      PM_PRINT "cmdline-unmapped\n"
        jmp .Lmemmap
3:      PM_PRINT "cmdline: "
        mov ecx, CMDLINE_PRINT_MAX
        call pm_puts_max
        call pm_newline

        # --- memory map ---------------------------------------------------
.Lmemmap:
        PM_PRINT "memmap-entries: "
        mov edi, [ebp + SI_MEMMAP_ENTRIES]      # edi = entries left to print
        mov eax, edi
        xor edx, edx
        call pm_put_dec64
        call pm_newline
        cmp edi, MM_MAX_ENTRIES
        jbe 1f
        mov edi, MM_MAX_ENTRIES
1:      xor ecx, ecx                    # esi:ecx = RAM total (high:low)
        xor esi, esi
        test edi, edi
        jz 5f
        mov ebx, [ebp + SI_MEMMAP_PADDR]        # ebx = current entry
        cmp dword ptr [ebp + SI_MEMMAP_PADDR + 4], 0
        jne 2f
        cmp ebx, 0x100000000 - MM_MAX_ENTRIES * MM_ENTRY_SIZE
        jbe 3f
2:      PM_PRINT "memmap-unmapped\n"
        jmp 5f
3:      PM_PRINT "memmap: "
        mov eax, [ebx + MM_ADDR]
        mov edx, [ebx + MM_ADDR + 4]
        call pm_put_hex64
        mov al, ' '
        call pm_putc
        mov eax, [ebx + MM_SIZE]
        mov edx, [ebx + MM_SIZE + 4]
        call pm_put_hex64
        mov al, ' '
        call pm_putc
        mov eax, [ebx + MM_TYPE]
        xor edx, edx
        call pm_put_dec64
        call pm_newline
        cmp dword ptr [ebx + MM_TYPE], E820_RAM
        jne 4f
        add ecx, [ebx + MM_SIZE]        # 64-bit add: low, then high + carry
        adc esi, [ebx + MM_SIZE + 4]
4:      add ebx, MM_ENTRY_SIZE
        dec edi
        jnz 3b
5:      PM_PRINT "memmap-ram-total: "
        mov eax, ecx
        mov edx, esi
        call pm_put_dec64
        call pm_newline

        # --- modules (the initrd) -----------------------------------------
        PM_PRINT "modules: "
        mov edi, [ebp + SI_NR_MODULES]
        mov eax, edi
        xor edx, edx
        call pm_put_dec64
        call pm_newline
        test edi, edi
        jz .Ldone
        mov ebx, [ebp + SI_MODLIST_PADDR]
        cmp dword ptr [ebp + SI_MODLIST_PADDR + 4], 0
        jne 1f
        test ebx, ebx
        jz 1f
        cmp ebx, 0x100000000 - MOD_ENTRY_SIZE
        jbe 2f
1:      PM_PRINT "module-unmapped\n"
        jmp .Ldone
2:      PM_PRINT "module: "
        mov eax, [ebx + MOD_PADDR]
        mov edx, [ebx + MOD_PADDR + 4]
        call pm_put_hex64
        mov al, ' '
        call pm_putc
        mov eax, [ebx + MOD_SIZE]
        mov edx, [ebx + MOD_SIZE + 4]
        call pm_put_hex64
        call pm_newline

.Ldone:
        PM_PRINT "rsdp: "
        mov eax, [ebp + SI_RSDP_PADDR]
        mov edx, [ebp + SI_RSDP_PADDR + 4]
        call pm_put_hex64
        call pm_newline
        test edx, edx
        jnz 1f
        mov esi, [ebp + SI_RSDP_PADDR]
        test esi, esi
        jz 1f
        cmp esi, 0x100000000 - 8
        ja 1f
        PM_PRINT "rsdp-sig: "
        mov ecx, 8
        call pm_puts_max
        call pm_newline
1:      PM_PRINT "pvh-done\n"
        jmp pm_reset

# ---------------------------------------------------------------------------
# 32-bit print helpers: the lib.inc helpers of the same name without "pm_".
# 64-bit values are passed in EDX:EAX (high:low).
# ---------------------------------------------------------------------------

# pm_putc: send the byte in AL to COM1 (polls LSR.THRE, bounded).
pm_putc:
        push edx
        push ecx
        push eax
        mov ecx, SERIAL_POLLS
        mov dx, COM1_LSR
1:      in al, dx                       # wait until the transmitter is empty
        test al, LSR_THRE
        jnz 2f
        dec ecx
        jnz 1b
2:      pop eax
        mov dx, COM1_DATA
        out dx, al                      # send the byte
        pop ecx
        pop edx
        ret

# pm_newline: print "\n".
pm_newline:
        push eax
        mov al, '\n'
        call pm_putc
        pop eax
        ret

# pm_puts: print the NUL-terminated string at ESI.
pm_puts:
        push eax
        push esi
1:      mov al, [esi]
        test al, al
        jz 2f
        call pm_putc
        inc esi
        jmp 1b
2:      pop esi
        pop eax
        ret

# pm_puts_max: print the string at ESI up to its NUL, but at most ECX bytes.
pm_puts_max:
        push eax
        push ecx
        push esi
        test ecx, ecx
        jz 2f
1:      mov al, [esi]
        test al, al
        jz 2f
        call pm_putc
        inc esi
        dec ecx
        jnz 1b
2:      pop esi
        pop ecx
        pop eax
        ret

# pm_put_hexn: print the low ECX (1..8) hex digits of EAX, lowercase, no prefix.
pm_put_hexn:
        push eax
        push ebx
        push ecx
        push edx
        mov edx, eax
        mov ebx, ecx                    # ebx = digits left to print
        # Rotate the most significant wanted nibble to bits 31:28; each
        # `rol edx, 4` below then brings the next one to 3:0.
        lea ecx, [ebx*4]
        neg ecx
        add ecx, 32                     # cl = 32 - 4*digits (0..28)
        rol edx, cl
1:      rol edx, 4
        mov eax, edx
        and eax, 0xf
        cmp al, 10
        jb 2f
        add al, 'a' - '0' - 10          # 10..15 -> 'a'..'f'
2:      add al, '0'
        call pm_putc
        dec ebx
        jnz 1b
        pop edx
        pop ecx
        pop ebx
        pop eax
        ret

# pm_put_hex64: print EDX:EAX as "0x" + its significant hex digits (at
# least one): the high half's significant digits, then all 8 of the low
# half; or only the low half's significant digits if the high half is 0.
pm_put_hex64:
        push eax
        push ecx
        push edx
        push eax
        mov al, '0'
        call pm_putc
        mov al, 'x'
        call pm_putc
        pop eax
        test edx, edx
        jz 1f
        xchg eax, edx                   # eax = high half, edx = low half
        call pm_hex_digits
        call pm_put_hexn
        mov eax, edx
        mov ecx, 8
        jmp 2f
1:      call pm_hex_digits
2:      call pm_put_hexn
        pop edx
        pop ecx
        pop eax
        ret

# pm_hex_digits: returns ECX = number of significant hex digits of EAX (1..8).
pm_hex_digits:
        push eax
        mov ecx, 1
1:      shr eax, 4
        jz 2f
        inc ecx
        jmp 1b
2:      pop eax
        ret

# pm_put_dec64: print EDX:EAX as an unsigned decimal number (full 64 bits),
# by long division: (high / 10), then (remainder:low / 10), per digit.
pm_put_dec64:
        push eax
        push ebx
        push ecx
        push edx
        push esi
        push edi
        sub esp, 24                     # digit buffer (20 digits max)
        lea esi, [esp + 24]             # fill it backwards from its end
        mov ebx, 10
        mov ecx, eax                    # edx:ecx = the number (high:low)
1:      mov eax, edx
        xor edx, edx
        div ebx                         # eax = high / 10, edx = high % 10
        mov edi, eax                    # edi = new high half
        mov eax, ecx
        div ebx                         # eax = (edx:low) / 10, edx = digit
        mov ecx, eax                    # ecx = new low half
        add dl, '0'
        dec esi
        mov [esi], dl
        mov edx, edi
        mov eax, edi
        or eax, ecx
        jnz 1b                          # until the number is 0
        lea ecx, [esp + 24]             # ecx = end of the digits
2:      mov al, [esi]
        call pm_putc
        inc esi
        cmp esi, ecx
        jb 2b
        add esp, 24
        pop edi
        pop esi
        pop edx
        pop ecx
        pop ebx
        pop eax
        ret

# pm_reset: the i8042 reset of lib.inc's `reset`; halts if nothing happens.
pm_reset:
        mov al, I8042_RESET
        out I8042_CMD, al
1:      cli
        hlt
        jmp 1b
