# hostile_blk.S - a hostile virtio-blk driver: abuses block device 0 (the
# "victim") in one of the ways `hostile.case=` names, resets it, then checks
# that the VMM still serves everything else: it reads 4 sectors from block
# device `hostile.check=<k>` (when given) and 32 bytes from the entropy
# device (when there is one).
#
# Command line (numbers decimal or 0x-hex):
#   hostile.case=<name>    one of the cases below
#   hostile.check=<k>      the block device read afterwards (0-based among
#                          the block devices); absent: none
#
# Cases (the victim is always driven with VERSION_1 only, queue 0 of 16):
#   outside   IN with its data buffer far outside guest memory, IN with a
#             buffer whose end wraps around 2^64, OUT from outside memory:
#               hostile-read-outside: <status>   (1: IOERR)
#               hostile-read-wrap: <status>
#               hostile-write-outside: <status>
#   loop      a chain whose data descriptor links back to its header, then
#             a chain that links past the queue:
#               hostile-loop-used: <used len>    (0: dropped, no status)
#               hostile-next-used: <used len>
#   huge      IN with a buffer of 0xfffffe00 bytes that starts in RAM, then
#             a chain of two 2 GiB buffers (4 GiB with the header):
#               hostile-huge-status: <status>
#               hostile-4g-used: <used len>
#   badqueue  six set-ups the device must refuse at DRIVER_OK (QueueNum 3,
#             0 and 512; a descriptor table outside memory and one not
#             16-byte aligned; a used ring in the MMIO window), each reset
#             afterwards, then a correct set-up and a read:
#               hostile-needs-reset: <how many set DEVICE_NEEDS_RESET without DRIVER_OK>
#               hostile-recovered: <status of the read>
#   ahead     a read posted with the avail index 1000 entries ahead, then
#             the index put right and the queue notified again:
#               hostile-ahead-used: <used idx after ~1 s of polling> (0)
#               hostile-ahead-status: <status once put right>
#   overlap   a queue whose used ring starts 2 bytes after its avail ring
#             (the used ring's flags are the avail index), one read:
#               hostile-overlap-used: <used idx> (1)
#   rowrite   an OUT to sector 2 (the victim is read-only), then an IN:
#               hostile-rowrite-status: <status> (1)
#               hostile-roread-status: <status>  (0)
#   widths    a read and a write of all ones, 1, 2, 4 and 8 bytes wide, at
#             every offset of the victim's 4 KiB window (accesses that
#             stay inside it), and of every width at an MMIO address where
#             no device is; then the victim set up again and read:
#               hostile-widths-status: <status of the read>
#               hostile-widths-fnv: <FNV-1a 32 of sector 0>
#   early     QueueNotify before any set-up (4 bytes, queue 0 and 5; 1 and
#             2 bytes), a read posted and notified before DRIVER_OK, then
#             DRIVER_OK and a notify:
#               hostile-early-used: <used idx after ~1 s of polling> (0)
#               hostile-early-status: <status after DRIVER_OK>
#
# Then, whatever the case:
#   hostile-case-done
#   hostile-check-status: <n>              \ only with hostile.check=
#   hostile-check-fnv: <8 hex digits>      / FNV-1a 32 of sectors 0..3
#   hostile-rng-len: <used length>         \ only with an entropy device
#   hostile-rng: <the bytes, hex>          /
#   hostile-ok
# and an i8042 reset.  Errors: "hostile-error: ..." (virtio.inc's, and
# "no hostile.case", "unknown hostile.case", "no victim", "no check
# device"), "hostile-timeout".
        .include "lib.inc"
        .include "virtio.inc"

        .equ VIRTIO_ID_BLOCK,   2
        .equ VIRTIO_ID_RNG,     4
        .equ BLK_T_IN,          0
        .equ BLK_T_OUT,         1
        .equ SECTOR_SIZE,       512
        .equ QUIET_POLLS,       300000          # ~1 s of polling here
        .equ OUTSIDE,           0x7f0000000000  # far past RAM (canonical)
        .equ NO_DEVICE,         0xd001f000      # MMIO slot 31: nobody there
        .equ RNG_BYTES,         32

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup
        lea rsi, [rip + key_case]
        call vio_param                  # rax = value, rcx = its length
        test rax, rax
        jnz 1f
        VIO_FAIL "no hostile.case"
1:      mov r12, rax
        mov r13, rcx
        mov edi, VIRTIO_ID_BLOCK
        lea rsi, [rip + key_victim]     # never on the command line: index 0
        call vio_select
        test rax, rax
        jnz 2f
        VIO_FAIL "no victim"
2:      mov rbx, rax                    # rbx = the victim's window
        lea r14, [rip + cases]
3:      mov rsi, [r14]
        test rsi, rsi
        jnz 4f
        VIO_FAIL "unknown hostile.case"
4:      call case_is
        je 5f
        add r14, 16
        jmp 3b
5:      call qword ptr [r14 + 8]
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], 0     # reset the victim
        PRINT "hostile-case-done\n"

        # ---- another block device still reads correctly --------------------
        lea rsi, [rip + key_check]
        call vio_param
        test rax, rax
        jz 6f
        mov edi, VIRTIO_ID_BLOCK
        lea rsi, [rip + key_check]
        call vio_select
        test rax, rax
        jnz 7f
        VIO_FAIL "no check device"
7:      mov rbx, rax
        call std_init
        lea r8, [rip + vio_queues]
        mov eax, BLK_T_IN
        xor esi, esi
        lea rdx, [rip + data]
        mov ecx, 4 * SECTOR_SIZE
        mov r9d, VIRTQ_DESC_F_WRITE
        call req3
        lea rsi, [rip + label_check_status]
        call say
        lea rsi, [rip + data]
        mov ecx, 4 * SECTOR_SIZE
        call fnv1a32
        PRINT "hostile-check-fnv: "
        mov ecx, 8
        call put_hexn
        call newline
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], 0
6:
        # ---- the entropy device still gives bytes ---------------------------
        mov edi, VIRTIO_ID_RNG
        lea rsi, [rip + key_victim]
        call vio_select
        test rax, rax
        jz 8f
        mov rbx, rax
        call std_init
        lea rdi, [rip + vio_queues]
        xor eax, eax
        lea rsi, [rip + rng_buf]
        mov ecx, RNG_BYTES
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait                    # edx = used length
        jnc 9f
        jmp vio_timeout
9:      mov eax, edx
        lea rsi, [rip + label_rng_len]
        call say
        PRINT "hostile-rng: "
        lea rsi, [rip + rng_buf]
        mov ecx, edx
        cmp ecx, RNG_BYTES
        jbe 10f
        mov ecx, RNG_BYTES
10:     call put_hex_bytes
        call newline
8:      PRINT "hostile-ok\n"
        jmp reset

# ---------------------------------------------------------------------------
# Cases: RBX = the victim's window; each may clobber everything but RBX.
# ---------------------------------------------------------------------------

case_outside:
        call std_init
        lea r8, [rip + vio_queues]
        mov eax, BLK_T_IN
        xor esi, esi
        mov rdx, OUTSIDE
        mov ecx, SECTOR_SIZE
        mov r9d, VIRTQ_DESC_F_WRITE
        call req3
        lea rsi, [rip + label_read_outside]
        call say
        mov eax, BLK_T_IN
        mov rdx, -0x100                 # 0xffffffffffffff00 + 512 wraps
        call req3
        lea rsi, [rip + label_read_wrap]
        call say
        mov eax, BLK_T_OUT
        mov rdx, OUTSIDE
        xor r9d, r9d
        call req3
        lea rsi, [rip + label_write_outside]
        call say
        ret

case_loop:
        call std_init
        call set_header_in0
        lea rdi, [rip + vio_queues]
        mov eax, 3                      # 3: header -> 4: data -> 3 ...
        lea rsi, [rip + hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 4
        call vq_desc
        mov eax, 4
        lea rsi, [rip + data]
        mov ecx, SECTOR_SIZE
        mov edx, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE
        mov r8d, 3
        call vq_desc
        mov esi, 3
        lea rdx, [rip + label_loop_used]
        call push_wait_say_len
        mov eax, 5                      # 5: header -> 200 (past the 16)
        lea rsi, [rip + hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 200
        call vq_desc
        mov esi, 5
        lea rdx, [rip + label_next_used]
        call push_wait_say_len
        ret

case_huge:
        call std_init
        lea r8, [rip + vio_queues]
        mov eax, BLK_T_IN
        xor esi, esi
        lea rdx, [rip + data]
        mov ecx, 0xfffffe00
        mov r9d, VIRTQ_DESC_F_WRITE
        call req3
        lea rsi, [rip + label_huge_status]
        call say
        call set_header_in0
        lea rdi, [rip + vio_queues]
        mov eax, 6                      # 6: header -> 7: 2 GiB -> 8: 2 GiB -> 9: status
        lea rsi, [rip + hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 7
        call vq_desc
        mov eax, 7
        lea rsi, [rip + data]
        mov ecx, 0x80000000
        mov edx, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE
        mov r8d, 8
        call vq_desc
        mov eax, 8
        mov r8d, 9
        call vq_desc
        mov eax, 9
        lea rsi, [rip + status]
        mov ecx, 1
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        mov esi, 6
        lea rdx, [rip + label_4g_used]
        call push_wait_say_len
        ret

case_badqueue:
        xor r12d, r12d                  # r12 = refused set-ups
        lea r8, [rip + hq_page]
        lea r10, [rip + bad_setups]
1:      mov ecx, [r10]                  # QueueNum
        test ecx, ecx
        js 3f                           # -1 ends the table
        mov rsi, [r10 + 8]              # desc (0: the page's own)
        test rsi, rsi
        jnz 4f
        mov rsi, r8
4:      lea rdi, [r8 + VQ_AVAIL]
        mov rdx, [r10 + 16]             # used (0: the page's own)
        test rdx, rdx
        jnz 5f
        lea rdx, [r8 + VQ_USED]
5:      call hq_setup
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK
        mov eax, [rbx + VIRTIO_MMIO_STATUS]
        test eax, VIRTIO_S_DRIVER_OK
        jnz 2f
        test eax, VIRTIO_S_NEEDS_RESET
        jz 2f
        inc r12d
2:      mov dword ptr [rbx + VIRTIO_MMIO_STATUS], 0
        add r10, 24
        jmp 1b
3:      mov eax, r12d
        lea rsi, [rip + label_needs_reset]
        call say
        call std_init
        lea r8, [rip + vio_queues]
        mov eax, BLK_T_IN
        xor esi, esi
        lea rdx, [rip + data]
        mov ecx, SECTOR_SIZE
        mov r9d, VIRTQ_DESC_F_WRITE
        call req3
        lea rsi, [rip + label_recovered]
        call say
        ret

case_ahead:
        call std_init
        call set_header_in0
        lea rdi, [rip + vio_queues]
        call std_chain                  # descriptors 0 -> 1 -> 2: a read
        mov word ptr [rdi + VQ_AVAIL + 4], 0            # ring[0] = head 0
        BARRIER
        mov word ptr [rdi + VQ_AVAIL + 2], 1000         # idx far ahead
        BARRIER
        call vq_notify
        lea rsi, [rdi + VQ_USED + 2]
        call quiet_used
        lea rsi, [rip + label_ahead_used]
        call say
        mov word ptr [rdi + VQ_AVAIL + 2], 1            # put right
        BARRIER
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 1f
        jmp vio_timeout
1:      movzx eax, byte ptr [rip + status]
        lea rsi, [rip + label_ahead_status]
        call say
        ret

case_overlap:
        lea r8, [rip + hq_page]
        mov rdi, r8
        mov ecx, 4096 / 8
        xor eax, eax
        rep stosq
        mov rdi, r8
        call set_header_in0
        call std_chain                  # descriptors 0 -> 1 -> 2: a read
        mov ecx, VQ_SIZE
        mov rsi, r8                     # desc at +0
        lea rdi, [r8 + 0x102]           # avail: flags +0x102, idx +0x104, ring +0x106
        lea rdx, [r8 + 0x104]           # used: flags +0x104, idx +0x106
        call hq_setup
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK
        BARRIER
        mov word ptr [r8 + 0x104], 1    # avail idx 1 (ring[0] = head 0)
        BARRIER
        mov rdi, r8
        call vq_notify
        mov ecx, VIO_POLLS
1:      movzx eax, word ptr [r8 + 0x106]                # used idx
        test eax, eax
        jnz 2f
        dec ecx
        jnz 1b
2:      lea rsi, [rip + label_overlap_used]
        call say
        ret

case_rowrite:
        call std_init
        lea r8, [rip + vio_queues]
        mov eax, BLK_T_OUT
        mov esi, 2
        lea rdx, [rip + data]
        mov ecx, SECTOR_SIZE
        xor r9d, r9d
        call req3
        lea rsi, [rip + label_rowrite]
        call say
        mov eax, BLK_T_IN
        mov esi, 2
        lea rdx, [rip + data]
        mov r9d, VIRTQ_DESC_F_WRITE
        call req3
        lea rsi, [rip + label_roread]
        call say
        ret

case_widths:
        xor ecx, ecx                    # ecx = offset
1:      lea rdx, [rbx + rcx]
        mov al, [rdx]
        mov byte ptr [rdx], 0xff
        cmp ecx, 0x1000 - 2
        ja 2f
        mov ax, [rdx]
        mov word ptr [rdx], 0xffff
        cmp ecx, 0x1000 - 4
        ja 2f
        mov eax, [rdx]
        mov dword ptr [rdx], 0xffffffff
        cmp ecx, 0x1000 - 8
        ja 2f
        mov rax, [rdx]
        mov qword ptr [rdx], -1
2:      inc ecx
        cmp ecx, 0x1000
        jb 1b
        mov edx, NO_DEVICE
        mov al, [rdx]
        mov byte ptr [rdx], 0xff
        mov ax, [rdx]
        mov word ptr [rdx], 0xffff
        mov eax, [rdx]
        mov dword ptr [rdx], 0xffffffff
        mov rax, [rdx]
        mov qword ptr [rdx], -1
        call std_init
        lea r8, [rip + vio_queues]
        mov eax, BLK_T_IN
        xor esi, esi
        lea rdx, [rip + data]
        mov ecx, SECTOR_SIZE
        mov r9d, VIRTQ_DESC_F_WRITE
        call req3
        lea rsi, [rip + label_widths_status]
        call say
        lea rsi, [rip + data]
        mov ecx, SECTOR_SIZE
        call fnv1a32
        PRINT "hostile-widths-fnv: "
        mov ecx, 8
        call put_hexn
        call newline
        ret

case_early:
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], 0
        mov dword ptr [rbx + VIRTIO_MMIO_QUEUE_NOTIFY], 0
        mov dword ptr [rbx + VIRTIO_MMIO_QUEUE_NOTIFY], 5
        mov byte ptr [rbx + VIRTIO_MMIO_QUEUE_NOTIFY], 0
        mov word ptr [rbx + VIRTIO_MMIO_QUEUE_NOTIFY], 0
        lea r8, [rip + hq_page]
        mov rdi, r8
        mov ecx, 4096 / 8
        xor eax, eax
        rep stosq
        mov ecx, VQ_SIZE
        mov rsi, r8
        lea rdi, [r8 + VQ_AVAIL]
        lea rdx, [r8 + VQ_USED]
        call hq_setup                   # up to FEATURES_OK and QueueReady
        mov rdi, r8
        call set_header_in0
        call std_chain
        xor esi, esi
        call vq_push
        call vq_notify                  # before DRIVER_OK
        lea rsi, [rdi + VQ_USED + 2]
        call quiet_used
        lea rsi, [rip + label_early_used]
        call say
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 1f
        jmp vio_timeout
1:      movzx eax, byte ptr [rip + status]
        lea rsi, [rip + label_early_status]
        call say
        ret

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# case_is: RSI = a case name (NUL-terminated); R12/R13 = the value of
# hostile.case= and its length.  ZF=1 when they are the same.
case_is:
        push rax
        push rcx
        push rsi
        xor ecx, ecx
1:      cmp rcx, r13
        je 2f
        mov al, [rsi + rcx]
        test al, al
        jz 3f                           # the name ended first
        cmp al, [r12 + rcx]
        jne 3f
        inc rcx
        jmp 1b
2:      cmp byte ptr [rsi + rcx], 0     # both ended: equal (ZF=1)
3:      pop rsi
        pop rcx
        pop rax
        ret

# say: RSI = label, EAX = value.  Prints "<label>: <decimal>\n".
say:
        call puts
        PRINT ": "
        call put_dec64
        jmp newline

# std_init: RBX = device.  virtio.inc's set-up with VERSION_1 and one
# queue, in the first page of vio_queues.
std_init:
        push rax
        push rdx
        push rsi
        push rdi
        mov rdi, VIRTIO_F_VERSION_1
        mov esi, 1
        call vio_init
        pop rdi
        pop rsi
        pop rdx
        pop rax
        ret

# hq_setup: RBX = device, ECX = QueueNum, RSI/RDI/RDX = descriptor table,
# avail ring, used ring, R8 = the page whose VQ_* fields describe the
# queue to vq_push/vq_notify/vq_wait.  Resets the device and sets it up
# (VERSION_1 only) up to FEATURES_OK and QueueReady of queue 0, without
# DRIVER_OK and without checking anything.
hq_setup:
        push rax
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], 0
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], VIRTIO_S_ACKNOWLEDGE
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER
        mov dword ptr [rbx + VIRTIO_MMIO_DRV_FEATURES_SEL], 1
        mov dword ptr [rbx + VIRTIO_MMIO_DRV_FEATURES], 1
        mov dword ptr [rbx + VIRTIO_MMIO_DRV_FEATURES_SEL], 0
        mov dword ptr [rbx + VIRTIO_MMIO_DRV_FEATURES], 0
        mov dword ptr [rbx + VIRTIO_MMIO_STATUS], VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK
        mov dword ptr [rbx + VIRTIO_MMIO_QUEUE_SEL], 0
        mov [rbx + VIRTIO_MMIO_QUEUE_NUM], ecx
        mov rax, rsi
        mov [rbx + VIRTIO_MMIO_QUEUE_DESC_LO], eax
        shr rax, 32
        mov [rbx + VIRTIO_MMIO_QUEUE_DESC_HI], eax
        mov rax, rdi
        mov [rbx + VIRTIO_MMIO_QUEUE_DRIVER_LO], eax
        shr rax, 32
        mov [rbx + VIRTIO_MMIO_QUEUE_DRIVER_HI], eax
        mov rax, rdx
        mov [rbx + VIRTIO_MMIO_QUEUE_DEVICE_LO], eax
        shr rax, 32
        mov [rbx + VIRTIO_MMIO_QUEUE_DEVICE_HI], eax
        mov dword ptr [rbx + VIRTIO_MMIO_QUEUE_READY], 1
        mov [r8 + VQ_NUM], cx
        mov word ptr [r8 + VQ_LAST_USED], 0
        mov dword ptr [r8 + VQ_INDEX], 0
        mov [r8 + VQ_MMIO], rbx
        pop rax
        ret

# set_header_in0: the request header: IN, sector 0; the status byte 0xff.
set_header_in0:
        mov dword ptr [rip + hdr], BLK_T_IN
        mov dword ptr [rip + hdr + 4], 0
        mov qword ptr [rip + hdr + 8], 0
        mov byte ptr [rip + status], 0xff
        ret

# std_chain: RDI = queue page.  Descriptors 0 (the header) -> 1 (512
# device-writable bytes at data) -> 2 (the status byte).
std_chain:
        push rax
        push rcx
        push rdx
        push rsi
        push r8
        xor eax, eax
        lea rsi, [rip + hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 1
        call vq_desc
        mov eax, 1
        lea rsi, [rip + data]
        mov ecx, SECTOR_SIZE
        mov edx, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE
        mov r8d, 2
        call vq_desc
        mov eax, 2
        lea rsi, [rip + status]
        mov ecx, 1
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        pop r8
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# req3: R8 = queue page, EAX = request type, RSI = sector, RDX = data
# address, ECX = data length, R9D = the data descriptor's flags (WRITE or
# 0).  Sends header -> data -> status as descriptors 0 -> 1 -> 2, waits.
# Returns EAX = the status byte (0xff: never written), EDX = used length.
req3:
        push rcx
        push rsi
        push rdi
        push r8
        push r10
        mov [rip + hdr], eax
        mov dword ptr [rip + hdr + 4], 0
        mov [rip + hdr + 8], rsi
        mov byte ptr [rip + status], 0xff
        mov rdi, r8
        mov r10, rdx                    # r10 = data address
        push rcx
        xor eax, eax
        lea rsi, [rip + hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 1
        call vq_desc
        pop rcx
        mov eax, 1
        mov rsi, r10
        mov edx, r9d
        or edx, VIRTQ_DESC_F_NEXT
        mov r8d, 2
        call vq_desc
        mov eax, 2
        lea rsi, [rip + status]
        mov ecx, 1
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait                    # edx = used length
        jnc 1f
        jmp vio_timeout
1:      movzx eax, byte ptr [rip + status]
        pop r10
        pop r8
        pop rdi
        pop rsi
        pop rcx
        ret

# push_wait_say_len: ESI = head, RDX = label.  Publishes the chain at ESI
# on the first queue of vio_queues, notifies, waits and prints
# "<label>: <used length>".
push_wait_say_len:
        lea rdi, [rip + vio_queues]
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        push rdx
        call vq_wait                    # edx = used length
        jnc 1f
        jmp vio_timeout
1:      mov eax, edx
        pop rsi
        jmp say

# quiet_used: RSI = a used ring's idx.  Polls it QUIET_POLLS times (about a
# second here: time for the VMM to act on a notification); returns EAX = its
# value then.
quiet_used:
        push rcx
        mov ecx, QUIET_POLLS
1:      movzx eax, word ptr [rsi]
        test eax, eax
        jnz 2f
        dec ecx
        jnz 1b
2:      pop rcx
        ret

        .section .rodata
vio_name:               .asciz "hostile"
key_case:               .asciz "hostile.case"
key_check:              .asciz "hostile.check"
key_victim:             .asciz "hostile.victim-is-always-0"
label_check_status:     .asciz "hostile-check-status"
label_rng_len:          .asciz "hostile-rng-len"
label_read_outside:     .asciz "hostile-read-outside"
label_read_wrap:        .asciz "hostile-read-wrap"
label_write_outside:    .asciz "hostile-write-outside"
label_loop_used:        .asciz "hostile-loop-used"
label_next_used:        .asciz "hostile-next-used"
label_huge_status:      .asciz "hostile-huge-status"
label_4g_used:          .asciz "hostile-4g-used"
label_needs_reset:      .asciz "hostile-needs-reset"
label_recovered:        .asciz "hostile-recovered"
label_ahead_used:       .asciz "hostile-ahead-used"
label_ahead_status:     .asciz "hostile-ahead-status"
label_overlap_used:     .asciz "hostile-overlap-used"
label_rowrite:          .asciz "hostile-rowrite-status"
label_roread:           .asciz "hostile-roread-status"
label_widths_status:    .asciz "hostile-widths-status"
label_early_used:       .asciz "hostile-early-used"
label_early_status:     .asciz "hostile-early-status"
name_outside:           .asciz "outside"
name_loop:              .asciz "loop"
name_huge:              .asciz "huge"
name_badqueue:          .asciz "badqueue"
name_ahead:             .asciz "ahead"
name_overlap:           .asciz "overlap"
name_rowrite:           .asciz "rowrite"
name_widths:            .asciz "widths"
name_early:             .asciz "early"
        .balign 8
# {name, handler}, ended by a 0 name.
cases:
        .quad name_outside, case_outside
        .quad name_loop, case_loop
        .quad name_huge, case_huge
        .quad name_badqueue, case_badqueue
        .quad name_ahead, case_ahead
        .quad name_overlap, case_overlap
        .quad name_rowrite, case_rowrite
        .quad name_widths, case_widths
        .quad name_early, case_early
        .quad 0, 0
# {QueueNum (-1 ends), descriptor table (0: the page), used ring (0: the page)}
bad_setups:
        .quad 3, 0, 0
        .quad 0, 0, 0
        .quad 512, 0, 0
        .quad VQ_SIZE, 0x100000000000, 0
        .quad VQ_SIZE, hq_page + 8, 0
        .quad VQ_SIZE, 0, 0xd0000000
        .quad -1, 0, 0

        .section .bss
        .balign 4096
hq_page:                .skip 4096      # the victim's queue for hand-made layouts
hdr:                    .skip 16
status:                 .skip 8
rng_buf:                .skip RNG_BYTES
        .balign 512
data:                   .skip 4 * SECTOR_SIZE
