# perf_net.S - guest-driven virtio-net transmit rate for the performance
# suite.  Initialises network device 0 (VERSION_1 only; receiveq 0 with no
# buffers, transmitq 1), then sends perf.frames=<n> frames of
# perf.len=<bytes> (60..1514, without the 12-byte virtio_net_hdr_v1), one
# in flight at a time, polled to completion.  Every frame is a broadcast
# from 02:00:00:00:00:00 with EtherType 0x88b5 (local experimental), so
# the host's stack drops it.
#
# Command line (numbers decimal or 0x-hex; defaults 1000 and 1514):
#   perf.frames=<n>  perf.len=<bytes>
# Output:
#   perf-net-start                    # just before the first frame
#   perf-net-done: <frames> <bytes>   # after the last one (decimal, frame bytes)
# then halts with interrupts off.  Errors as in virtio.inc.
        .include "lib.inc"
        .include "virtio.inc"

        .equ VIRTIO_ID_NET,     1
        .equ NET_HDR_LEN,       12
        .equ MIN_LEN,           60
        .equ MAX_LEN,           1514
        .equ ETHERTYPE_LE,      0xb588  # 0x88b5 as it sits in memory

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup
        mov edi, VIRTIO_ID_NET
        lea rsi, [rip + key_dev]
        call vio_select
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax
        mov rdi, VIRTIO_F_VERSION_1
        mov esi, 2                      # receiveq, transmitq
        call vio_init

        lea rsi, [rip + key_frames]     # r12 = frames
        mov eax, 1000
        call vio_param_num
        mov r12, rax
        lea rsi, [rip + key_len]        # r13 = frame length
        mov eax, MAX_LEN
        call vio_param_num
        mov r13, rax
        cmp r13, MIN_LEN
        jb 2f
        cmp r13, MAX_LEN
        jbe 3f
2:      VIO_FAIL "bad perf.len"

3:      lea rdi, [rip + frame + NET_HDR_LEN]    # header stays all zero
        mov dword ptr [rdi], -1         # destination ff:ff:ff:ff:ff:ff
        mov word ptr [rdi + 4], -1
        mov byte ptr [rdi + 6], 0x02    # source 02:00:00:00:00:00
        mov word ptr [rdi + 12], ETHERTYPE_LE
        lea rdi, [rip + vio_queues + VQ_BYTES]  # queue 1: transmitq
        xor eax, eax                    # desc 0: header + frame, device-readable
        lea rsi, [rip + frame]
        lea rcx, [r13 + NET_HDR_LEN]
        xor edx, edx
        xor r8d, r8d
        call vq_desc

        PRINT "perf-net-start\n"
        xor r10d, r10d                  # r10 = frames sent
4:      cmp r10, r12
        jae 6f
        xor esi, esi
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 5f
        jmp vio_timeout
5:      inc r10
        jmp 4b
6:      PRINT "perf-net-done: "
        mov rax, r10
        call put_dec64
        mov al, ' '
        call putc
        mov rax, r10
        imul rax, r13
        call put_dec64
        call newline
7:      cli
        hlt
        jmp 7b

        .section .rodata
vio_name:       .asciz "net"
key_dev:        .asciz "net.dev"
key_frames:     .asciz "perf.frames"
key_len:        .asciz "perf.len"

        .section .bss
        .balign 4096
frame:          .skip NET_HDR_LEN + MAX_LEN
