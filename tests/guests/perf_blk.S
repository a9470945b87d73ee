# perf_blk.S - guest-driven virtio-blk read throughput for the performance
# suite.  Initialises block device 0 (VERSION_1 only, one queue) as
# virtio_blk does, then reads perf.reqs=<n> requests of perf.sectors=<s>
# sectors each (1..128, one data descriptor of up to 64 KiB), one request
# in flight at a time, polled to completion, sequentially through the disk
# and wrapping at its end.
#
# Command line (numbers decimal or 0x-hex; defaults 1000 and 128):
#   perf.reqs=<n>  perf.sectors=<s>
# Output:
#   perf-blk-start                    # just before the first request
#   perf-blk-done: <requests> <bytes> # after the last one (decimal)
# then halts with interrupts off (the harness ends the VM, so it can read
# the VMM's CPU time first).  A request whose status is not 0 prints
# "blk-error: bad status" and resets; errors as in virtio.inc.
        .include "lib.inc"
        .include "virtio.inc"

        .equ VIRTIO_ID_BLOCK,   2
        .equ BLK_T_IN,          0
        .equ MAX_SECTORS,       128

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup
        mov edi, VIRTIO_ID_BLOCK
        lea rsi, [rip + key_dev]
        call vio_select
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax
        mov rdi, VIRTIO_F_VERSION_1
        mov esi, 1
        call vio_init
        lea rdi, [rip + capacity]
        xor esi, esi
        mov ecx, 8
        mov edx, 4
        call vio_config_read

        lea rsi, [rip + key_reqs]       # r12 = requests
        mov eax, 1000
        call vio_param_num
        mov r12, rax
        lea rsi, [rip + key_sectors]    # r13 = sectors per request
        mov eax, MAX_SECTORS
        call vio_param_num
        mov r13, rax
        test r13, r13
        jz 2f
        cmp r13, MAX_SECTORS
        ja 2f
        cmp r13, [rip + capacity]
        jbe 3f
2:      VIO_FAIL "bad perf.sectors"

3:      # The chain never changes, only the header's sector: build it once.
        lea rdi, [rip + vio_queues]
        mov dword ptr [rip + hdr], BLK_T_IN
        xor eax, eax                    # desc 0: header
        lea rsi, [rip + hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 1
        call vq_desc
        mov eax, 1                      # desc 1: data, device-writable
        lea rsi, [rip + data]
        mov rcx, r13
        shl ecx, 9
        mov edx, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE
        mov r8d, 2
        call vq_desc
        mov eax, 2                      # desc 2: status
        lea rsi, [rip + status]
        mov ecx, 1
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc

        PRINT "perf-blk-start\n"
        xor r9d, r9d                    # r9 = next sector
        xor r10d, r10d                  # r10 = requests done
4:      cmp r10, r12
        jae 6f
        lea rax, [r9 + r13]
        cmp rax, [rip + capacity]
        jbe 5f
        xor r9d, r9d                    # wrap at the end of the disk
5:      mov [rip + hdr + 8], r9
        mov byte ptr [rip + status], 0xff
        xor esi, esi
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 7f
        jmp vio_timeout
7:      cmp byte ptr [rip + status], 0
        je 8f
        VIO_FAIL "bad status"
8:      add r9, r13
        inc r10
        jmp 4b
6:      PRINT "perf-blk-done: "
        mov rax, r10
        call put_dec64
        mov al, ' '
        call putc
        mov rax, r10
        imul rax, r13
        shl rax, 9
        call put_dec64
        call newline
9:      cli
        hlt
        jmp 9b

        .section .rodata
vio_name:       .asciz "blk"
key_dev:        .asciz "blk.dev"
key_reqs:       .asciz "perf.reqs"
key_sectors:    .asciz "perf.sectors"

        .section .bss
        .balign 16
hdr:            .skip 16
status:         .skip 1
        .balign 8
capacity:       .skip 8
        .balign 4096
data:           .skip MAX_SECTORS * 512
