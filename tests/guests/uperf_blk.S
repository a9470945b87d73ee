# uperf_blk.S - virtio-blk throughput with the measured loops in user mode
# (CPL3, native speed on the dev hosts; see user.inc).  At CPL0 it
# initialises block device 0 with virtio.inc (VERSION_1, FLUSH when
# offered; one queue of 256 entries, or the largest power of two the
# device allows), then runs each phase at CPL3 with user.inc's engine:
# perf.qd requests in flight (each one 3-descriptor chain: header, data,
# status; a flush has no data descriptor), resubmitted as they complete,
# perf.batch of them published per QueueNotify write, completions polled
# on the used ring.  Phases, in this order, each skipped when its count is 0:
#   randread   4 KiB reads (8 sectors) at random 4 KiB-aligned offsets
#   seqread    128 KiB reads (256 sectors), sequential, wrapping at the end
#   seqwrite   128 KiB writes, sequential, wrapping
#   flush      flushes (after one untimed flush that writes back what the
#              writes left dirty); skipped when FLUSH is not offered
# Every slot has its own header, status byte and 128 KiB data buffer, all
# touched once before the first phase.
#
# Command line (numbers decimal or 0x-hex):
#   perf.qd=<n>        requests in flight, 1..85 and <= queue size / 3 (default 64)
#   perf.batch=<n>     requests per notify, 1..qd (default qd)
#   perf.randread=<n>  perf.seqread=<n>  perf.seqwrite=<n>  perf.flush=<n>
#                      requests per phase (defaults 20000, 2000, 2000, 2000)
#   perf.seed=<n>      random offsets' xorshift64 seed (default 1)
#   blk.dev=<k>        which block device (default 0)
# Output:
#   uperf-blk-start: queue=256 qd=64 batch=64 capacity=131072 flush=1
#   uperf-phase: randread          # just before the phase starts
#   uperf-done: randread <requests> <bytes> <tsc ticks> <notifies> 0
#   ...                            # the same for seqread, seqwrite, flush
#   uperf-skip: flush              # instead, when FLUSH was not negotiated
#   uperf-blk-done
# then halts with interrupts off (the harness ends the VM).  The ticks are
# the time-stamp counter from just before the first request to the last
# completion.  Errors as in virtio.inc and user.inc, and
#   blk-error: bad perf.qd | bad perf.batch | disk too small
#   blk-error: <phase> failed: code 3      # a status byte that is not 0
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

        .equ VIRTIO_ID_BLOCK,   2
        .equ VIRTIO_BLK_F_FLUSH, 9
        .equ BLK_T_IN,          0
        .equ BLK_T_OUT,         1
        .equ BLK_T_FLUSH,       4
        .equ BLK_E_STATUS,      3        # uq_done error: status byte not 0
        .equ MAX_QD,            85       # 3 descriptors a request, 256 entries
        .equ RAND_SECTORS,      8        # 4 KiB
        .equ SEQ_SECTORS,       256      # 128 KiB
        .equ SLOT_DATA,         SEQ_SECTORS * 512
        .equ MODE_RANDOM,       0
        .equ MODE_SEQ,          1

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
        mov rdi, VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH)
        mov esi, 1
        call vio_init
        bt rdx, VIRTIO_BLK_F_FLUSH
        setc al
        movzx eax, al
        mov [rip + blk_flush_ok], rax
        lea rdi, [rip + blk_capacity]
        xor esi, esi
        mov ecx, 8
        mov edx, 4
        call vio_config_read
        mov rax, [rip + blk_capacity]
        cmp rax, SEQ_SECTORS
        jae 2f
        VIO_FAIL "disk too small"
2:      shr rax, 3
        mov [rip + blk_blocks], rax     # 4 KiB blocks

        # ---- parameters ----
        lea rsi, [rip + key_qd]
        mov eax, 64
        call vio_param_num
        movzx ecx, word ptr [rip + vio_queues + VQ_NUM]
        mov [rip + blk_queue], rcx
        imul ecx, ecx, 0xaaab           # ecx / 3 for ecx <= 256
        shr ecx, 17
        cmp ecx, MAX_QD
        jbe 3f
        mov ecx, MAX_QD
3:      test rax, rax
        jz 4f
        cmp rax, rcx
        jbe 5f
4:      VIO_FAIL "bad perf.qd"
5:      mov [rip + blk_qd], rax
        lea rsi, [rip + key_batch]
        call vio_param_num              # default: qd (still in rax)
        test rax, rax
        jz 6f
        cmp rax, [rip + blk_qd]
        jbe 7f
6:      VIO_FAIL "bad perf.batch"
7:      mov [rip + blk_batch], rax
        lea rsi, [rip + key_randread]
        mov eax, 20000
        call vio_param_num
        mov [rip + n_randread], rax
        lea rsi, [rip + key_seqread]
        mov eax, 2000
        call vio_param_num
        mov [rip + n_seqread], rax
        lea rsi, [rip + key_seqwrite]
        mov eax, 2000
        call vio_param_num
        mov [rip + n_seqwrite], rax
        lea rsi, [rip + key_flush]
        mov eax, 2000
        call vio_param_num
        mov [rip + n_flush], rax
        lea rsi, [rip + key_seed]
        mov eax, 1
        call vio_param_num
        test rax, rax
        jnz 8f
        inc eax                         # xorshift needs a non-zero state
8:      mov [rip + blk_rand], rax

        # ---- user mode; every page the loops use touched once ----
        call user_setup
        lea rax, [rip + user_touch]
        lea rdi, [rip + vio_queues]
        lea rsi, [rip + vio_queues + VQ_BYTES]
        call user_call
        lea rax, [rip + user_touch]
        lea rdi, [rip + uq_queue]
        lea rsi, [rip + user_stack_top]
        call user_call
        lea rax, [rip + user_touch]
        lea rdi, [rip + blk_hdrs]
        lea rsi, [rip + blk_data_end]
        call user_call

        PRINT "uperf-blk-start: queue="
        mov rax, [rip + blk_queue]
        call put_dec64
        PRINT " qd="
        mov rax, [rip + blk_qd]
        call put_dec64
        PRINT " batch="
        mov rax, [rip + blk_batch]
        call put_dec64
        PRINT " capacity="
        mov rax, [rip + blk_capacity]
        call put_dec64
        PRINT " flush="
        mov rax, [rip + blk_flush_ok]
        call put_dec64
        call newline

        mov rdx, [rip + n_randread]
        mov edi, BLK_T_IN
        mov esi, RAND_SECTORS
        mov ecx, MODE_RANDOM
        lea r8, [rip + name_randread]
        call phase
        mov rdx, [rip + n_seqread]
        mov edi, BLK_T_IN
        mov esi, SEQ_SECTORS
        mov ecx, MODE_SEQ
        lea r8, [rip + name_seqread]
        call phase
        mov rdx, [rip + n_seqwrite]
        mov edi, BLK_T_OUT
        mov esi, SEQ_SECTORS
        mov ecx, MODE_SEQ
        lea r8, [rip + name_seqwrite]
        call phase
        cmp qword ptr [rip + n_flush], 0
        je 9f
        cmp qword ptr [rip + blk_flush_ok], 0
        jne 10f
        PRINT "uperf-skip: flush\n"
        jmp 9f
10:     lea rax, [rip + blk_phase]      # untimed: write back what is dirty
        mov edi, BLK_T_FLUSH
        xor esi, esi
        mov edx, 1
        mov ecx, MODE_SEQ
        call user_call
        lea rsi, [rip + name_flush]
        call uq_check
        mov rdx, [rip + n_flush]
        mov edi, BLK_T_FLUSH
        xor esi, esi
        mov ecx, MODE_SEQ
        lea r8, [rip + name_flush]
        call phase
9:      PRINT "uperf-blk-done\n"
11:     cli
        hlt
        jmp 11b

# phase: (CPL0) RDX = requests (0: skip), EDI = type, ESI = sectors per
# request, ECX = mode, R8 = name.  Announces, runs and reports one phase.
phase:
        test rdx, rdx
        jz 1f
        PRINT "uperf-phase: "
        push rsi
        mov rsi, r8
        call puts
        call newline
        pop rsi
        lea rax, [rip + blk_phase]
        call user_call
        mov rsi, r8
        call uq_check
        call uq_print_result
1:      ret

# ---------------------------------------------------------------------------
# CPL3
# ---------------------------------------------------------------------------

# blk_phase: RDI = type, RSI = sectors per request (0: no data descriptor),
# RDX = requests, RCX = mode.  Builds every slot's chain, runs the engine,
# returns its result.
blk_phase:
        mov [rip + blk_type], rdi
        mov [rip + blk_spr], rsi
        mov [rip + blk_mode], rcx
        mov qword ptr [rip + blk_next], 0
        mov [rip + uq_total], rdx
        mov r12, rdi                    # r12 = type
        mov r13, rsi                    # r13 = sectors
        xor r9d, r9d                    # r9 = slot
        lea rdi, [rip + vio_queues]
1:      cmp r9, [rip + blk_qd]
        jae 3f
        mov r10, r9
        shl r10, 4
        lea rsi, [rip + blk_hdrs]
        add rsi, r10                    # rsi = header
        mov [rsi], r12d                 # type
        mov dword ptr [rsi + 4], 0
        mov qword ptr [rsi + 8], 0
        lea eax, [r9 + r9 * 2]          # eax = 3 * slot: the header
        mov ecx, 16
        mov edx, VIRTQ_DESC_F_NEXT
        lea r8d, [eax + 1]
        test r13, r13
        jnz 2f
        inc r8d                         # a flush: header -> status
2:      call vq_desc
        test r13, r13
        jz 4f
        inc eax                         # data
        mov rsi, r9
        imul rsi, rsi, SLOT_DATA
        lea rcx, [rip + blk_data]
        add rsi, rcx
        mov rcx, r13
        shl ecx, 9
        mov edx, VIRTQ_DESC_F_NEXT
        cmp r12d, BLK_T_IN
        jne 5f
        or edx, VIRTQ_DESC_F_WRITE
5:      lea r8d, [eax + 1]
        call vq_desc
        dec eax
4:      add eax, 2                      # status
        lea rsi, [rip + blk_status]
        lea rsi, [rsi + r9 * 8]
        mov ecx, 1
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        inc r9
        jmp 1b
3:      mov [rip + uq_queue], rdi
        mov rax, [rip + blk_qd]
        mov [rip + uq_qd], rax
        mov qword ptr [rip + uq_stride], 3
        mov rax, [rip + blk_batch]
        mov [rip + uq_batch], rax
        mov qword ptr [rip + uq_rx], 0
        lea rax, [rip + blk_prep]
        mov [rip + uq_prep], rax
        lea rax, [rip + blk_done]
        mov [rip + uq_done], rax
        call uq_run
        USER_RETURN

# blk_prep: RBX = slot.  Its header's sector (random or next sequential),
# its status byte 0xff (not written).
blk_prep:
        cmp qword ptr [rip + blk_mode], MODE_RANDOM
        jne 1f
        mov rax, [rip + blk_rand]       # xorshift64 (13, 7, 17)
        mov rcx, rax
        shl rcx, 13
        xor rax, rcx
        mov rcx, rax
        shr rcx, 7
        xor rax, rcx
        mov rcx, rax
        shl rcx, 17
        xor rax, rcx
        mov [rip + blk_rand], rax
        xor edx, edx
        div qword ptr [rip + blk_blocks]
        lea rax, [rdx * 8]              # the block's first sector
        jmp 3f
1:      mov rax, [rip + blk_next]
        mov rcx, rax
        add rcx, [rip + blk_spr]
        cmp rcx, [rip + blk_capacity]
        jbe 2f
        xor eax, eax                    # wrap at the end of the disk
        mov rcx, [rip + blk_spr]
2:      mov [rip + blk_next], rcx
3:      mov rcx, rbx
        shl rcx, 4
        lea rsi, [rip + blk_hdrs]
        mov [rsi + rcx + 8], rax
        lea rsi, [rip + blk_status]
        mov byte ptr [rsi + rbx * 8], 0xff
        ret

# blk_done: RBX = slot.  RAX = the request's data bytes, or -BLK_E_STATUS.
blk_done:
        lea rsi, [rip + blk_status]
        cmp byte ptr [rsi + rbx * 8], 0
        jne 1f
        mov rax, [rip + blk_spr]
        shl rax, 9
        ret
1:      mov rax, -BLK_E_STATUS
        ret

        .section .rodata
vio_name:       .asciz "blk"
key_dev:        .asciz "blk.dev"
key_qd:         .asciz "perf.qd"
key_batch:      .asciz "perf.batch"
key_randread:   .asciz "perf.randread"
key_seqread:    .asciz "perf.seqread"
key_seqwrite:   .asciz "perf.seqwrite"
key_flush:      .asciz "perf.flush"
key_seed:       .asciz "perf.seed"
name_randread:  .asciz "randread"
name_seqread:   .asciz "seqread"
name_seqwrite:  .asciz "seqwrite"
name_flush:     .asciz "flush"

        .section .bss
        .balign 8
blk_capacity:   .skip 8                 # sectors
blk_blocks:     .skip 8                 # 4 KiB blocks
blk_flush_ok:   .skip 8
blk_queue:      .skip 8                 # queue size in use
blk_qd:         .skip 8
blk_batch:      .skip 8
n_randread:     .skip 8
n_seqread:      .skip 8
n_seqwrite:     .skip 8
n_flush:        .skip 8
blk_rand:       .skip 8                 # xorshift64 state
blk_type:       .skip 8                 # the current phase (CPL3)
blk_spr:        .skip 8
blk_mode:       .skip 8
blk_next:       .skip 8
        .balign 4096
blk_hdrs:       .skip MAX_QD * 16       # {u32 type, u32 0, u64 sector} per slot
blk_status:     .skip MAX_QD * 8        # one status byte per slot, 8 apart
        .balign 4096
blk_data:       .skip MAX_QD * SLOT_DATA
blk_data_end:
