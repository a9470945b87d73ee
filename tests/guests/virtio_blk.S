# virtio_blk.S - drives a virtio-mmio block device (DeviceID 2) by polling.
#
# Finds the devices announced on the command line (virtio_mmio.device=...),
# picks block device number <k> (blk.dev=<k>, 0-based among the block
# devices; default 0), initialises it (features VERSION_1 and, when offered,
# SEG_MAX, RO, BLK_SIZE, FLUSH; one request queue), then sends one request
# at a time: a chain of header (16 bytes, device-readable) -> data (one
# descriptor, if any) -> status byte (device-writable), polled to completion.
# The status byte is set to 0xff before each request, so a device that never
# writes it shows up as status 255.
#
# Command line (numbers decimal, or 0x-hex):
#   blk.dev=<k>                       which block device (default 0)
#   blk.read=<sector>:<count>         IN request, count 1..16 sectors
#   blk.write=<sector>:<count>:<fill> OUT request, count 1..16, fill 0..255;
#                                     data byte i = (fill + i) & 0xff
#   blk.flush=<n>                     FLUSH request when n != 0 (sent even if
#                                     VIRTIO_BLK_F_FLUSH was not negotiated)
#   blk.read2=<sector>:<count>        second IN request, after write and flush
#   blk.wait_config=<any>             then wait (polling InterruptStatus, at
#                                     most CONFIG_POLLS reads) for a
#                                     configuration-change interrupt
#   blk.read3=<sector>:<count>        with blk.wait_config: an IN request
#                                     after the configuration change
#   blk.hold=<any>                    after blk-done, halt (interrupts off)
#                                     instead of resetting, until the VMM
#                                     ends the VM
#
# Output, in this order (each line ends with "\n"):
#   blk-devices: <number of block devices, decimal>
#   blk-capacity: <config capacity (u64 at 0x100), in 512-byte sectors, decimal>
#   blk-features: <the device's 64-bit features, 16 hex digits, no 0x>
#   blk-ro: <1 if VIRTIO_BLK_F_RO (bit 5) was negotiated, else 0>
#   blk-id: <GET_ID's 20 bytes up to the first NUL; bytes outside 0x20..0x7e as '.'>
#   blk-id-status: <status byte, decimal>
#   blk-read-status: <n>                      \ only with blk.read=
#   blk-read-fnv: <8 hex digits>              / FNV-1a 32 of the count*512 bytes
#   blk-write-status: <n>                       only with blk.write=
#   blk-flush-status: <n>                       only with blk.flush=<nonzero>
#   blk-read2-status: <n>                     \ only with blk.read2=
#   blk-read2-fnv: <8 hex digits>             /
#   blk-waiting-config                        \ only with blk.wait_config=;
#   blk-config-change: <new capacity, decimal> / or blk-config-timeout, reset
#   blk-read3-status: <n>                     \ only with blk.wait_config= and
#   blk-read3-fnv: <8 hex digits>             / blk.read3=
#   blk-done
# then resets (or, with blk.hold=, halts).  The read buffer is zeroed before each IN request.
# Errors: "blk-error: ..." (see virtio.inc; here also "no device" when
# there is no block device number <k> (after blk-devices:), "bad blk.read",
# "bad blk.write", "bad blk.flush", "bad blk.read2", "bad used id"), and
# "blk-timeout" when a request does not complete within VIO_POLLS polls.
        .include "lib.inc"
        .include "virtio.inc"

        .equ VIRTIO_ID_BLOCK,   2
        .equ BLK_F_SEG_MAX,     1 << 2
        .equ BLK_F_RO,          1 << 5
        .equ BLK_F_BLK_SIZE,    1 << 6
        .equ BLK_F_FLUSH,       1 << 9
        .equ BLK_FEATURES, VIRTIO_F_VERSION_1 | BLK_F_SEG_MAX | BLK_F_RO | BLK_F_BLK_SIZE | BLK_F_FLUSH

        .equ BLK_T_IN,          0
        .equ BLK_T_OUT,         1
        .equ BLK_T_FLUSH,       4
        .equ BLK_T_GET_ID,      8
        .equ BLK_ID_BYTES,      20
        .equ SECTOR_SIZE,       512
        .equ BLK_MAX_SECTORS,   16      # one request, 8 KiB at most
        .equ CONFIG_POLLS,      300000  # InterruptStatus reads before "blk-config-timeout"

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup

        mov edi, VIRTIO_ID_BLOCK
        lea rsi, [rip + key_dev]
        call vio_select                 # rax = base, rcx = block devices
        PRINT "blk-devices: "
        push rax
        mov rax, rcx
        call put_dec64
        call newline
        pop rax
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax                    # rbx = device base from here on
        mov rdi, BLK_FEATURES
        mov esi, 1
        call vio_init                   # rax = device features, rdx = negotiated
        mov r12, rax
        mov r13, rdx

        lea rdi, [rip + blk_capacity]   # capacity: u64 at config 0, two u32 reads
        xor esi, esi
        mov ecx, 8
        mov edx, 4
        call vio_config_read
        PRINT "blk-capacity: "
        mov rax, [rip + blk_capacity]
        call put_dec64
        call newline
        PRINT "blk-features: "
        mov rax, r12
        mov ecx, 16
        call put_hexn
        call newline
        PRINT "blk-ro: "
        mov rax, r13
        shr rax, 5                      # VIRTIO_BLK_F_RO
        and eax, 1
        call put_dec64
        call newline

        # ---- GET_ID ----------------------------------------------------------
        lea rdi, [rip + blk_data]
        mov ecx, BLK_ID_BYTES
        call zero_bytes
        mov edi, BLK_T_GET_ID
        xor esi, esi
        mov ecx, BLK_ID_BYTES
        mov edx, 1                      # device-writable
        call blk_request
        PRINT "blk-id: "
        lea rsi, [rip + blk_data]
        mov ecx, BLK_ID_BYTES
        call put_printable
        call newline
        PRINT "blk-id-status: "
        call put_dec64
        call newline

        # ---- blk.read ----------------------------------------------------------
        lea rsi, [rip + key_read]
        mov edx, 2
        call blk_args
        test eax, eax
        jz 2f
        lea rsi, [rip + label_read]
        call blk_read
2:
        # ---- blk.write ---------------------------------------------------------
        lea rsi, [rip + key_write]
        mov edx, 3
        call blk_args
        test eax, eax
        jz 3f
        cmp qword ptr [rip + blk_argv + 16], 255
        jbe 4f
        VIO_FAIL "bad blk.write"
4:      mov rcx, [rip + blk_argv + 8]
        shl ecx, 9                      # bytes (count <= 16 was checked)
        mov eax, [rip + blk_argv + 16]  # fill
        lea rdi, [rip + blk_data]
        mov rdx, rcx
5:      mov [rdi], al                   # byte i = (fill + i) & 0xff
        inc rdi
        inc al
        dec rdx
        jnz 5b
        mov edi, BLK_T_OUT
        mov rsi, [rip + blk_argv]
        xor edx, edx                    # device-readable
        call blk_request
        PRINT "blk-write-status: "
        call put_dec64
        call newline
3:
        # ---- blk.flush ---------------------------------------------------------
        lea rsi, [rip + key_flush]
        call vio_param
        test rax, rax
        jz 6f
        mov rsi, rax
        call parse_num
        jc 7f
        test rcx, rcx
        jz 8f
7:      VIO_FAIL "bad blk.flush"
8:      test rax, rax
        jz 6f
        mov edi, BLK_T_FLUSH
        xor esi, esi
        xor ecx, ecx                    # no data descriptor
        xor edx, edx
        call blk_request
        PRINT "blk-flush-status: "
        call put_dec64
        call newline
6:
        # ---- blk.read2 ---------------------------------------------------------
        lea rsi, [rip + key_read2]
        mov edx, 2
        call blk_args
        test eax, eax
        jz 9f
        lea rsi, [rip + label_read2]
        call blk_read
9:
        # ---- blk.wait_config ---------------------------------------------------
        lea rsi, [rip + key_wait_config]
        call vio_param
        test rax, rax
        jz 10f
        call blk_wait_config
        # ---- blk.read3 (after the configuration change) --------------------------
        lea rsi, [rip + key_read3]
        mov edx, 2
        call blk_args
        test eax, eax
        jz 10f
        lea rsi, [rip + label_read3]
        call blk_read
10:     PRINT "blk-done\n"
        # ---- blk.hold ----------------------------------------------------------
        lea rsi, [rip + key_hold]
        call vio_param
        test rax, rax
        jz reset
        # Sleep inside KVM (hlt with interrupts off) until the VMM ends the
        # VM: SIGTERM, a Shutdown action, or the test's kill.
11:     cli
        hlt
        jmp 11b

# blk_wait_config: the device at RBX.  Prints "blk-waiting-config", then
# polls InterruptStatus (at most CONFIG_POLLS reads) until the
# configuration-change bit (2) is set, acknowledges it, re-reads the
# capacity and prints "blk-config-change: <capacity>"; or prints
# "blk-config-timeout" and resets.
blk_wait_config:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        PRINT "blk-waiting-config\n"
        mov ecx, CONFIG_POLLS
1:      mov eax, [rbx + VIRTIO_MMIO_INT_STATUS]
        test eax, 2
        jnz 2f
        dec ecx
        jnz 1b
        PRINT "blk-config-timeout\n"
        jmp reset
2:      mov dword ptr [rbx + VIRTIO_MMIO_INT_ACK], 2
        lea rdi, [rip + blk_capacity]
        xor esi, esi
        mov ecx, 8
        mov edx, 4
        call vio_config_read
        PRINT "blk-config-change: "
        mov rax, [rip + blk_capacity]
        call put_dec64
        call newline
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# blk_args: RSI = cmdline key, EDX = how many numbers its value has (2 or 3:
# sector, count[, fill]).  Parses them into blk_argv[] and checks that count
# (blk_argv[1]) is 1..BLK_MAX_SECTORS.  Returns EAX = 0 if the key is
# absent, 1 if it was parsed.  A malformed value ends the guest with
# "blk-error: bad <key>".
blk_args:
        push rcx
        push rsi
        push rdi
        push r8
        mov r8, rsi                     # r8 = key
        call vio_param
        test rax, rax
        jz 1f
        mov rsi, rax
        lea rdi, [rip + blk_argv]
        call parse_num_list
        jc 2f
        mov rax, [rip + blk_argv + 8]
        test rax, rax
        jz 2f
        cmp rax, BLK_MAX_SECTORS
        ja 2f
        mov eax, 1
1:      pop r8
        pop rdi
        pop rsi
        pop rcx
        ret
2:      call vio_error_prefix
        PRINT "bad "
        mov rsi, r8
        call puts
        call newline
        jmp vio_fail_reset

# blk_read: RSI = label ("blk-read" or "blk-read2").  Reads blk_argv[1]
# sectors from sector blk_argv[0] into the zeroed blk_data, then prints
# "<label>-status: <n>" and "<label>-fnv: <FNV-1a 32 of the bytes, 8 hex digits>".
blk_read:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        mov r8, rsi
        mov rcx, [rip + blk_argv + 8]
        shl ecx, 9                      # bytes
        lea rdi, [rip + blk_data]
        call zero_bytes
        mov edi, BLK_T_IN
        mov rsi, [rip + blk_argv]
        mov edx, 1                      # device-writable
        call blk_request
        mov rsi, r8
        call puts
        PRINT "-status: "
        call put_dec64
        call newline
        call puts
        PRINT "-fnv: "
        lea rsi, [rip + blk_data]
        call fnv1a32                    # over rcx bytes
        mov ecx, 8
        call put_hexn
        call newline
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# blk_request: EDI = request type, RSI = sector, ECX = data bytes (0: no data
# descriptor; else the data is at blk_data), EDX = 1 if the data is
# device-writable (IN, GET_ID), 0 if device-readable (OUT).  Builds the chain
# descriptor 0 (header) -> 1 (data) -> 2 (status) on queue 0, publishes it,
# notifies and polls.  Returns EAX = the status byte.
blk_request:
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        push r9
        push r10
        mov r9d, ecx                    # r9 = data bytes
        mov r10d, edx                   # r10 = data is device-writable
        mov [rip + blk_hdr], edi        # u32 type
        mov dword ptr [rip + blk_hdr + 4], 0    # u32 reserved
        mov [rip + blk_hdr + 8], rsi    # u64 sector
        mov byte ptr [rip + blk_status], 0xff
        lea rdi, [rip + vio_queues]     # queue 0
        xor eax, eax                    # desc 0: header, device-readable
        lea rsi, [rip + blk_hdr]
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 2
        test r9d, r9d
        jz 1f
        mov r8d, 1
1:      call vq_desc
        test r9d, r9d
        jz 2f
        mov eax, 1                      # desc 1: data
        lea rsi, [rip + blk_data]
        mov ecx, r9d
        mov edx, VIRTQ_DESC_F_NEXT
        test r10d, r10d
        jz 3f
        or edx, VIRTQ_DESC_F_WRITE
3:      mov r8d, 2
        call vq_desc
2:      mov eax, 2                      # desc 2: status, device-writable
        lea rsi, [rip + blk_status]
        mov ecx, 1
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        xor esi, esi                    # head = descriptor 0
        call vq_push
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait                    # eax = id, edx = len
        jnc 4f
        jmp vio_timeout
4:      test eax, eax
        jz 5f
        VIO_FAIL "bad used id"
5:      movzx eax, byte ptr [rip + blk_status]
        pop r10
        pop r9
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        ret

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
vio_name:       .asciz "blk"
key_dev:        .asciz "blk.dev"
key_read:       .asciz "blk.read"
key_write:      .asciz "blk.write"
key_flush:      .asciz "blk.flush"
key_read2:      .asciz "blk.read2"
key_wait_config: .asciz "blk.wait_config"
key_read3:      .asciz "blk.read3"
label_read3:    .asciz "blk-read3"
key_hold:       .asciz "blk.hold"
label_read:     .asciz "blk-read"
label_read2:    .asciz "blk-read2"

        .section .bss
        .balign 16
blk_hdr:        .skip 16                # struct virtio_blk_req header
blk_status:     .skip 1
        .balign 8
blk_capacity:   .skip 8
blk_argv:       .skip 3 * 8             # sector, count, fill
        .balign 4096
blk_data:       .skip BLK_MAX_SECTORS * SECTOR_SIZE
