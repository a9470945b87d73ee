# uperf_net.S - virtio-net frame rates with the measured loops in user
# mode (CPL3, native speed on the dev hosts; see user.inc).  At CPL0 it
# initialises network device 0 with virtio.inc (VERSION_1 and MAC; queue 0
# receiveq, queue 1 transmitq, 256 entries each or the largest power of
# two the device allows), then runs each phase at CPL3 with user.inc's
# engine: perf.qd one-descriptor chains (header + frame) in flight,
# perf.batch published per QueueNotify write, completions polled on the
# used ring.
#   tx<len>   one phase per length of perf.tx: perf.tx_frames frames of
#             <len> bytes (without the 12-byte virtio_net_hdr_v1),
#             broadcast from 02:00:00:00:00:00, EtherType 0x88b5 (so the
#             host's stack drops them), zero payload
#   rx<len>   one phase per length of perf.rx: perf.qd receive buffers of
#             1526 bytes (12 + 1514) stay posted, each completion reposts
#             its buffer; the phase counts perf.rx_frames frames of exactly
#             <len> bytes with EtherType 0x88b5 after the first such frame
#             (which starts the clock); any other frame (a length left from
#             the phase before, another EtherType) is counted as "other"
#             and its buffer reposted.  Something on the host must send
#             them into the tap: the guest only receives.
# Every slot has its own 2 KiB buffer, touched once before the first phase.
#
# Command line (numbers decimal or 0x-hex):
#   perf.qd=<n>         frames in flight, 1..queue size (default 256)
#   perf.batch=<n>      frames per notify, 1..qd (default qd)
#   perf.tx=<l>[:<l>..] transmit phases, up to 4 lengths 60..1514 (default 64:1514)
#   perf.tx_frames=<n>  frames per transmit phase (default 200000; 0: no transmit phase)
#   perf.rx=<l>[:<l>..] receive phases, up to 4 lengths 14..1514 (default: none)
#   perf.rx_frames=<n>  frames per receive phase (default 100000)
#   net.dev=<k>         which network device (default 0)
# Output:
#   uperf-net-start: queue=256 qd=256 batch=256
#   uperf-phase: tx64              # just before the phase starts
#   uperf-done: tx64 <frames> <bytes> <tsc ticks> <notifies> <other>
#   ...                            # tx1514, then rx<len> for each of perf.rx
#   uperf-net-done
# then halts with interrupts off (the harness ends the VM).  Bytes are frame
# bytes (headers not counted).  Errors as in virtio.inc and user.inc, and
#   net-error: bad perf.qd | bad perf.batch | bad perf.tx | bad perf.rx
#   net-error: <phase> failed: code 4      # a used length above 1526
        .include "lib.inc"

        .equ VQ_SIZE,      256
        .equ VQ_DESC,      0x0000        # 16 x 256 bytes
        .equ VQ_AVAIL,     0x1000        # 4 + 2 x 256 + 2 bytes
        .equ VQ_USED,      0x2000        # 4 + 8 x 256 + 2 bytes
        .equ VQ_NUM,       0x3000
        .equ VQ_LAST_USED, 0x3002
        .equ VQ_INDEX,     0x3004
        .equ VQ_MMIO,      0x3008
        .equ VQ_BYTES,     0x4000
        .include "virtio.inc"
        .include "user.inc"

        .equ VIRTIO_ID_NET,     1
        .equ VIRTIO_NET_F_MAC,  5
        .equ NET_HDR_LEN,       12
        .equ MAX_LEN,           1514
        .equ RX_BUF,            NET_HDR_LEN + MAX_LEN   # 1526
        .equ TX_MIN_LEN,        60
        .equ RX_MIN_LEN,        14
        .equ ETHERTYPE_LE,      0xb588  # 0x88b5 as it sits in memory
        .equ SLOT_BYTES,        2048
        .equ MAX_SLOTS,         256
        .equ MAX_PHASES,        4
        .equ NET_E_LEN,         4       # uq_done error: used length too long

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
        mov rdi, VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC)
        mov esi, 2                      # receiveq, transmitq
        call vio_init

        # ---- parameters ----
        movzx ecx, word ptr [rip + vio_queues + VQ_NUM]
        movzx eax, word ptr [rip + vio_queues + VQ_BYTES + VQ_NUM]
        cmp eax, ecx
        jae 2f
        mov ecx, eax                    # the smaller of the two queues
2:      mov [rip + net_queue], rcx
        lea rsi, [rip + key_qd]
        mov eax, ecx
        call vio_param_num
        test rax, rax
        jz 3f
        cmp rax, rcx
        jbe 4f
3:      VIO_FAIL "bad perf.qd"
4:      mov [rip + net_qd], rax
        lea rsi, [rip + key_batch]
        call vio_param_num              # default: qd (still in rax)
        test rax, rax
        jz 5f
        cmp rax, [rip + net_qd]
        jbe 6f
5:      VIO_FAIL "bad perf.batch"
6:      mov [rip + net_batch], rax
        lea rsi, [rip + key_tx_frames]
        mov eax, 200000
        call vio_param_num
        mov [rip + n_tx], rax
        lea rsi, [rip + key_rx_frames]
        mov eax, 100000
        call vio_param_num
        mov [rip + n_rx], rax
        lea rsi, [rip + key_tx]
        lea rdi, [rip + tx_lens]
        mov edx, TX_MIN_LEN
        call parse_lens
        jnc 7f
        VIO_FAIL "bad perf.tx"
7:      test rax, rax
        jnz 8f
        mov qword ptr [rip + tx_lens], 64       # default 64:1514
        mov qword ptr [rip + tx_lens + 8], 1514
        mov eax, 2
8:      mov [rip + n_tx_lens], rax
        lea rsi, [rip + key_rx]
        lea rdi, [rip + rx_lens]
        mov edx, RX_MIN_LEN
        call parse_lens
        jnc 9f
        VIO_FAIL "bad perf.rx"
9:      mov [rip + n_rx_lens], rax

        # ---- user mode; every page the loops use touched once ----
        call user_setup
        lea rax, [rip + user_touch]
        lea rdi, [rip + vio_queues]
        lea rsi, [rip + vio_queues + 2 * VQ_BYTES]
        call user_call
        lea rax, [rip + user_touch]
        lea rdi, [rip + uq_queue]
        lea rsi, [rip + user_stack_top]
        call user_call
        lea rax, [rip + user_touch]
        lea rdi, [rip + tx_bufs]
        lea rsi, [rip + bufs_end]
        call user_call
        lea rax, [rip + net_prepare]
        call user_call

        PRINT "uperf-net-start: queue="
        mov rax, [rip + net_queue]
        call put_dec64
        PRINT " qd="
        mov rax, [rip + net_qd]
        call put_dec64
        PRINT " batch="
        mov rax, [rip + net_batch]
        call put_dec64
        call newline

        cmp qword ptr [rip + n_tx], 0
        je 12f
        xor r12d, r12d                  # r12 = transmit phase
10:     cmp r12, [rip + n_tx_lens]
        jae 12f
        lea rsi, [rip + tx_lens]
        mov rdi, [rsi + r12 * 8]
        mov al, 't'
        call make_name
        mov rsi, [rip + n_tx]
        lea rax, [rip + net_tx_phase]
        call phase
        inc r12
        jmp 10b
12:     cmp qword ptr [rip + n_rx], 0
        je 15f
        xor r12d, r12d                  # r12 = receive phase
13:     cmp r12, [rip + n_rx_lens]
        jae 15f
        lea rsi, [rip + rx_lens]
        mov rdi, [rsi + r12 * 8]
        mov al, 'r'
        call make_name
        mov rsi, [rip + n_rx]
        lea rax, [rip + net_rx_phase]
        call phase
        inc r12
        jmp 13b
15:     PRINT "uperf-net-done\n"
16:     cli
        hlt
        jmp 16b

# phase: (CPL0) RAX = user function, RDI = length, RSI = frames; the name
# in phase_name.  Announces, runs and reports one phase.
phase:
        push rsi
        PRINT "uperf-phase: "
        lea rsi, [rip + phase_name]
        call puts
        call newline
        pop rsi
        call user_call
        lea rsi, [rip + phase_name]
        call uq_check
        call uq_print_result
        ret

# make_name: (CPL0) AL = 't' or 'r', RDI = length.  phase_name = "tx<len>"
# or "rx<len>".
make_name:
        push rax
        push rcx
        push rdx
        push rdi
        push rsi
        lea rsi, [rip + phase_name]
        mov [rsi], al
        mov byte ptr [rsi + 1], 'x'
        mov rax, rdi
        xor ecx, ecx                    # digits, pushed lowest first
1:      xor edx, edx
        mov edi, 10
        div rdi
        add edx, '0'
        push rdx
        inc ecx
        test rax, rax
        jnz 1b
        add rsi, 2
2:      pop rdx
        mov [rsi], dl
        inc rsi
        dec ecx
        jnz 2b
        mov byte ptr [rsi], 0
        pop rsi
        pop rdi
        pop rdx
        pop rcx
        pop rax
        ret

# parse_lens: (CPL0) RSI = cmdline key, RDI = array of MAX_PHASES u64s, EDX
# = the smallest length allowed.  Returns CF=0 and RAX = how many lengths
# `<l>[:<l>...]` the value holds (0 when the key is absent), or CF=1 when it
# is malformed, holds more than MAX_PHASES or a length outside
# EDX..MAX_LEN.
parse_lens:
        push rbx
        push rcx
        push rsi
        push rdi
        call vio_param
        test rax, rax
        jz 4f
        mov rsi, rax
        xor ebx, ebx                    # rbx = lengths so far
1:      cmp ebx, MAX_PHASES
        jae 3f
        call parse_num
        jc 3f
        cmp rax, rdx
        jb 3f
        cmp rax, MAX_LEN
        ja 3f
        mov [rdi + rbx * 8], rax
        inc ebx
        test rcx, rcx
        jz 2f
        cmp byte ptr [rsi], ':'
        jne 3f
        inc rsi
        dec rcx
        jmp 1b
2:      mov eax, ebx
        clc
        jmp 5f
3:      stc
        jmp 5f
4:      xor eax, eax                    # absent (CF=0 from test)
5:      pop rdi
        pop rsi
        pop rcx
        pop rbx
        ret

# ---------------------------------------------------------------------------
# CPL3
# ---------------------------------------------------------------------------

# net_prepare: every transmit buffer's Ethernet header (the virtio header
# stays zero); the receive descriptors (they never change).
net_prepare:
        lea rdi, [rip + tx_bufs + NET_HDR_LEN]
        mov ecx, MAX_SLOTS
1:      mov dword ptr [rdi], -1         # destination ff:ff:ff:ff:ff:ff
        mov word ptr [rdi + 4], -1
        mov byte ptr [rdi + 6], 0x02    # source 02:00:00:00:00:00
        mov word ptr [rdi + 12], ETHERTYPE_LE
        add rdi, SLOT_BYTES
        dec ecx
        jnz 1b
        lea rdi, [rip + vio_queues]     # queue 0: receiveq
        xor eax, eax
        lea rsi, [rip + rx_bufs]
        mov ecx, RX_BUF
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
2:      cmp rax, [rip + net_qd]
        jae 3f
        call vq_desc
        add rsi, SLOT_BYTES
        inc eax
        jmp 2b
3:      xor eax, eax
        USER_RETURN

# net_tx_phase: RDI = frame length, RSI = frames.
net_tx_phase:
        mov [rip + net_len], rdi
        lea rcx, [rdi + NET_HDR_LEN]
        mov [rip + uq_total], rsi
        lea rdi, [rip + vio_queues + VQ_BYTES]  # queue 1: transmitq
        xor eax, eax
        lea rsi, [rip + tx_bufs]
        xor edx, edx                    # device-readable
        xor r8d, r8d
1:      cmp rax, [rip + net_qd]
        jae 2f
        call vq_desc
        add rsi, SLOT_BYTES
        inc eax
        jmp 1b
2:      mov [rip + uq_queue], rdi
        mov qword ptr [rip + uq_rx], 0
        lea rax, [rip + net_tx_done]
        jmp net_run

# net_rx_phase: RDI = frame length, RSI = frames to count.
net_rx_phase:
        mov [rip + net_len], rdi
        mov [rip + uq_total], rsi
        lea rdi, [rip + vio_queues]     # queue 0: receiveq
        mov [rip + uq_queue], rdi
        mov qword ptr [rip + uq_rx], 1
        lea rax, [rip + net_rx_done]
        # fall through
# net_run: RAX = uq_done; the rest of the engine's parameters, run it.
net_run:
        mov [rip + uq_done], rax
        lea rax, [rip + net_nop]
        mov [rip + uq_prep], rax
        mov rax, [rip + net_qd]
        mov [rip + uq_qd], rax
        mov qword ptr [rip + uq_stride], 1
        mov rax, [rip + net_batch]
        mov [rip + uq_batch], rax
        call uq_run
        USER_RETURN

net_nop:
        ret

net_tx_done:
        mov rax, [rip + net_len]
        ret

# net_rx_done: RBX = slot, EDX = used length.
net_rx_done:
        cmp edx, RX_BUF
        ja 2f
        sub edx, NET_HDR_LEN
        jb 1f
        cmp rdx, [rip + net_len]
        jne 1f
        mov rax, rbx
        shl rax, 11                     # SLOT_BYTES
        lea rsi, [rip + rx_bufs]
        cmp word ptr [rsi + rax + NET_HDR_LEN + 12], ETHERTYPE_LE
        jne 1f
        mov eax, edx
        ret
1:      mov rax, -1                     # not ours: counted as other
        ret
2:      mov rax, -NET_E_LEN
        ret

        .section .rodata
vio_name:       .asciz "net"
key_dev:        .asciz "net.dev"
key_qd:         .asciz "perf.qd"
key_batch:      .asciz "perf.batch"
key_tx:         .asciz "perf.tx"
key_tx_frames:  .asciz "perf.tx_frames"
key_rx:         .asciz "perf.rx"
key_rx_frames:  .asciz "perf.rx_frames"

        .section .bss
        .balign 8
net_queue:      .skip 8
net_qd:         .skip 8
net_batch:      .skip 8
n_tx:           .skip 8
n_rx:           .skip 8
n_tx_lens:      .skip 8
n_rx_lens:      .skip 8
tx_lens:        .skip MAX_PHASES * 8
rx_lens:        .skip MAX_PHASES * 8
net_len:        .skip 8                 # the current phase's frame length
phase_name:     .skip 16
        .balign 4096
tx_bufs:        .skip MAX_SLOTS * SLOT_BYTES
rx_bufs:        .skip MAX_SLOTS * SLOT_BYTES
bufs_end:
