# perf_touch.S - touches every 4 KiB page of its RAM, then idles (for the
# performance suite's destroy scenario: tearing down a VM whose memory is
# all resident).
#
# Walks the e820 map in boot_params and, for every RAM entry (type 1),
# rewrites one byte of each page below IDENTITY_LIMIT with its own value
# (`or byte ptr [p], 0`: a write fault that changes nothing, so our own
# code and data pages are safe to touch too).  Then prints
# "touch-done: <pages touched, decimal>" and halts with interrupts off,
# forever; or, with "perf.reset=1" on the command line, resets through the
# i8042 right after that line (the destroy scenario's reset -> exit figure,
# the one way to end a guest that podvm and Firecracker share).  About 4
# emulated instructions per page: ~1 M for 1 GiB.  With "perf.delay=<n>"
# it first prints "touch-waiting" and busy-waits n iterations (2
# instructions each) before it touches anything: the snapshot scenario
# saves it there, and times a restored copy's touch of all its memory.
        .include "lib.inc"

        ELF_GUEST_ENTRY

main:
        # perf.delay=<n>: print "touch-waiting", busy-wait n iterations
        # (a window in which the snapshot scenario saves the VM), then touch.
        mov rdi, r15
        call cmdline_ptr
        mov rdi, rax
        lea rsi, [rip + key_delay]
        call cmdline_find               # rax = value, rcx = length
        test rax, rax
        jz 9f
        mov rsi, rax
        call parse_num
        jc 9f
        PRINT "touch-waiting\n"
8:      test rax, rax
        jz 9f
        dec rax
        jmp 8b
9:      movzx ecx, byte ptr [r15 + BP_E820_ENTRIES]
        cmp ecx, E820_MAX_ENTRIES
        jbe 1f
        mov ecx, E820_MAX_ENTRIES
1:      lea rsi, [r15 + BP_E820_TABLE]
        xor ebx, ebx                    # rbx = pages touched
        mov r8, IDENTITY_LIMIT
2:      test ecx, ecx
        jz 6f
        cmp dword ptr [rsi + 16], E820_RAM
        jne 5f
        mov rax, [rsi]                  # start, rounded up to a page
        add rax, 0xfff
        and rax, -4096
        mov rdx, [rsi]
        add rdx, [rsi + 8]              # end
        cmp rdx, r8
        jbe 3f
        mov rdx, r8                     # never past the identity map
3:      cmp rax, rdx
        jae 5f
4:      or byte ptr [rax], 0
        inc rbx
        add rax, 4096
        cmp rax, rdx
        jb 4b
5:      add rsi, E820_ENTRY_SIZE
        dec ecx
        jmp 2b
6:      PRINT "touch-done: "
        mov rax, rbx
        call put_dec64
        call newline
        mov rdi, r15
        call cmdline_ptr
        mov rdi, rax
        lea rsi, [rip + key_reset]
        call cmdline_find               # rax = value, rcx = length
        test rax, rax
        jz 7f
        mov rsi, rax
        call parse_num
        jc 7f
        cmp rax, 1
        je reset
7:      cli
        hlt
        jmp 7b

        .section .rodata
key_reset:      .asciz "perf.reset"
key_delay:      .asciz "perf.delay"
