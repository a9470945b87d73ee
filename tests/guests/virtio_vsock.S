# virtio_vsock.S - drives a virtio-mmio socket device (DeviceID 19) by polling.
#
# Picks vsock device number <k> (vsock.dev=<k>, 0-based among the vsock
# devices; default 0) and initialises it with VERSION_1 only and its three
# queues: 0 receiveq, 1 transmitq, 2 eventq (virtio v1.2, 5.10).  It reads
# guest_cid (config le64 at 0) and speaks the stream protocol (5.10.6) with
# the host (CID 2): every packet is the 44-byte struct virtio_vsock_hdr,
# then `len` bytes of payload for RW.  Receive buffers are one
# device-writable descriptor of 44 + 1024 bytes each; a packet is sent as
# one device-readable descriptor (descriptor 0 of the transmitq) and waited
# for.  One 4-byte event buffer is posted on the eventq and never looked at.
#
# Command line (numbers decimal or 0x hex):
#   vsock.dev=<k>         which vsock device (default 0)
#   vsock.mode=echo|slow  what to do (default echo), see below
#   vsock.listen=<port>   the guest port host processes connect to (default 1024)
#   vsock.connect=<port>  the host port the guest connects to (default 5000)
#   vsock.bytes=<n>       slow mode: bytes expected, 1..1048576 (default 16384)
#   vsock.credit=<n>      slow mode: the buf_alloc the guest advertises,
#                         1..65536 (default 4096)
#   vsock.pause=<n>       slow mode: busy-wait iterations (2 instructions
#                         each) before any receive buffer is posted (default 100000)
#
# Both modes first print
#   vsock-cid: <guest_cid, decimal>
#   vsock-listen: <listen port>          (receive buffers are posted: connect now)
# and wait (at most WAIT_POLLS polls) for a REQUEST to the listen port,
# answer RESPONSE (buf_alloc 4096 in echo mode, vsock.credit in slow mode,
# fwd_cnt 0) and print
#   vsock-accepted: <the host port the request came from>
#
# echo: reads RW packets until a '\n' (the line keeps its first 128 bytes;
# bytes after the '\n' are dropped).  If the host ends the connection
# first, it prints
#   vsock-line-cut: <bytes of the line received>
# then vsock-shutdown: / vsock-rst as below, and goes on with the connect
# part.  Otherwise it prints
#   vsock-line: <the line without its '\n'; bytes outside 0x20..0x7e as '.'>
# sends the line back upper-cased (a-z -> A-Z, the '\n' included) and prints
#   vsock-echoed: <bytes sent back>
# then waits for the host to end the connection:
#   vsock-shutdown: <flags, decimal>     (a SHUTDOWN; the guest answers RST:
#                                         3 = RCV|SEND when the host closed
#                                         its stream, 2 = SEND when it only
#                                         shut its writing side)
#   vsock-rst                            (or an RST)
# Then it connects from guest port 49152 to CID 2, vsock.connect:
#   vsock-connect: <port>                (the REQUEST is sent)
#   vsock-connected: <port>              (RESPONSE)  | vsock-refused: <port> (RST;
#                                                    |   then vsock-done, reset)
# sends "hello from guest\n" and prints
#   vsock-sent: 17
# and waits for the host to end the connection (vsock-shutdown: / vsock-rst
# as above).  Finally
#   vsock-done
#
# slow: the guest posts only the one receive buffer that takes the REQUEST,
# so after RESPONSE it has none: it prints
#   vsock-pause: <vsock.pause>
# busy-waits, prints
#   vsock-resume
# posts 8 receive buffers, and receives vsock.bytes bytes, which must be
# byte i = i mod 251, sending a CREDIT_UPDATE (fwd_cnt = bytes consumed)
# after every RW packet; it checks that the device never sends more than
# vsock.credit bytes beyond the last fwd_cnt it reported.  Then
#   vsock-received: <bytes received>
# sends SHUTDOWN (RCV|SEND), waits for the device's RST and prints
#   vsock-closed
#   vsock-done
#
# Errors (then reset, no vsock-done): "vsock-error: ..." as in virtio.inc
# (here also "no device", "bad used id", "bad used len" (a received packet
# shorter than 44 bytes, longer than its buffer, or whose len disagrees with
# its used length), "bad perf parameter" (a vsock.* number that is not a
# number), "bad vsock.mode", "bad vsock.bytes", "bad vsock.credit"), and
#   vsock-error: unexpected op <op> from port <p> to port <q>
#   vsock-error: closed after <n> bytes          (slow)
#   vsock-error: bad byte at <i>                 (slow: not i mod 251)
#   vsock-error: credit overrun                  (slow: more than the credit)
#   vsock-timeout                                (a wait ran out of polls)
        .include "lib.inc"
        .include "virtio.inc"

# vio_init puts queue i in the page vio_queues + i * VQ_BYTES, but
# virtio.inc reserves only VIO_MAX_QUEUES (2) pages.  The event queue's page
# is reserved here, right after them: this must be the first .bss object
# after the include, and the check below fails the build if it is not.
        .pushsection .bss
vsk_evq:        .skip VQ_BYTES
        .popsection
        .if (vsk_evq - vio_queues) - 2 * VQ_BYTES
        .error "the event queue page must directly follow virtio.inc's queue pages"
        .endif

        .equ VIRTIO_ID_VSOCK,   19
        .equ HOST_CID,          2
        .equ HDR_LEN,           44
        .equ TYPE_STREAM,       1
        .equ OP_REQUEST,        1
        .equ OP_RESPONSE,       2
        .equ OP_RST,            3
        .equ OP_SHUTDOWN,       4
        .equ OP_RW,             5
        .equ OP_CREDIT_UPDATE,  6
        .equ SHUTDOWN_BOTH,     3

        # header field offsets (struct virtio_vsock_hdr, packed, little-endian)
        .equ H_SRC_CID,         0
        .equ H_DST_CID,         8
        .equ H_SRC_PORT,        16
        .equ H_DST_PORT,        20
        .equ H_LEN,             24
        .equ H_TYPE,            28
        .equ H_OP,              30
        .equ H_FLAGS,           32
        .equ H_BUF_ALLOC,       36
        .equ H_FWD_CNT,         40

        .equ NRX,               8       # receive buffers
        .equ RX_PAYLOAD,        1024
        .equ RXB,               HDR_LEN + RX_PAYLOAD
        .equ RX_SHIFT,          11      # buffers 2048 bytes apart
        .equ WAIT_POLLS,        2000000 # waits on the host (~10 s or more here)
        .equ LINE_MAX,          128
        .equ ECHO_CREDIT,       4096
        .equ CONNECT_FROM,      49152
        .equ HELLO_LEN,         17      # "hello from guest\n" (checked below)
        .equ PATTERN_MOD,       251
        .equ RXQ_OFF,           0
        .equ TXQ_OFF,           VQ_BYTES

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup

        mov edi, VIRTIO_ID_VSOCK
        lea rsi, [rip + key_dev]
        call vio_select                 # rax = base
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax
        mov rdi, VIRTIO_F_VERSION_1
        mov esi, 3
        call vio_init

        lea rdi, [rip + guest_cid]      # config: le64 guest_cid, two 32-bit reads
        xor esi, esi
        mov ecx, 8
        mov edx, 4
        call vio_config_read
        PRINT "vsock-cid: "
        mov rax, [rip + guest_cid]
        call put_dec64
        call newline

        call read_params

        # one event buffer, never read
        lea rdi, [rip + vsk_evq]
        xor eax, eax
        lea rsi, [rip + ev_buf]
        mov ecx, 4
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        call vq_notify

        mov ecx, NRX
        cmp dword ptr [rip + mode], 0
        je 2f
        mov ecx, 1                      # slow: only the buffer for the REQUEST
2:      call rx_post_n

        PRINT "vsock-listen: "
        mov eax, [rip + listen_port]
        call put_dec64
        call newline

        # ---- wait for the host's REQUEST -----------------------------------
        mov dword ptr [rip + rx_budget], WAIT_POLLS
        call rx_get                     # rsi = packet, eax = descriptor
        mov r10d, eax
        cmp word ptr [rsi + H_OP], OP_REQUEST
        jne bad_packet
        cmp qword ptr [rsi + H_SRC_CID], HOST_CID
        jne bad_packet
        mov ecx, [rsi + H_DST_PORT]
        cmp ecx, [rip + listen_port]
        jne bad_packet
        mov [rip + local_port], ecx
        mov ecx, [rsi + H_SRC_PORT]
        mov [rip + peer_port], ecx
        cmp dword ptr [rip + mode], 0
        jne 3f
        mov eax, r10d
        call rx_repost                  # echo: keep all buffers posted
3:      mov dword ptr [rip + fwd_cnt], 0
        mov eax, ECHO_CREDIT
        cmp dword ptr [rip + mode], 0
        je 4f
        mov eax, [rip + credit]
4:      mov [rip + buf_alloc], eax
        mov ax, OP_RESPONSE
        xor r8d, r8d
        xor ecx, ecx
        call tx_packet
        PRINT "vsock-accepted: "
        mov eax, [rip + peer_port]
        call put_dec64
        call newline
        cmp dword ptr [rip + mode], 0
        jne slow

        # ---- echo: one line, back upper-cased ------------------------------
        xor r12d, r12d                  # r12 = bytes kept in line_buf
        xor r13d, r13d                  # r13 = 1 once the '\n' arrived
        mov dword ptr [rip + rx_budget], WAIT_POLLS
.Lline:
        call rx_get
        mov r10d, eax
        call pkt_ours
        jne bad_packet
        movzx eax, word ptr [rsi + H_OP]
        cmp eax, OP_CREDIT_UPDATE
        je .Lline_next
        cmp eax, OP_SHUTDOWN
        je .Lline_cut
        cmp eax, OP_RST
        je .Lline_cut
        cmp eax, OP_RW
        jne bad_packet
        call rw_len                     # ecx = payload length (checked)
        add [rip + fwd_cnt], ecx
        lea rdi, [rsi + HDR_LEN]
.Lline_byte:
        test ecx, ecx
        jz .Lline_next
        test r13d, r13d
        jnz .Lline_next                 # after the '\n': dropped
        mov al, [rdi]
        cmp r12d, LINE_MAX
        jae 5f
        lea rdx, [rip + line_buf]
        mov [rdx + r12], al
        inc r12d
5:      cmp al, '\n'
        jne 6f
        mov r13d, 1
6:      inc rdi
        dec ecx
        jmp .Lline_byte
.Lline_next:
        mov eax, r10d
        call rx_repost
        test r13d, r13d
        jz .Lline
        jmp .Lline_done
.Lline_cut:                             # the host went away mid-line
        PRINT "vsock-line-cut: "
        mov eax, r12d
        call put_dec64
        call newline
        mov eax, r10d
        call on_close
        jmp connect_out
.Lline_done:
        PRINT "vsock-line: "
        lea rsi, [rip + line_buf]
        mov ecx, r12d
        cmp byte ptr [rsi + rcx - 1], '\n'
        jne 7f
        dec ecx                         # the line without its '\n'
7:      call put_printable_n
        call newline
        # upper-case it into the transmit buffer
        lea rsi, [rip + line_buf]
        lea rdi, [rip + tx_buf + HDR_LEN]
        mov ecx, r12d
8:      mov al, [rsi]
        cmp al, 'a'
        jb 9f
        cmp al, 'z'
        ja 9f
        sub al, 'a' - 'A'
9:      mov [rdi], al
        inc rsi
        inc rdi
        dec ecx
        jnz 8b
        mov ax, OP_RW
        xor r8d, r8d
        mov ecx, r12d
        call tx_packet
        PRINT "vsock-echoed: "
        mov eax, r12d
        call put_dec64
        call newline
        call wait_close

        # ---- the guest connects to the host --------------------------------
connect_out:
        mov dword ptr [rip + local_port], CONNECT_FROM
        mov eax, [rip + connect_port]
        mov [rip + peer_port], eax
        mov dword ptr [rip + buf_alloc], ECHO_CREDIT
        mov dword ptr [rip + fwd_cnt], 0
        PRINT "vsock-connect: "
        call put_dec64
        call newline
        mov ax, OP_REQUEST
        xor r8d, r8d
        xor ecx, ecx
        call tx_packet
        mov dword ptr [rip + rx_budget], WAIT_POLLS
.Lconn_wait:
        call rx_get
        mov r10d, eax
        call pkt_ours
        jne bad_packet
        movzx eax, word ptr [rsi + H_OP]
        mov r11d, eax
        mov eax, r10d
        call rx_repost
        cmp r11d, OP_CREDIT_UPDATE
        je .Lconn_wait
        cmp r11d, OP_RST
        je .Lconn_refused
        cmp r11d, OP_RESPONSE
        jne bad_packet
        PRINT "vsock-connected: "
        mov eax, [rip + peer_port]
        call put_dec64
        call newline
        lea rsi, [rip + hello]
        lea rdi, [rip + tx_buf + HDR_LEN]
        mov ecx, HELLO_LEN
        rep movsb
        mov ax, OP_RW
        xor r8d, r8d
        mov ecx, HELLO_LEN
        call tx_packet
        PRINT "vsock-sent: "
        mov eax, HELLO_LEN
        call put_dec64
        call newline
        call wait_close
        jmp done
.Lconn_refused:
        PRINT "vsock-refused: "
        mov eax, [rip + peer_port]
        call put_dec64
        call newline
        jmp done

        # ---- slow: no buffers for a while, then all bytes, credit by credit -
slow:
        PRINT "vsock-pause: "
        mov eax, [rip + pause]
        call put_dec64
        call newline
        mov ecx, [rip + pause]
1:      dec ecx
        jnz 1b
        PRINT "vsock-resume\n"
        mov ecx, NRX
        call rx_post_n
        xor r12d, r12d                  # r12 = bytes received
        xor r13d, r13d                  # r13 = the next byte expected (i mod 251)
        xor r9d, r9d                    # r9 = bytes since the last fwd_cnt reported
        mov dword ptr [rip + rx_budget], WAIT_POLLS
.Lslow_rx:
        cmp r12d, [rip + nbytes]
        jae .Lslow_done
        call rx_get
        mov r10d, eax
        call pkt_ours
        jne bad_packet
        movzx r11d, word ptr [rsi + H_OP]      # read before the buffer goes back
        cmp r11d, OP_CREDIT_UPDATE
        je .Lslow_next
        cmp r11d, OP_SHUTDOWN
        je .Lslow_closed
        cmp r11d, OP_RST
        je .Lslow_closed
        cmp r11d, OP_RW
        jne bad_packet
        call rw_len                     # ecx = payload length
        add r9d, ecx
        cmp r9d, [rip + credit]
        jbe 2f
        VIO_FAIL "credit overrun"
2:      lea rdi, [rsi + HDR_LEN]
        mov edx, ecx
.Lslow_byte:
        test edx, edx
        jz .Lslow_counted
        cmp [rdi], r13b
        jne .Lslow_bad_byte
        inc r13d
        cmp r13d, PATTERN_MOD
        jb 3f
        xor r13d, r13d
3:      inc rdi
        inc r12d
        dec edx
        jmp .Lslow_byte
.Lslow_counted:
        add [rip + fwd_cnt], ecx
.Lslow_next:
        mov eax, r10d
        call rx_repost
        cmp r11d, OP_RW
        jne .Lslow_rx
        mov ax, OP_CREDIT_UPDATE        # the guest consumed it all
        xor r8d, r8d
        xor ecx, ecx
        call tx_packet
        xor r9d, r9d
        jmp .Lslow_rx
.Lslow_bad_byte:
        call vio_error_prefix
        PRINT "bad byte at "
        mov eax, r12d
        call put_dec64
        call newline
        jmp vio_fail_reset
.Lslow_closed:
        call vio_error_prefix
        PRINT "closed after "
        mov eax, r12d
        call put_dec64
        PRINT " bytes\n"
        jmp vio_fail_reset
.Lslow_done:
        PRINT "vsock-received: "
        mov eax, r12d
        call put_dec64
        call newline
        mov ax, OP_SHUTDOWN
        mov r8d, SHUTDOWN_BOTH
        xor ecx, ecx
        call tx_packet
.Lslow_close_wait:
        call rx_get
        mov r10d, eax
        call pkt_ours
        jne bad_packet
        movzx r11d, word ptr [rsi + H_OP]
        mov eax, r10d
        call rx_repost
        cmp r11d, OP_CREDIT_UPDATE
        je .Lslow_close_wait
        cmp r11d, OP_RST
        jne bad_packet
        PRINT "vsock-closed\n"
done:
        PRINT "vsock-done\n"
        jmp reset

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# read_params: the vsock.* command-line parameters into listen_port,
# connect_port, mode, nbytes, credit and pause (checked).
read_params:
        push rax
        push rcx
        push rsi
        push rdi
        lea rsi, [rip + key_listen]
        mov eax, 1024
        call vio_param_num
        mov [rip + listen_port], eax
        lea rsi, [rip + key_connect]
        mov eax, 5000
        call vio_param_num
        mov [rip + connect_port], eax
        lea rsi, [rip + key_bytes]
        mov eax, 16384
        call vio_param_num
        test rax, rax
        jz .Lrp_bad_bytes
        cmp rax, 1048576
        ja .Lrp_bad_bytes
        mov [rip + nbytes], eax
        lea rsi, [rip + key_credit]
        mov eax, 4096
        call vio_param_num
        test rax, rax
        jz .Lrp_bad_credit
        cmp rax, 65536
        ja .Lrp_bad_credit
        mov [rip + credit], eax
        lea rsi, [rip + key_pause]
        mov eax, 100000
        call vio_param_num
        test eax, eax
        jnz 1f
        inc eax                         # at least one iteration
1:      mov [rip + pause], eax
        mov dword ptr [rip + mode], 0
        lea rsi, [rip + key_mode]
        call vio_param                  # rax = value, rcx = its length
        test rax, rax
        jz .Lrp_done
        mov rsi, rax
        lea rdi, [rip + word_echo]
        call word_is
        je .Lrp_done
        lea rdi, [rip + word_slow]
        call word_is
        jne .Lrp_bad_mode
        mov dword ptr [rip + mode], 1
.Lrp_done:
        pop rdi
        pop rsi
        pop rcx
        pop rax
        ret
.Lrp_bad_bytes:
        VIO_FAIL "bad vsock.bytes"
.Lrp_bad_credit:
        VIO_FAIL "bad vsock.credit"
.Lrp_bad_mode:
        VIO_FAIL "bad vsock.mode"

# word_is: RSI/RCX = a command-line value, RDI = a NUL-terminated word.
# ZF=1 when they are the same.
word_is:
        push rax
        push rcx
        push rsi
        push rdi
1:      mov al, [rdi]
        test al, al
        jz 2f
        test rcx, rcx
        jz 3f                           # the value is shorter
        cmp al, [rsi]
        jne 3f
        inc rsi
        inc rdi
        dec rcx
        jmp 1b
2:      test rcx, rcx                   # ZF=1 iff the value ends too
        jmp 4f
3:      or al, 1                        # ZF=0 (al != 0 here, or made so)
4:      pop rdi
        pop rsi
        pop rcx
        pop rax
        ret

# rx_post_n: ECX = n (1..NRX).  Posts receive buffers 0..n-1 and notifies.
rx_post_n:
        push rax
        push rcx
        xor eax, eax
1:      call rx_repost
        inc eax
        dec ecx
        jnz 1b
        pop rcx
        pop rax
        ret

# rx_repost: EAX = receive buffer index.  Makes descriptor EAX the whole
# buffer (device-writable), publishes it and notifies the receiveq.
rx_repost:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        lea rdi, [rip + vio_queues + RXQ_OFF]
        mov esi, eax
        shl esi, RX_SHIFT
        lea rcx, [rip + rx_bufs]
        add rsi, rcx
        mov ecx, RXB
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        mov esi, eax
        call vq_push
        call vq_notify
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# rx_get: waits for the next received packet, spending the polls left in
# rx_budget.  Returns RSI = its buffer, EAX = the buffer's index, EDX = the
# used length (checked: 44..RXB).  A timeout ends the guest.
rx_get:
        push rcx
        push rdi
        lea rdi, [rip + vio_queues + RXQ_OFF]
        mov ecx, [rip + rx_budget]
        call vq_wait
        mov [rip + rx_budget], ecx
        jnc 1f
        jmp vio_timeout
1:      cmp eax, NRX
        jb 2f
        VIO_FAIL "bad used id"
2:      cmp edx, HDR_LEN
        jb 3f
        cmp edx, RXB
        jbe 4f
3:      VIO_FAIL "bad used len"
4:      mov esi, eax
        shl esi, RX_SHIFT
        lea rdi, [rip + rx_bufs]
        add rsi, rdi
        pop rdi
        pop rcx
        ret

# rw_len: RSI = a received RW packet, EDX = its used length.  Returns
# ECX = its payload length, checked to be used length - 44.
rw_len:
        mov ecx, [rsi + H_LEN]
        push rdx
        sub edx, HDR_LEN
        cmp ecx, edx
        pop rdx
        jne 1f
        ret
1:      VIO_FAIL "bad used len"

# pkt_ours: RSI = a received packet.  ZF=1 when it belongs to the current
# connection: from CID 2 port peer_port to our CID, port local_port, stream.
pkt_ours:
        push rax
        cmp qword ptr [rsi + H_SRC_CID], HOST_CID
        jne 1f
        mov rax, [rip + guest_cid]
        cmp [rsi + H_DST_CID], rax
        jne 1f
        mov eax, [rip + peer_port]
        cmp [rsi + H_SRC_PORT], eax
        jne 1f
        mov eax, [rip + local_port]
        cmp [rsi + H_DST_PORT], eax
        jne 1f
        cmp word ptr [rsi + H_TYPE], TYPE_STREAM
1:      pop rax
        ret

# tx_packet: AX = op, R8D = flags, ECX = payload length (the payload is
# at tx_buf + 44).  Sends one packet from local_port to CID 2 peer_port,
# carrying buf_alloc and fwd_cnt, and waits for the transmitq to return it.
tx_packet:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        push r9
        lea rdi, [rip + tx_buf]
        mov r9, [rip + guest_cid]
        mov [rdi + H_SRC_CID], r9
        mov qword ptr [rdi + H_DST_CID], HOST_CID
        mov r9d, [rip + local_port]
        mov [rdi + H_SRC_PORT], r9d
        mov r9d, [rip + peer_port]
        mov [rdi + H_DST_PORT], r9d
        mov [rdi + H_LEN], ecx
        mov word ptr [rdi + H_TYPE], TYPE_STREAM
        mov [rdi + H_OP], ax
        mov [rdi + H_FLAGS], r8d
        mov r9d, [rip + buf_alloc]
        mov [rdi + H_BUF_ALLOC], r9d
        mov r9d, [rip + fwd_cnt]
        mov [rdi + H_FWD_CNT], r9d
        mov rsi, rdi                    # descriptor 0: the whole packet
        add ecx, HDR_LEN
        lea rdi, [rip + vio_queues + TXQ_OFF]
        xor eax, eax
        xor edx, edx
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 1f
        jmp vio_timeout
1:      test eax, eax
        jz 2f
        VIO_FAIL "bad used id"
2:      pop r9
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# wait_close: waits for the host to end the current connection (see
# on_close).  CREDIT_UPDATEs are skipped; anything else ends the guest.
wait_close:
        push rax
        push rsi
        push r10
        mov dword ptr [rip + rx_budget], WAIT_POLLS
1:      call rx_get
        mov r10d, eax
        call pkt_ours
        jne bad_packet
        cmp word ptr [rsi + H_OP], OP_CREDIT_UPDATE
        jne 2f
        call rx_repost
        jmp 1b
2:      call on_close
        pop r10
        pop rsi
        pop rax
        ret

# on_close: RSI = a received SHUTDOWN or RST of the current connection,
# EAX = its buffer index.  Gives the buffer back, then for a SHUTDOWN
# prints "vsock-shutdown: <flags>" and answers with RST; for an RST prints
# "vsock-rst".  Any other packet ends the guest.
on_close:
        push rax
        push rcx
        push r8
        push r11
        movzx r11d, word ptr [rsi + H_OP]
        cmp r11d, OP_RST
        je 1f
        cmp r11d, OP_SHUTDOWN
        jne bad_packet
1:      mov ecx, [rsi + H_FLAGS]
        call rx_repost
        cmp r11d, OP_RST
        je 2f
        PRINT "vsock-shutdown: "
        mov eax, ecx
        call put_dec64
        call newline
        mov ax, OP_RST
        xor r8d, r8d
        xor ecx, ecx
        call tx_packet
        jmp 3f
2:      PRINT "vsock-rst\n"
3:      pop r11
        pop r8
        pop rcx
        pop rax
        ret

# put_printable_n: print the ECX bytes at RSI, a byte outside 0x20..0x7e
# as '.' (NULs included, unlike put_printable).
put_printable_n:
        push rax
        push rcx
        push rsi
        test ecx, ecx
        jz 3f
1:      mov al, [rsi]
        cmp al, 0x20
        jb 2f
        cmp al, 0x7e
        jbe 4f
2:      mov al, '.'
4:      call putc
        inc rsi
        dec ecx
        jnz 1b
3:      pop rsi
        pop rcx
        pop rax
        ret

# bad_packet: RSI = a received packet nobody expected here.  Prints
# "vsock-error: unexpected op <op> from port <p> to port <q>" and ends the
# guest.
bad_packet:
        call vio_error_prefix
        PRINT "unexpected op "
        movzx eax, word ptr [rsi + H_OP]
        call put_dec64
        PRINT " from port "
        mov eax, [rsi + H_SRC_PORT]
        call put_dec64
        PRINT " to port "
        mov eax, [rsi + H_DST_PORT]
        call put_dec64
        call newline
        jmp vio_fail_reset

        .section .rodata
vio_name:       .asciz "vsock"
key_dev:        .asciz "vsock.dev"
key_mode:       .asciz "vsock.mode"
key_listen:     .asciz "vsock.listen"
key_connect:    .asciz "vsock.connect"
key_bytes:      .asciz "vsock.bytes"
key_credit:     .asciz "vsock.credit"
key_pause:      .asciz "vsock.pause"
word_echo:      .asciz "echo"
word_slow:      .asciz "slow"
hello:          .ascii "hello from guest\n"
        .if . - hello - HELLO_LEN
        .error "HELLO_LEN is not the length of hello"
        .endif

        .section .bss
        .balign 8
guest_cid:      .quad 0
listen_port:    .long 0
connect_port:   .long 0
local_port:     .long 0
peer_port:      .long 0
fwd_cnt:        .long 0
buf_alloc:      .long 0
rx_budget:      .long 0
mode:           .long 0         # 0 echo, 1 slow
nbytes:         .long 0
credit:         .long 0
pause:          .long 0
        .balign 4
ev_buf:         .skip 4
        .balign 64
line_buf:       .skip LINE_MAX
tx_buf:         .skip HDR_LEN + LINE_MAX
        .balign 4096
rx_bufs:        .skip NRX << RX_SHIFT
