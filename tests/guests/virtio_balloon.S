# virtio_balloon.S - a minimal polling virtio-mmio balloon driver
# (DeviceID 5, virtio v1.2 5.5), driven by the host's target and hint
# command and by one-byte commands on COM1.
#
# Features: VERSION_1, STATS_VQ (1), DEFLATE_ON_OOM (2), FREE_PAGE_HINT (3)
# and PAGE_REPORTING (5), each when offered.  Queues: 0 inflateq,
# 1 deflateq, then statsq, free_page_vq and reporting_vq for the features
# offered, in that order (as Linux numbers them).
#
# Command line (numbers decimal or 0x hex; sizes in MiB):
#   balloon.base=<addr>      first byte of the memory it uses (default 64 MiB)
#   balloon.touch=<n>        MiB it writes, one byte per 4 KiB page (default 32)
#   balloon.report_at=<n>    the free range it reports starts n MiB after the
#   balloon.report=<n>         base and is this long (defaults 16 and 8)
#   balloon.hint_at=<n>      the free range it hints (defaults 24 and 8)
#   balloon.hint=<n>
#   balloon.ram_end=<addr>   the end of RAM, for the hostile case (default 256 MiB)
#   balloon.polls=<n>        main-loop turns before balloon-timeout (default 20000000)
#
# Output:
#   balloon-features: <negotiated features, hex>
#   balloon-queues: <n>
#   balloon-touched: <pages>
#   balloon-ready                        (the stats buffer is posted)
# then, in its main loop:
#   - when num_pages (config +0) differs from what it holds, it inflates
#     pages from the base upward (at most touch's pages) or deflates the
#     last ones, 256 page frame numbers per request, writes actual
#     (config +4) after each, and once it holds the target prints
#     balloon-actual: <pages> zero=<deflated pages whose first byte read 0>
#     (deflated pages are written again: the guest uses them);
#   - when the statsq buffer comes back, it sends it again: minor_faults
#     (tag 3) = buffers sent so far, free_memory (4), total_memory (5);
#   - when free_page_hint_cmd_id (config +8) changes to an id >= 2 it sends
#     [id, the hint range] and [STOP] and prints balloon-hinted: <id>; when
#     it becomes DONE (1), balloon-hint-done;
#   - COM1 bytes:  r  report the report range: balloon-reported: <MiB>
#                  c  count pages of the touched range whose first byte
#                     reads 0: balloon-zero-pages: <n>
#                  x  hostile requests (page frame numbers outside RAM, the
#                     same page twice, a 6-byte list, reports across the
#                     end of RAM, in the MMIO gap and wrapping around), with a
#                     0x5a sentinel in RAM's last page:
#                     balloon-hostile-done: <sentinel byte afterwards, hex>
#                  q  balloon-bye, then reset
# Errors: as in virtio.inc ("balloon-error: ...", "balloon-timeout"), and
# balloon-timeout when the main loop ran out of turns.
        .include "lib.inc"
        .include "virtio.inc"

# vio_init puts queue i in the page vio_queues + i * VQ_BYTES; virtio.inc
# reserves two.  The other three follow here, first in .bss.
        .pushsection .bss
bl_more_queues: .skip 3 * VQ_BYTES
        .popsection
        .if (bl_more_queues - vio_queues) - 2 * VQ_BYTES
        .error "the balloon's queue pages must directly follow virtio.inc's"
        .endif

        .equ VIRTIO_ID_BALLOON, 5
        .equ F_STATS, 1
        .equ F_DEFLATE, 2
        .equ F_HINT, 3
        .equ F_REPORT, 5
        .equ CFG_NUM_PAGES, VIRTIO_MMIO_CONFIG + 0
        .equ CFG_ACTUAL, VIRTIO_MMIO_CONFIG + 4
        .equ CFG_HINT_CMD, VIRTIO_MMIO_CONFIG + 8
        .equ PFNS_MAX, 256
        .equ STATS_LEN, 30              # three packed 10-byte entries

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup
        mov edi, VIRTIO_ID_BALLOON
        lea rsi, [rip + key_dev]
        call vio_select
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax                    # rbx = device base, for good
        mov dword ptr [rbx + VIRTIO_MMIO_DEV_FEATURES_SEL], 0
        mov r12d, [rbx + VIRTIO_MMIO_DEV_FEATURES]
        mov esi, 2                      # queues: inflate, deflate, ...
        lea rdi, [rip + stats_q]
        mov ecx, F_STATS
        call take_queue
        lea rdi, [rip + hint_q]
        mov ecx, F_HINT
        call take_queue
        lea rdi, [rip + report_q]
        mov ecx, F_REPORT
        call take_queue
        mov rdi, VIRTIO_F_VERSION_1 | 1 << F_STATS | 1 << F_DEFLATE | 1 << F_HINT | 1 << F_REPORT
        call vio_init
        PRINT "balloon-features: "
        mov rax, rdx
        call put_hex64
        call newline
        PRINT "balloon-queues: "
        mov eax, esi
        call put_dec64
        call newline

        lea rsi, [rip + key_base]
        mov eax, 0x4000000
        call vio_param_num
        mov [rip + base], rax
        lea rsi, [rip + key_touch]
        mov eax, 32
        call vio_param_num
        shl rax, 8                      # MiB -> pages
        mov [rip + pages], rax
        lea rsi, [rip + key_report_at]
        mov eax, 16
        call range_param                # rax = address
        mov [rip + report_addr], rax
        lea rsi, [rip + key_report]
        mov eax, 8
        call vio_param_num
        shl rax, 20
        mov [rip + report_len], rax
        lea rsi, [rip + key_hint_at]
        mov eax, 24
        call range_param
        mov [rip + hint_addr], rax
        lea rsi, [rip + key_hint]
        mov eax, 8
        call vio_param_num
        shl rax, 20
        mov [rip + hint_len], rax
        lea rsi, [rip + key_ram_end]
        mov eax, 0x10000000
        call vio_param_num
        mov [rip + ram_end], rax
        lea rsi, [rip + key_polls]
        mov eax, 20000000
        call vio_param_num
        mov r13, rax                    # r13 = main-loop turns left

        # Touch every page of the range.
        mov rdi, [rip + base]
        mov rcx, [rip + pages]
2:      test rcx, rcx
        jz 3f
        mov byte ptr [rdi], 0xa5
        add rdi, 4096
        dec rcx
        jmp 2b
3:      PRINT "balloon-touched: "
        mov rax, [rip + pages]
        call put_dec64
        call newline
        cmp dword ptr [rip + stats_q], -1
        je 4f
        call send_stats
4:      PRINT "balloon-ready\n"

main_loop:
        dec r13
        jnz 1f
        jmp vio_timeout
1:      mov eax, [rbx + CFG_NUM_PAGES]
        cmp eax, [rip + actual]
        je 2f
        call adjust
2:      cmp dword ptr [rip + hint_q], -1
        je 3f
        mov eax, [rbx + CFG_HINT_CMD]
        cmp eax, [rip + last_cmd]
        je 3f
        call hint_cmd
3:      cmp dword ptr [rip + stats_q], -1
        je 4f
        mov edi, [rip + stats_q]
        call queue_page
        movzx eax, word ptr [rdi + VQ_USED + 2]
        cmp ax, [rdi + VQ_LAST_USED]
        je 4f
        mov ecx, 1
        call vq_wait                    # consume it
        call send_stats
4:      mov dx, COM1_LSR
        in al, dx
        test al, LSR_DR
        jz main_loop
        mov dx, COM1_DATA
        in al, dx
        cmp al, 'r'
        jne 5f
        call report
        jmp main_loop
5:      cmp al, 'c'
        jne 6f
        call count_zero
        jmp main_loop
6:      cmp al, 'x'
        jne 7f
        call hostile
        jmp main_loop
7:      cmp al, 'q'
        jne main_loop
        PRINT "balloon-bye\n"
        jmp reset

# take_queue: R12D = offered features, ECX = a feature bit, RDI = where its
# queue index goes, ESI = the next queue index.  Stores ESI (and takes it)
# when the bit is offered, -1 otherwise.
take_queue:
        mov dword ptr [rdi], -1
        bt r12d, ecx
        jnc 1f
        mov [rdi], esi
        inc esi
1:      ret

# range_param: RSI = key of an offset in MiB from the base, EAX = default.
# Returns RAX = base + offset.
range_param:
        call vio_param_num
        shl rax, 20
        add rax, [rip + base]
        ret

# queue_page: EDI = queue index.  Returns RDI = its page.
queue_page:
        shl edi, 12                     # VQ_BYTES
        lea rax, [rip + vio_queues]
        add rdi, rax
        ret

# send1: EDI = queue index, RSI = buffer, ECX = length, EDX = flags.  Sends
# it as descriptor 0, notifies and waits for it.
send1:
        push rax
        push rdi
        push r8
        call queue_page
        xor eax, eax
        xor r8d, r8d
        call vq_desc
        push rsi
        xor esi, esi
        call vq_push
        pop rsi
        call vq_notify
        call wait_used
        pop r8
        pop rdi
        pop rax
        ret

# wait_used: RDI = queue page.  Waits for one used element (or times out).
wait_used:
        push rax
        push rcx
        push rdx
        mov ecx, VIO_POLLS
        call vq_wait
        jnc 1f
        jmp vio_timeout
1:      pop rdx
        pop rcx
        pop rax
        ret

# send_stats: fills the stats buffer and posts it on statsq (the device
# holds it until its next poll).
send_stats:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        inc qword ptr [rip + stats_sent]
        lea rdi, [rip + stats_buf]
        mov word ptr [rdi], 3           # minor_faults: buffers sent
        mov rax, [rip + stats_sent]
        mov [rdi + 2], rax
        mov word ptr [rdi + 10], 4      # free_memory
        mov rax, [rip + pages]
        mov ecx, [rip + actual]
        sub rax, rcx
        shl rax, 12
        mov [rdi + 12], rax
        mov word ptr [rdi + 20], 5      # total_memory
        mov rax, [rip + pages]
        shl rax, 12
        mov [rdi + 22], rax
        mov edi, [rip + stats_q]
        call queue_page
        xor eax, eax
        lea rsi, [rip + stats_buf]
        mov ecx, STATS_LEN
        xor edx, edx
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        call vq_notify
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# adjust: EAX = the target.  Inflates or deflates until the balloon holds
# it (at most the touched pages), then prints balloon-actual.
adjust:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        push r9
        push r10
        mov r8d, eax
        cmp r8, [rip + pages]
        jbe 1f
        mov r8, [rip + pages]           # r8 = the target we can hold
1:      xor r10d, r10d                  # r10 = deflated pages that read 0
.Ladj:
        mov eax, [rip + actual]
        cmp r8d, eax
        je .Ladj_done
        jb .Ldeflate
        mov ecx, r8d                    # inflate min(256, target - actual)
        sub ecx, eax
        cmp ecx, PFNS_MAX
        jbe 2f
        mov ecx, PFNS_MAX
2:      mov r9d, ecx
        mov rdx, [rip + base]
        shr rdx, 12
        add edx, eax                    # the first pfn
        lea rdi, [rip + pfns]
        xor esi, esi
3:      mov [rdi + rsi * 4], edx
        inc edx
        inc esi
        cmp esi, r9d
        jb 3b
        mov rsi, rdi
        mov ecx, r9d
        shl ecx, 2
        xor edx, edx
        xor edi, edi                    # inflateq
        call send1
        add [rip + actual], r9d
        jmp .Ladj_report
.Ldeflate:
        mov ecx, eax                    # deflate min(256, actual - target)
        sub ecx, r8d
        cmp ecx, PFNS_MAX
        jbe 4f
        mov ecx, PFNS_MAX
4:      mov r9d, ecx
        mov rdx, [rip + base]
        shr rdx, 12
        add edx, eax                    # one past the last page held
        lea rdi, [rip + pfns]
        xor esi, esi
5:      dec edx
        mov [rdi + rsi * 4], edx
        inc esi
        cmp esi, r9d
        jb 5b
        mov rsi, rdi
        mov ecx, r9d
        shl ecx, 2
        xor edx, edx
        mov edi, 1                      # deflateq
        call send1
        sub [rip + actual], r9d
        # The pages are the guest's again: see what they hold, use them.
        lea rsi, [rip + pfns]
        xor ecx, ecx
6:      mov eax, [rsi + rcx * 4]
        shl rax, 12
        cmp byte ptr [rax], 0
        jne 7f
        inc r10d
7:      mov byte ptr [rax], 0xa5
        inc ecx
        cmp ecx, r9d
        jb 6b
.Ladj_report:
        mov eax, [rip + actual]
        mov [rbx + CFG_ACTUAL], eax
        jmp .Ladj
.Ladj_done:
        PRINT "balloon-actual: "
        mov eax, [rip + actual]
        call put_dec64
        PRINT " zero="
        mov eax, r10d
        call put_dec64
        call newline
        # A target above what it can hold: not looked at again until it
        # changes.
        pop r10
        pop r9
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# hint_cmd: EAX = the new free_page_hint_cmd_id.
hint_cmd:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        mov [rip + last_cmd], eax
        cmp eax, 1
        jne 1f
        PRINT "balloon-hint-done\n"
        jmp 9f
1:      jb 9f                           # STOP from the host: nothing to do
        mov [rip + cmd_buf], eax
        mov edi, [rip + hint_q]
        call queue_page
        xor eax, eax                    # [id] -> [range]
        lea rsi, [rip + cmd_buf]
        mov ecx, 4
        mov edx, VIRTQ_DESC_F_NEXT
        mov r8d, 1
        call vq_desc
        mov eax, 1
        mov rsi, [rip + hint_addr]
        mov ecx, [rip + hint_len]
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        mov eax, 2                      # [STOP]
        mov dword ptr [rip + stop_buf], 0
        lea rsi, [rip + stop_buf]
        mov ecx, 4
        xor edx, edx
        call vq_desc
        mov esi, 2
        call vq_push
        call vq_notify
        call wait_used
        call wait_used
        PRINT "balloon-hinted: "
        mov eax, [rip + cmd_buf]
        call put_dec64
        call newline
9:      pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

# report: reports the report range as free (reporting_vq).
report:
        push rcx
        push rdx
        push rsi
        push rdi
        mov edi, [rip + report_q]
        cmp edi, -1
        jne 1f
        VIO_FAIL "no reporting queue"
1:      mov rsi, [rip + report_addr]
        mov ecx, [rip + report_len]
        mov edx, VIRTQ_DESC_F_WRITE
        call send1
        PRINT "balloon-reported: "
        mov rax, [rip + report_len]
        shr rax, 20
        call put_dec64
        call newline
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        ret

# count_zero: balloon-zero-pages: pages of the touched range whose first
# byte reads 0.
count_zero:
        push rax
        push rcx
        push rdi
        mov rdi, [rip + base]
        mov rcx, [rip + pages]
        xor eax, eax
1:      test rcx, rcx
        jz 3f
        cmp byte ptr [rdi], 0
        jne 2f
        inc rax
2:      add rdi, 4096
        dec rcx
        jmp 1b
3:      PRINT "balloon-zero-pages: "
        call put_dec64
        call newline
        pop rdi
        pop rcx
        pop rax
        ret

# hostile: requests no driver should send (see the header).
hostile:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        mov rax, [rip + ram_end]
        mov byte ptr [rax - 4096], 0x5a
        lea rdi, [rip + pfns]
        mov dword ptr [rdi], 0xd0000    # the MMIO gap
        mov dword ptr [rdi + 4], 0xfffff
        mov dword ptr [rdi + 8], 0xffffffff
        mov rax, [rip + base]
        shr rax, 12
        mov [rdi + 12], eax             # the base page, twice
        mov [rdi + 16], eax
        mov rsi, rdi
        mov ecx, 20
        xor edx, edx
        xor edi, edi
        call send1
        add rsi, 12                     # the base page once more
        mov ecx, 4
        call send1
        mov ecx, 6                      # not a whole number of pfns
        call send1
        mov edi, [rip + report_q]
        cmp edi, -1
        je 1f
        call queue_page
        xor eax, eax                    # across the end of RAM -> in the gap
        mov rsi, [rip + ram_end]
        sub rsi, 4096
        mov ecx, 0x2000
        mov edx, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT
        mov r8d, 1
        call vq_desc
        mov eax, 1
        mov esi, 0xd0000000
        mov ecx, 0x1000
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        xor esi, esi
        call vq_push
        mov eax, 2                      # wrapping around the address space
        mov rsi, 0xfffffffffffff000
        mov ecx, 0x2000
        call vq_desc
        mov esi, 2
        call vq_push
        call vq_notify
        call wait_used
        call wait_used
1:      PRINT "balloon-hostile-done: "
        mov rax, [rip + ram_end]
        movzx eax, byte ptr [rax - 4096]
        call put_hex64
        call newline
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        ret

        .section .rodata
vio_name:       .asciz "balloon"
key_dev:        .asciz "balloon.dev"
key_base:       .asciz "balloon.base"
key_touch:      .asciz "balloon.touch"
key_report_at:  .asciz "balloon.report_at"
key_report:     .asciz "balloon.report"
key_hint_at:    .asciz "balloon.hint_at"
key_hint:       .asciz "balloon.hint"
key_ram_end:    .asciz "balloon.ram_end"
key_polls:      .asciz "balloon.polls"

        .section .bss
        .balign 8
base:           .quad 0
pages:          .quad 0
report_addr:    .quad 0
report_len:     .quad 0
hint_addr:      .quad 0
hint_len:       .quad 0
ram_end:        .quad 0
stats_sent:     .quad 0
actual:         .long 0
last_cmd:       .long 0
stats_q:        .long 0
hint_q:         .long 0
report_q:       .long 0
cmd_buf:        .long 0
stop_buf:       .long 0
        .balign 16
stats_buf:      .skip 32
pfns:           .skip PFNS_MAX * 4
