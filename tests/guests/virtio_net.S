# virtio_net.S - drives a virtio-mmio network device (DeviceID 1) by polling.
#
# Picks network device number <k> (net.dev=<k>, 0-based among the network
# devices; default 0) and initialises it with features VERSION_1 and, when
# offered, MAC (nothing else: no offloads, no MRG_RXBUF, no control queue),
# so every packet starts with the 12-byte struct virtio_net_hdr_v1.  Queue 0
# is the receiveq, queue 1 the transmitq.
#
# Right after DRIVER_OK it posts 4 receive buffers of 1526 bytes (12 + 1514),
# each one device-writable descriptor, and notifies queue 0.  It then sends
# one broadcast frame as a single device-readable descriptor holding the
# (all-zero) header and the frame:
#   ff:ff:ff:ff:ff:ff, source = our MAC, EtherType 0x88b5 (local
#   experimental), payload "podvm-tx <net.tag value, or none>" (the tag cut
#   to 64 bytes), zero-padded to a 60-byte frame.
# With net.rx=1 it then polls the receiveq (at most 2,000,000 polls, ~10 s
# or more here) for a frame with EtherType 0x88b5; any other frame (IPv6
# router solicitations on a new tap, ...) goes straight back to the device
# and the polling goes on.
#
# Output, in this order (each line ends with "\n"):
#   net-mac: <mac, xx:xx:xx:xx:xx:xx lowercase>
#       (instead "net-mac: none" when MAC is not offered; the frame's source
#        address is then 02:00:00:00:00:00)
#   net-tx: done                              (the transmitq returned the frame)
#   net-rx-len: <frame length without the 12-byte header, decimal>  \
#   net-rx-head: <first min(32, length) frame bytes, hex>            | only with
#   net-rx-text: <payload after the 14-byte Ethernet header, up to   | net.rx=1
#                 the first NUL, at most 64 bytes and the frame's    |
#                 end; bytes outside 0x20..0x7e as '.'>             /
#   net-done
# then resets.
# Errors: "net-error: ..." (see virtio.inc; here also "no device", "bad used
# id", "bad used len" (more than 1526 bytes)), "net-timeout" (the frame sent
# did not come back within VIO_POLLS polls), "net-rx-timeout" (no 0x88b5
# frame within RX_POLLS polls); each then resets (no "net-done").
        .include "lib.inc"
        .include "virtio.inc"

        .equ VIRTIO_ID_NET,     1
        .equ NET_F_MAC,         1 << 5
        .equ NET_FEATURES,      VIRTIO_F_VERSION_1 | NET_F_MAC

        .equ NET_HDR_LEN,       12      # struct virtio_net_hdr_v1
        .equ RX_BUFS,           4
        .equ RX_BUF_LEN,        1526    # 12 + 1514
        .equ RX_STRIDE,         1536
        .equ RX_POLLS,          2000000
        .equ RX_HEAD_BYTES,     32
        .equ RX_TEXT_MAX,       64
        .equ ETH_HLEN,          14
        .equ ETH_ZLEN,          60      # minimum frame (without FCS)
        .equ ETHERTYPE_LE,      0xb588  # 0x88b5 as it sits in memory, read as a u16
        .equ TAG_MAX,           64
        .equ TX_PREFIX_LEN,     9       # "podvm-tx "
        .equ TX_BUF_LEN,        NET_HDR_LEN + ETH_HLEN + TX_PREFIX_LEN + TAG_MAX

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup

        mov edi, VIRTIO_ID_NET
        lea rsi, [rip + key_dev]
        call vio_select                 # rax = base, rcx = network devices
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax
        mov rdi, NET_FEATURES
        mov esi, 2                      # receiveq, transmitq
        call vio_init
        mov r13, rdx                    # r13 = negotiated features

        # ---- post the receive buffers ----------------------------------------
        lea rdi, [rip + rx_bufs]
        mov ecx, RX_BUFS * RX_STRIDE
        call zero_bytes
        lea rdi, [rip + vio_queues]     # queue 0
        lea rsi, [rip + rx_bufs]
        mov ecx, RX_BUF_LEN
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        xor eax, eax                    # eax = descriptor = buffer number
2:      call vq_desc
        push rsi
        mov esi, eax
        call vq_push
        pop rsi
        add rsi, RX_STRIDE
        inc eax
        cmp eax, RX_BUFS
        jb 2b
        call vq_notify

        # ---- MAC ---------------------------------------------------------------
        PRINT "net-mac: "
        bt r13, 5                       # VIRTIO_NET_F_MAC negotiated?
        jc 3f
        mov byte ptr [rip + mac], 0x02  # locally administered 02:00:00:00:00:00
        PRINT "none\n"
        jmp 6f
3:      lea rdi, [rip + mac]
        xor esi, esi                    # config offset 0: u8 mac[6]
        mov ecx, 6
        mov edx, 1                      # byte accesses
        call vio_config_read
        xor ecx, ecx
4:      test ecx, ecx                   # ':' between the bytes
        jz 5f
        mov al, ':'
        call putc
5:      movzx eax, byte ptr [rdi + rcx]
        push rcx
        mov ecx, 2
        call put_hexn
        pop rcx
        inc ecx
        cmp ecx, 6
        jb 4b
        call newline
6:
        # ---- build and send the frame ------------------------------------------
        lea rdi, [rip + tx_buf]
        mov ecx, TX_BUF_LEN
        call zero_bytes                 # header all zero, padding zero
        lea rdi, [rip + tx_buf + NET_HDR_LEN]   # rdi = frame
        mov dword ptr [rdi], -1         # destination ff:ff:ff:ff:ff:ff
        mov word ptr [rdi + 4], -1
        mov eax, [rip + mac]            # source = our MAC
        mov [rdi + 6], eax
        mov ax, [rip + mac + 4]
        mov [rdi + 10], ax
        mov word ptr [rdi + 12], ETHERTYPE_LE
        add rdi, ETH_HLEN
        lea rsi, [rip + tx_prefix]
        mov ecx, TX_PREFIX_LEN
        rep movsb                       # "podvm-tx "
        lea rsi, [rip + key_tag]
        call vio_param                  # rax = tag, rcx = its length
        test rax, rax
        jnz 7f
        lea rax, [rip + tag_none]
        mov ecx, 4
7:      cmp rcx, TAG_MAX
        jbe 8f
        mov ecx, TAG_MAX
8:      mov r12, rcx                    # r12 = tag length
        mov rsi, rax
        rep movsb
        lea rcx, [r12 + ETH_HLEN + TX_PREFIX_LEN]   # frame length
        cmp ecx, ETH_ZLEN
        jae 9f
        mov ecx, ETH_ZLEN
9:      add ecx, NET_HDR_LEN            # one descriptor: header + frame
        lea rdi, [rip + vio_queues + VQ_BYTES]  # queue 1
        xor eax, eax
        lea rsi, [rip + tx_buf]
        xor edx, edx                    # device-readable, no NEXT
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 10f
        jmp vio_timeout                 # "net-timeout"
10:     test eax, eax
        jz 11f
        VIO_FAIL "bad used id"
11:     PRINT "net-tx: done\n"

        # ---- receive (net.rx=1) ------------------------------------------------
        lea rsi, [rip + key_rx]
        call vio_param
        test rax, rax
        jz .Ldone
        cmp rcx, 1
        jne .Ldone
        cmp byte ptr [rax], '1'
        jne .Ldone
        lea rdi, [rip + vio_queues]     # queue 0
        mov ecx, RX_POLLS               # one budget for all frames
.Lrx_poll:
        call vq_wait                    # eax = buffer, edx = bytes written
        jc .Lrx_timeout
        cmp eax, RX_BUFS
        jb 12f
        VIO_FAIL "bad used id"
12:     cmp edx, RX_BUF_LEN
        jbe 13f
        VIO_FAIL "bad used len"
13:     imul r8d, eax, RX_STRIDE
        lea rsi, [rip + rx_bufs]
        add r8, rsi                     # r8 = the buffer (header, then frame)
        cmp edx, NET_HDR_LEN + ETH_HLEN
        jb .Lrx_repost                  # runt: not ours
        cmp word ptr [r8 + NET_HDR_LEN + 12], ETHERTYPE_LE
        je .Lrx_ours
.Lrx_repost:                            # give the buffer back, keep polling
        mov esi, eax
        call vq_push
        call vq_notify
        jmp .Lrx_poll
.Lrx_ours:
        lea r9d, [edx - NET_HDR_LEN]    # r9 = frame length
        PRINT "net-rx-len: "
        mov eax, r9d
        call put_dec64
        call newline
        PRINT "net-rx-head: "
        lea rsi, [r8 + NET_HDR_LEN]
        mov ecx, r9d
        cmp ecx, RX_HEAD_BYTES
        jbe 14f
        mov ecx, RX_HEAD_BYTES
14:     call put_hex_bytes
        call newline
        PRINT "net-rx-text: "
        lea rsi, [r8 + NET_HDR_LEN + ETH_HLEN]
        lea ecx, [r9d - ETH_HLEN]       # payload bytes (>= 0)
        cmp ecx, RX_TEXT_MAX
        jbe 15f
        mov ecx, RX_TEXT_MAX
15:     call put_printable
        call newline
.Ldone:
        PRINT "net-done\n"
        jmp reset
.Lrx_timeout:
        PRINT "net-rx-timeout\n"
        jmp reset

# zero_bytes: zero the RCX bytes at RDI.
zero_bytes:
        push rax
        push rcx
        push rdi
        xor eax, eax
        rep stosb
        pop rdi
        pop rcx
        pop rax
        ret

        .section .rodata
vio_name:       .asciz "net"
key_dev:        .asciz "net.dev"
key_tag:        .asciz "net.tag"
key_rx:         .asciz "net.rx"
tag_none:       .asciz "none"
tx_prefix:      .ascii "podvm-tx "

        .section .bss
        .balign 8
mac:            .skip 8
        .balign 16
tx_buf:         .skip TX_BUF_LEN
        .balign 4096
rx_bufs:        .skip RX_BUFS * RX_STRIDE
